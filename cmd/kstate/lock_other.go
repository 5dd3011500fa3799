//go:build !unix

package main

// lockDataDir is a no-op where flock is not available: the embedded broker's data dir is not
// protected against a second `kstate dev`.
func lockDataDir(string) (func(), error) { return func() {}, nil }
