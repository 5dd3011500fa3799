package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"connectrpc.com/vanguard"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kstatehq/kstate/internal/logging"
	"github.com/kstatehq/kstate/processor/internal/catalog"
)

// HTTPMaxMessageBytes caps one message the HTTP front door buffers while transcoding, request or
// response (vanguard buffers whole messages), and the body of a REST request: a larger one is
// answered 413 with RESOURCE_EXHAUSTED as soon as that is known, without reading the rest. It is
// the larger of the ingress's default receive and send limits; the gRPC server behind the front
// door enforces its own limits on top (a request message over its receive limit is
// RESOURCE_EXHAUSTED, HTTP 429).
const HTTPMaxMessageBytes = DefaultMaxSendBytes

// NewHTTPHandler returns kstate's front door: one http.Handler that serves, on the same port,
//
//   - gRPC (HTTP/2, content-type application/grpc or application/grpc+proto), passed unchanged to
//     grpcServer (a *grpc.Server's ServeHTTP, built with the Ingress's ServerOptions), so
//     reflection, health and everything else registered on it keeps working;
//   - every user service of cat as REST/JSON, transcoded to gRPC by connectrpc.com/vanguard and
//     sent to the same grpcServer, at the routes of each method's google.api.http rules (path
//     templates, body, query parameters, response_body, additional_bindings) and at a default
//     route for every method, POST /<package.Service>/<Method> with the whole request message as
//     the JSON body (Cloudstate's default route; skipped when a rule of the method already posts to
//     that path);
//   - the same services over gRPC-Web, the Connect protocol and gRPC with the JSON codec
//     (application/grpc+json), which vanguard translates to gRPC as well.
//
// JSON follows protojson: field names in lowerCamelCase on output (the proto name is accepted on
// input), 64-bit integers as strings, unpopulated fields emitted. A REST request body is JSON
// (application/json in any case, with no charset or charset=utf-8; anything else is 415). A
// malformed request (bad JSON, unknown fields or query parameters, a value of the wrong type) is
// INVALID_ARGUMENT, HTTP 400, and so is a query parameter or body field that gives a field bound
// by the URL path a different value (GET /carts/alice?user_id=bob on /carts/{user_id}); the same
// value repeated is accepted. A failed call answers with the HTTP status the gRPC code maps to
// (HTTPStatusFromCode; a command failure is gRPC UNKNOWN, so HTTP 500). Every error answer to a
// REST request, routing errors included (404 no route, 405 wrong method, 415), has Content-Type
// application/json and a google.rpc.Status body, e.g. {"code":2,"message":"boom","details":[]}.
//
// A request body that carries one message (REST, Connect unary) must arrive within 30 s of the
// request's headers: a body trickled more slowly is answered 408 DEADLINE_EXCEEDED (REST) and the
// connection closed. The deadline ends with the body, so a server-streamed response (NDJSON, SSE)
// runs for as long as it needs; streaming protocols (gRPC, gRPC-Web, Connect streams) have no body
// deadline.
//
// Vanguard serves server-streaming methods over REST only for google.api.HttpBody responses, so
// the front door streams them itself: the request is routed and decoded by vanguard (the same rules,
// path variables, query parameters and body), the gRPC call runs against grpcServer in-process, and
// each reply is written as one JSON line (ContentTypeNDJSON), or as a server-sent event "data:" line
// when the request's Accept header names ContentTypeSSE. A failure before the first reply gets the
// HTTP error above; a failure later is a last line {"error":{...google.rpc.Status...}} (NDJSON) or
// an "event: error" event (SSE), and the HTTP trailers Grpc-Status and Grpc-Message carry the
// outcome in both cases. Client- and bidi-streaming methods are not served over REST (HTTP 415);
// they are over gRPC, gRPC-Web and Connect.
//
// The descriptors vanguard sees are a private copy of cat's, re-parsed so that the google.api.http
// option is read whether the user function's descriptors carried it as a typed extension or as
// unknown fields; messages are dynamic types of that copy, never the global registry's. A rule that
// vanguard rejects (a path variable naming no field, two methods on one route) makes
// NewHTTPHandler fail with the reason.
func NewHTTPHandler(cat *catalog.Catalog, grpcServer http.Handler, log hclog.Logger) (http.Handler, error) {
	if cat == nil {
		return nil, errors.New("http: nil catalog")
	}
	if grpcServer == nil {
		return nil, errors.New("http: nil gRPC handler")
	}
	log = logging.OrDiscard(log).Named("http")

	served := make(map[protoreflect.FullName]bool, len(cat.Services()))
	for _, s := range cat.Services() {
		served[s.Desc.FullName()] = true
	}
	files, err := transcodingFiles(cat.Files(), served)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	res := httpResolver{dynamicpb.NewTypes(files), protoregistry.GlobalTypes}
	jsonCodec := vanguard.WithCodec(func(r vanguard.TypeResolver) vanguard.Codec {
		return restJSONCodec{&vanguard.JSONCodec{
			MarshalOptions:   protojson.MarshalOptions{Resolver: r, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{Resolver: r},
		}}
	})

	h := &httpHandler{
		grpc:        grpcServer,
		log:         log,
		res:         res,
		marshal:     protojson.MarshalOptions{Resolver: res, EmitUnpopulated: true},
		targets:     make(map[string]*streamTarget),
		maxBody:     HTTPMaxMessageBytes,
		bodyTimeout: httpBodyTimeout,
	}

	var services []*vanguard.Service
	for _, s := range cat.Services() {
		sd, err := serviceIn(files, s.Desc.FullName())
		if err != nil {
			return nil, fmt.Errorf("http: %w", err)
		}
		services = append(services, vanguard.NewServiceWithSchema(sd, http.HandlerFunc(h.grpcTarget), vanguard.WithTypeResolver(res)))
	}
	h.main, err = vanguard.NewTranscoder(services, jsonCodec, vanguard.WithDefaultServiceOptions(
		vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
		vanguard.WithTargetCodecs(vanguard.CodecProto),
		vanguard.WithNoTargetCompression(),
		vanguard.WithMaxMessageBufferBytes(HTTPMaxMessageBytes),
	))
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	if h.routes, err = buildRESTRoutes(files, served); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}

	twins, err := h.streamTwins(cat, files)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	if len(twins) > 0 {
		var tw []*vanguard.Service
		for _, sd := range twins {
			tw = append(tw, vanguard.NewServiceWithSchema(sd, http.HandlerFunc(h.capture), vanguard.WithTypeResolver(res)))
		}
		h.streams, err = vanguard.NewTranscoder(tw, jsonCodec,
			vanguard.WithUnknownHandler(http.HandlerFunc(markNotFound)),
			vanguard.WithDefaultServiceOptions(
				vanguard.WithTargetProtocols(vanguard.ProtocolConnect),
				vanguard.WithTargetCodecs(vanguard.CodecProto),
				vanguard.WithNoTargetCompression(),
				vanguard.WithMaxMessageBufferBytes(HTTPMaxMessageBytes),
			))
		if err != nil {
			return nil, fmt.Errorf("http: streaming routes: %w", err)
		}
	}
	log.Debug("HTTP/JSON front door ready", "services", len(services), "streaming_methods", len(h.targets))
	return h, nil
}

