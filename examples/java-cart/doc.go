// Package javacart tests kstate against a user function written on Cloudstate's own Java support
// library (io.cloudstate:cloudstate-java-support 0.5.2): the Maven project in this folder. The
// test builds it with scripts/java-uf.sh, runs it as a JVM, runs `kstate dev --user-function` in
// front of it, and drives the cart through kstate over gRPC and HTTP/JSON, across a restart of
// kstate and a restart of the user function.
//
// There is no Go code here besides the test: the client builds its messages from the descriptors
// the user function itself returns in discovery (dynamicpb), so the .proto files exist only once,
// for the Java build.
package javacart
