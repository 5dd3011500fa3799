package frontdoor

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Protocols a call of the user's services arrives by, as an Observer sees them.
const (
	ProtocolGRPC    = "grpc"     // gRPC (HTTP/2), also gRPC with the JSON codec through the front door
	ProtocolGRPCWeb = "grpc-web" // gRPC-Web, translated by the HTTP front door
	ProtocolConnect = "connect"  // the Connect protocol, translated by the HTTP front door
	ProtocolHTTP    = "http"     // REST/JSON: google.api.http rules and the default POST route
)

// Observer is an optional interface of a Dispatcher: the ingress tells it of every call of the
// user's services, once, when the call ends — the protocol it arrived by and the gRPC code it
// ended with. Calls the HTTP front door answers itself, before any reaches the ingress (no
// route, an unsupported media type, a body over the limit, malformed JSON), are told too when
// the front door is wrapped with ObserveHTTP.
type Observer interface {
	ObserveCall(protocol string, code codes.Code)
}

// observeCall tells the dispatcher, if it observes, how a call the ingress served ended.
func (in *Ingress) observeCall(ctx context.Context, err error) {
	o, ok := in.d.(Observer)
	if !ok {
		return
	}
	protocol := ProtocolGRPC
	if c, ok := ctx.Value(httpCallKey{}).(*httpCall); ok {
		c.reached.Store(true)
		protocol = c.protocol
	}
	o.ObserveCall(protocol, status.Code(err))
}

// ObserveHTTP wraps the HTTP front door (NewHTTPHandler) so the ingress learns the protocol of
// every call it translates, and so calls it answers without reaching the ingress are observed
// too, with the code their HTTP status stands for. Without an observing Dispatcher it returns h.
func (in *Ingress) ObserveHTTP(h http.Handler) http.Handler {
	o, ok := in.d.(Observer)
	if !ok {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isNativeGRPC(r) {
			h.ServeHTTP(w, r) // the ingress sees it as gRPC, like a call on a gRPC connection
			return
		}
		c := &httpCall{protocol: httpProtocol(r)}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), httpCallKey{}, c)))
		if !c.reached.Load() {
			o.ObserveCall(c.protocol, sw.code())
		}
	})
}

// httpCallKey is the context key of an *httpCall.
type httpCallKey struct{}

// httpCall follows one request through the HTTP front door: its protocol, and whether the
// ingress saw it (then the ingress observed it).
type httpCall struct {
	protocol string
	reached  atomic.Bool
}

// httpProtocol classifies a request the HTTP front door translates, as vanguard does.
func httpProtocol(r *http.Request) string {
	if isRESTRequest(r) {
		return ProtocolHTTP
	}
	ct := mediaType(r.Header.Get("Content-Type"))
	switch {
	case strings.HasPrefix(ct, "application/grpc-web"):
		return ProtocolGRPCWeb
	case strings.HasPrefix(ct, "application/grpc"):
		return ProtocolGRPC
	}
	return ProtocolConnect
}

// statusWriter notes the HTTP status of an answer. It keeps Flush working and unwraps for
// http.ResponseController (read deadlines, flushes).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// code is the gRPC code of an answer the front door gave itself: its Grpc-Status header
// (gRPC-Web), else what its HTTP status stands for (the front door's error answers follow
// HTTPStatusFromCode).
func (w *statusWriter) code() codes.Code {
	if v := w.Header().Get("Grpc-Status"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= int(codes.Unauthenticated) {
			return codes.Code(n)
		}
	}
	switch s := w.status; {
	case s == 0, s >= 200 && s < 300:
		return codes.OK
	case s == http.StatusBadRequest, s == http.StatusUnsupportedMediaType:
		return codes.InvalidArgument
	case s == http.StatusUnauthorized:
		return codes.Unauthenticated
	case s == http.StatusForbidden:
		return codes.PermissionDenied
	case s == http.StatusNotFound, s == http.StatusMethodNotAllowed, s == http.StatusNotImplemented:
		return codes.Unimplemented
	case s == http.StatusRequestTimeout, s == http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case s == http.StatusConflict:
		return codes.Aborted
	case s == http.StatusRequestEntityTooLarge, s == http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case s == 499:
		return codes.Canceled
	case s == http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Internal
}