// ServeMux serves h on lis in a new goroutine, speaking HTTP/1.1 and HTTP/2 without TLS (h2c with
// prior knowledge, which is what gRPC clients use), so gRPC and HTTP/JSON clients share one port.
// When lis yields *tls.Conn whose handshake is done (NewTLSSplitListener), it speaks HTTP/2 or
// HTTP/1.1 over TLS as the client chose by ALPN.
// It uses net/http's own unencrypted HTTP/2 (golang.org/x/net/http2/h2c is deprecated in favour of
// it, and its hijacked connections escape Shutdown). The goroutine ends when the returned server is
// shut down: Shutdown(ctx) stops accepting, sends HTTP/2 GOAWAY, and waits for running requests
// (streams included) until ctx is done; Close ends everything at once. HTTP/2 connections accept
// DefaultMaxConcurrentStreams concurrent streams.
//
// A client has 10 s to send a request's headers, which may not exceed 64 KiB (net/http answers 431
// beyond), and a keep-alive connection idle for 2 minutes is closed. There is deliberately no
// whole-request ReadTimeout or WriteTimeout: they would cut long-lived streams. The front door
// bounds request bodies itself instead (see NewHTTPHandler).
func ServeMux(lis net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		Protocols:         new(http.Protocols),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: DefaultMaxConcurrentStreams},
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true) // over TLS, by ALPN; unused on a plaintext listener
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() {
		// Serve returns http.ErrServerClosed after Shutdown or Close; any other error (the listener
		// failed) also ends serving, and Shutdown still returns cleanly afterwards.
		_ = srv.Serve(lis)
	}()
	return srv
}

// httpHandler is the http.Handler NewHTTPHandler returns.
type httpHandler struct {
	grpc    http.Handler
	main    *vanguard.Transcoder
	streams *vanguard.Transcoder // routes and decodes REST calls of server-streaming methods; nil if none
	targets map[string]*streamTarget
	res     httpResolver
	marshal protojson.MarshalOptions
	log     hclog.Logger

	routes *restRoutes

	maxBody     int64         // request bodies of REST calls; HTTPMaxMessageBytes
	bodyTimeout time.Duration // httpBodyTimeout
}

