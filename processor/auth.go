package processor

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// AuthCall is what an authentication hook knows about one call on the public port.
type AuthCall struct {
	// Method is the full gRPC method name, "/package.Service/Method", whatever protocol the
	// client spoke (an HTTP/JSON route names the method it is bound to).
	Method string
	// Header holds the request's gRPC metadata, or its HTTP headers for HTTP/JSON, gRPC-Web and
	// Connect clients, with lower-case keys (Header.Get is case-insensitive). Treat it as read-only.
	Header metadata.MD
	// Peer is the client's address, nil when unknown.
	Peer net.Addr
	// TLS is the connection's TLS state, nil on a plaintext port.
	TLS *tls.ConnectionState
	// VerifiedChain is the client's certificate chain, leaf first and ending at a CA of the
	// port's client CAs, when the client presented a certificate that was verified (see
	// TLSConfig.ClientCAFile); nil otherwise.
	VerifiedChain []*x509.Certificate
}

// AuthFunc decides whether a call on the public port may run: nil lets it run. An error that is
// a gRPC status (status.Error, or any error with a GRPCStatus method) reaches the client with its
// code, e.g. codes.PermissionDenied (HTTP 403); any other error becomes codes.Unauthenticated
// (HTTP 401) with the error's text as message. It runs once per call (a stream is authorized
// once, when it opens), before the ingress reads the request message (an HTTP/JSON body has been
// buffered and transcoded by then, within the front door's size and time limits), on the call's
// goroutine, concurrently with other calls; ctx is the call's context.
type AuthFunc func(ctx context.Context, call AuthCall) error

// WithAuth installs an authentication hook on the public port. It runs for every call of the
// user's services — unary and streaming, over gRPC, HTTP/JSON, gRPC-Web and Connect alike, since
// the front door serves all of them through the node's gRPC server — and for server reflection,
// which describes those services (a hook may let it through by AuthCall.Method). Health checks
// (grpc.health.v1.Health) never call it, so load balancers and Kubernetes probes need no
// credentials. Requests the HTTP front door answers before they name a method (no route for the
// path, an unsupported media type, a body over the size limit) are answered without it. The peer
// port (node-to-node forwarding) is not covered: secure it with PeerTLSConfig.
//
// Several WithAuth options run in the order given, and every one must accept the call.
func WithAuth(fn AuthFunc) Option {
	return func(n *Node) {
		if fn != nil {
			n.auth = append(n.auth, fn)
		}
	}
}

// healthService is the method prefix that bypasses the hook.
const healthService = "/grpc.health.v1.Health/"

// authServerOptions returns the interceptors that run the node's hooks, none without hooks.
func (n *Node) authServerOptions() []grpc.ServerOption {
	if len(n.auth) == 0 {
		return nil
	}
	hooks := n.auth
	check := func(ctx context.Context, method string) error {
		if strings.HasPrefix(method, healthService) {
			return nil
		}
		call := newAuthCall(ctx, method)
		for _, h := range hooks {
			if err := h(ctx, call); err != nil {
				return authStatus(err)
			}
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		// The user's services are all served by the ingress's unknown-service handler, a
		// streaming handler, so this one covers every call of theirs (and reflection).
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

// newAuthCall collects what the hook sees of a call from its context.
func newAuthCall(ctx context.Context, method string) AuthCall {
	call := AuthCall{Method: method}
	call.Header, _ = metadata.FromIncomingContext(ctx)
	if p, ok := peer.FromContext(ctx); ok {
		call.Peer = p.Addr
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			st := ti.State
			call.TLS = &st
			if len(st.VerifiedChains) > 0 {
				call.VerifiedChain = st.VerifiedChains[0]
			}
		}
	}
	return call
}

// authStatus is the status a hook's error reaches the client as.
func authStatus(err error) error {
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Unauthenticated, err.Error())
}

// BearerTokens returns an AuthFunc that accepts a call whose "authorization" header is
// "Bearer <token>" (the scheme in any case) for one of tokens, and rejects any other call with
// UNAUTHENTICATED (HTTP 401): no header, another scheme, or an unknown token. Tokens are compared
// in constant time (as SHA-256 digests, so neither a token's content nor its length leaks through
// timing). Empty tokens are ignored; with none left, every call is rejected.
func BearerTokens(tokens ...string) AuthFunc {
	var digests [][sha256.Size]byte
	for _, t := range tokens {
		if t != "" {
			digests = append(digests, sha256.Sum256([]byte(t)))
		}
	}
	return func(_ context.Context, call AuthCall) error {
		vs := call.Header.Get("authorization")
		if len(vs) == 0 {
			return status.Error(codes.Unauthenticated, "missing authorization header: want \"authorization: Bearer <token>\"")
		}
		scheme, token, ok := strings.Cut(strings.TrimSpace(vs[0]), " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			return status.Error(codes.Unauthenticated, "the authorization header is not a bearer token: want \"authorization: Bearer <token>\"")
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		match := 0
		for i := range digests {
			match |= subtle.ConstantTimeCompare(got[:], digests[i][:])
		}
		if match != 1 {
			return status.Error(codes.Unauthenticated, "invalid bearer token")
		}
		return nil
	}
}