// ServeHTTP dispatches one request: native gRPC to the gRPC server unchanged; every other request
// gets a JSON Content-Type in canonical form and, when it carries one message in its body (not a
// stream of them), the body read deadline. A REST request is then checked (size limit, streaming
// kind, path-bound fields; see serveREST); the others go to vanguard.
func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isNativeGRPC(r) {
		h.grpc.ServeHTTP(w, r)
		return
	}
	ct := r.Header.Get("Content-Type")
	jsonOK := canonicalizeJSON(r.Header)
	if !isRESTRequest(r) {
		if !streamingProtocol(r) {
			h.guardBody(w, r, 0)
		}
		h.main.ServeHTTP(w, r)
		return
	}
	req := &restRequest{method: r.Method, path: r.URL.Path, contentType: ct, limit: h.maxBody, timeout: h.bodyTimeout}
	if !jsonOK {
		sendRESTStatus(w, http.StatusUnsupportedMediaType, codes.InvalidArgument, fmt.Sprintf("content type %q is not supported: JSON is UTF-8 (RFC 8259)", ct))
		return
	}
	h.serveREST(w, r, req)
}

// serveREST serves a REST request. Before vanguard sees it, the front door
//
//   - answers 413 to a body declared larger than h.maxBody, and limits the body to that (413 when
//     it is passed);
//   - answers 415 to a client- or bidi-streaming method, which REST does not serve, and 400 when a
//     query parameter or the body gives a field bound by the URL path another value (checkRoute).
//
// It then hands server-streaming methods to the streaming bridge and the rest to vanguard, and
// renders every error answer as a google.rpc.Status in JSON (writeRESTError).
func (h *httpHandler) serveREST(w http.ResponseWriter, r *http.Request, req *restRequest) {
	if r.ContentLength > h.maxBody {
		w.Header().Set("Connection", "close")
		sendRESTStatus(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted, tooLargeMessage(h.maxBody))
		return
	}
	req.body = h.guardBody(w, r, h.maxBody)
	if !h.checkRoute(w, r, req) {
		return
	}
	if h.streams != nil && h.serveStream(w, r, req) {
		return
	}
	call := &restCall{}
	ew := &restErrorWriter{w: w, req: req}
	h.main.ServeHTTP(ew, r.WithContext(context.WithValue(r.Context(), restCallKey{}, call)))
	ew.finish(call)
}

// restCallKey is the context key of a *restCall.
type restCallKey struct{}

// restCall records what the gRPC server did for one REST request of the main transcoder.
type restCall struct {
	reached  bool   // vanguard called the gRPC server
	grpcCode string // the grpc-status the gRPC server ended the call with
}

// grpcTarget is the handler the main transcoder calls: the gRPC server, noting for a REST request
// that it was reached and how it ended.
func (h *httpHandler) grpcTarget(w http.ResponseWriter, r *http.Request) {
	call, _ := r.Context().Value(restCallKey{}).(*restCall)
	if call != nil {
		call.reached = true
	}
	h.grpc.ServeHTTP(w, r)
	if call != nil {
		hdr := w.Header()
		call.grpcCode = hdr.Get("Grpc-Status")
		if call.grpcCode == "" {
			call.grpcCode = hdr.Get(http.TrailerPrefix + "Grpc-Status")
		}
	}
}

// httpResolver looks types up in the front door's own dynamic types first, then in the global
// registry (error details and other linked-in types inside google.protobuf.Any).
type httpResolver struct {
	local  *dynamicpb.Types
	global *protoregistry.Types
}

var _ vanguard.TypeResolver = httpResolver{}

func (r httpResolver) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByName(n); err == nil {
		return mt, nil
	}
	return r.global.FindMessageByName(n)
}

func (r httpResolver) FindMessageByURL(u string) (protoreflect.MessageType, error) {
	if mt, err := r.local.FindMessageByURL(u); err == nil {
		return mt, nil
	}
	return r.global.FindMessageByURL(u)
}

func (r httpResolver) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	if xt, err := r.local.FindExtensionByName(n); err == nil {
		return xt, nil
	}
	return r.global.FindExtensionByName(n)
}

func (r httpResolver) FindExtensionByNumber(m protoreflect.FullName, n protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	if xt, err := r.local.FindExtensionByNumber(m, n); err == nil {
		return xt, nil
	}
	return r.global.FindExtensionByNumber(m, n)
}
