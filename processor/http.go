package processor

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/api/annotations"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/kstatehq/kstate/internal/logging"
)

// HTTPMaxMessageBytes caps one message the HTTP front door buffers while transcoding, request or
// response (vanguard buffers whole messages). It is the larger of the ingress's default receive and
// send limits; the gRPC server behind the front door enforces its own limits on top.
const HTTPMaxMessageBytes = DefaultMaxSendBytes

// Content types of streamed HTTP responses.
const (
	// ContentTypeNDJSON is the content type of a server-streamed response sent as newline-delimited
	// JSON: one message per line.
	ContentTypeNDJSON = "application/x-ndjson"
	// ContentTypeSSE is the content type of a server-streamed response sent as server-sent events,
	// chosen when the request's Accept header names it.
	ContentTypeSSE = "text/event-stream"
)

// streamTwinPackage is the package of the synthetic unary twins of server-streaming methods (see
// NewHTTPHandler). It never leaves this process.
const streamTwinPackage = "kstate.internal.httpstream"

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
// input), 64-bit integers as strings, unpopulated fields emitted. A malformed request (bad JSON,
// unknown fields or query parameters, a value of the wrong type) is INVALID_ARGUMENT, HTTP 400. A
// failed call answers with the HTTP status the gRPC code maps to (HTTPStatusFromCode; a command
// failure is gRPC UNKNOWN, so HTTP 500) and a google.rpc.Status JSON body, e.g.
// {"code":2,"message":"boom","details":[]}.
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
func NewHTTPHandler(cat *Catalog, grpcServer http.Handler, log hclog.Logger) (http.Handler, error) {
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
		grpc:    grpcServer,
		log:     log,
		res:     res,
		marshal: protojson.MarshalOptions{Resolver: res, EmitUnpopulated: true},
		targets: make(map[string]*streamTarget),
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
// It uses net/http's own unencrypted HTTP/2 (golang.org/x/net/http2/h2c is deprecated in favour of
// it, and its hijacked connections escape Shutdown). The goroutine ends when the returned server is
// shut down: Shutdown(ctx) stops accepting, sends HTTP/2 GOAWAY, and waits for running requests
// (streams included) until ctx is done; Close ends everything at once. HTTP/2 connections accept
// DefaultMaxConcurrentStreams concurrent streams.
func ServeMux(lis net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		Protocols:         new(http.Protocols),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: DefaultMaxConcurrentStreams},
	}
	srv.Protocols.SetHTTP1(true)
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
}

// streamTarget is a server-streaming method served over REST by the front door itself.
type streamTarget struct {
	grpcPath string // "/pkg.Service/Method"
	output   protoreflect.MessageType
}

// ServeHTTP dispatches one request: native gRPC to the gRPC server, REST calls of server-streaming
// methods to the streaming bridge, everything else to vanguard.
func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isNativeGRPC(r) {
		h.grpc.ServeHTTP(w, r)
		return
	}
	if !isRESTRequest(r) {
		h.main.ServeHTTP(w, r)
		return
	}
	if h.streams != nil && h.serveStream(w, r) {
		return
	}
	call := &restCall{}
	ew := &restErrorWriter{w: w}
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

// restErrorWriter passes a REST response through, except that it holds an error answer back until
// the call is over, so that finish can correct its code. Vanguard v0.4.0 reports some malformed
// requests (an unknown query parameter, a body on a rule without one) with a plain error, which it
// renders as gRPC UNKNOWN and HTTP 500: the client would see a server failure for its own mistake.
type restErrorWriter struct {
	w    http.ResponseWriter
	code int
	held *bytes.Buffer // the error body held back; nil when passing through
}

func (e *restErrorWriter) Header() http.Header { return e.w.Header() }

func (e *restErrorWriter) WriteHeader(code int) {
	if e.code != 0 {
		return
	}
	e.code = code
	if code >= 400 {
		e.held = &bytes.Buffer{}
		return
	}
	e.w.WriteHeader(code)
}

func (e *restErrorWriter) Write(p []byte) (int, error) {
	if e.code == 0 {
		e.WriteHeader(http.StatusOK)
	}
	if e.held != nil {
		if e.held.Len() < 1<<20 {
			e.held.Write(p)
		}
		return len(p), nil
	}
	return e.w.Write(p)
}

// Flush flushes a response passing through (vanguard streams google.api.HttpBody responses).
func (e *restErrorWriter) Flush() {
	if e.code != 0 && e.held == nil {
		_ = http.NewResponseController(e.w).Flush()
	}
}

// Unwrap returns the client's writer, for http.ResponseController.
func (e *restErrorWriter) Unwrap() http.ResponseWriter { return e.w }

// finish sends a held error answer. An UNKNOWN error that the gRPC server did not produce (it was
// not reached, or it ended the call with another code, having received no request because
// vanguard failed to build it) is the client's fault: it becomes INVALID_ARGUMENT, HTTP 400.
func (e *restErrorWriter) finish(call *restCall) {
	if e.held == nil {
		return
	}
	code, body := e.code, e.held.Bytes()
	if call.reached && call.grpcCode != strconv.Itoa(int(codes.Unknown)) {
		code, body = asInvalidArgument(code, body)
	}
	h := e.w.Header()
	h.Del("Content-Length")
	// The gRPC side of the transcoder wrote its own headers into the shared map; a REST client
	// gets a JSON error, not gRPC framing details.
	for k := range h {
		if strings.HasPrefix(k, "Grpc-") {
			delete(h, k)
		}
	}
	if len(body) > 0 && body[0] == '{' {
		h.Set("Content-Type", "application/json")
	}
	e.w.WriteHeader(code)
	_, _ = e.w.Write(body)
}

// asInvalidArgument turns an error answer of vanguard's that says UNKNOWN (a google.rpc.Status
// JSON body with code 2) into INVALID_ARGUMENT with HTTP status 400. Other answers are returned
// unchanged.
func asInvalidArgument(code int, body []byte) (int, []byte) {
	if code != http.StatusInternalServerError && code != http.StatusBadGateway {
		return code, body
	}
	var st statuspb.Status
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &st); err != nil || st.GetCode() != int32(codes.Unknown) {
		return code, body
	}
	st.Code = int32(codes.InvalidArgument)
	fixed, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(&st)
	if err != nil {
		return code, body
	}
	return http.StatusBadRequest, fixed
}

// isNativeGRPC reports whether r is a gRPC call the gRPC server can take as is: HTTP/2 and the
// protobuf codec. gRPC with another codec goes through vanguard, which transcodes it.
func isNativeGRPC(r *http.Request) bool {
	if r.ProtoMajor != 2 {
		return false
	}
	ct := mediaType(r.Header.Get("Content-Type"))
	return ct == "application/grpc" || ct == "application/grpc+proto"
}

// mediaType returns the media type of a Content-Type value, lower-cased, without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// isRESTRequest reports whether vanguard classifies r as REST rather than Connect, gRPC or gRPC-Web
// (the same tests as vanguard's classifyRequest).
func isRESTRequest(r *http.Request) bool {
	cts := r.Header.Values("Content-Type")
	if len(cts) > 1 {
		return false
	}
	if r.Header.Get("Connect-Protocol-Version") == "1" {
		return false
	}
	if len(cts) == 0 {
		return r.URL.Query().Get("connect") != "v1"
	}
	ct := cts[0]
	switch {
	case strings.HasPrefix(ct, "application/connect+"),
		ct == "application/grpc", strings.HasPrefix(ct, "application/grpc+"),
		ct == "application/grpc-web", strings.HasPrefix(ct, "application/grpc-web+"):
		return false
	case strings.HasPrefix(ct, "application/"):
		return r.URL.Query().Get("connect") != "v1"
	}
	return true
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

// restJSONCodec is vanguard's JSON codec whose decoding errors are InvalidArgument: vanguard
// v0.4.0 passes a codec's error on unchanged, and reports an error that is not a *connect.Error as
// Unknown (HTTP 502), so a malformed request body would look like a server failure.
type restJSONCodec struct {
	*vanguard.JSONCodec
}

// Unmarshal decodes JSON into msg.
func (c restJSONCodec) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(data, msg); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body: %w", err))
	}
	return nil
}

// UnmarshalField decodes JSON into one field of msg (a rule whose body names a field).
func (c restJSONCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(data, msg, field); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body field %s: %w", field.Name(), err))
	}
	return nil
}

// httpOptionTypes resolves google.api.http when re-parsing method options.
var httpOptionTypes = func() *protoregistry.Types {
	t := new(protoregistry.Types)
	if err := t.RegisterExtension(annotations.E_Http); err != nil {
		panic(err)
	}
	return t
}()

// transcodingFiles rebuilds every file of src into a new registry for vanguard. Each file is
// re-parsed with a resolver that knows google.api.http, so the option becomes a typed
// *annotations.HttpRule whether it arrived typed, dynamic or as unknown fields (vanguard only reads
// it when it is there as that extension). Methods of the served services also get the default
// binding POST /<package.Service>/<Method> with body "*" (see withDefaultBinding).
func transcodingFiles(src *protoregistry.Files, served map[protoreflect.FullName]bool) (*protoregistry.Files, error) {
	set := &descriptorpb.FileDescriptorSet{}
	var err error
	src.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		var raw []byte
		raw, err = proto.Marshal(protodesc.ToFileDescriptorProto(fd))
		if err != nil {
			err = fmt.Errorf("file %s: %w", fd.Path(), err)
			return false
		}
		fdp := &descriptorpb.FileDescriptorProto{}
		if err = (proto.UnmarshalOptions{Resolver: httpOptionTypes}).Unmarshal(raw, fdp); err != nil {
			err = fmt.Errorf("file %s: %w", fd.Path(), err)
			return false
		}
		for _, sp := range fdp.GetService() {
			full := sp.GetName()
			if pkg := fdp.GetPackage(); pkg != "" {
				full = pkg + "." + full
			}
			if !served[protoreflect.FullName(full)] {
				continue
			}
			for _, mp := range sp.GetMethod() {
				if err = withDefaultBinding(mp, "/"+full+"/"+mp.GetName()); err != nil {
					err = fmt.Errorf("method %s.%s: %w", full, mp.GetName(), err)
					return false
				}
			}
		}
		set.File = append(set.File, fdp)
		return true
	})
	if err != nil {
		return nil, err
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("rebuilding descriptors: %w", err)
	}
	return files, nil
}

// withDefaultBinding adds POST path with body "*" to the method's google.api.http rule: as the rule
// itself when the method has none, otherwise as one more additional binding, unless a binding
// already posts to path.
func withDefaultBinding(mp *descriptorpb.MethodDescriptorProto, path string) error {
	def := &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: path}, Body: "*"}
	if mp.Options == nil {
		mp.Options = &descriptorpb.MethodOptions{}
	}
	if !proto.HasExtension(mp.Options, annotations.E_Http) {
		proto.SetExtension(mp.Options, annotations.E_Http, def)
		return nil
	}
	rule, ok := proto.GetExtension(mp.Options, annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule == nil {
		return errors.New("google.api.http option is not a google.api.HttpRule")
	}
	if rule.GetPost() == path {
		return nil
	}
	for _, b := range rule.GetAdditionalBindings() {
		if b.GetPost() == path {
			return nil
		}
	}
	rule = proto.CloneOf(rule)
	rule.AdditionalBindings = append(rule.AdditionalBindings, def)
	proto.SetExtension(mp.Options, annotations.E_Http, rule)
	return nil
}

// serviceIn finds a service descriptor by name in files.
func serviceIn(files *protoregistry.Files, name protoreflect.FullName) (protoreflect.ServiceDescriptor, error) {
	d, err := files.FindDescriptorByName(name)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", name)
	}
	return sd, nil
}

// streamTwins builds, for every server-streaming method of the served services, a unary twin with
// the same input, output and HTTP rules, in synthetic services of streamTwinPackage. Vanguard
// routes and decodes REST requests to the twins (it would refuse the streaming originals), and the
// front door then runs the original method (see serveStream). It fills h.targets, keyed by the
// twin's method path.
func (h *httpHandler) streamTwins(cat *Catalog, files *protoregistry.Files) ([]protoreflect.ServiceDescriptor, error) {
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("kstate/internal/httpstream/twins.proto"),
		Package: proto.String(streamTwinPackage),
		Syntax:  proto.String("proto3"),
	}
	deps := map[string]bool{}
	type pending struct {
		twinPath string
		target   *streamTarget
	}
	var todo []pending
	for i, s := range cat.Services() {
		sd, err := serviceIn(files, s.Desc.FullName())
		if err != nil {
			return nil, err
		}
		svc := &descriptorpb.ServiceDescriptorProto{Name: proto.String("S" + strconv.Itoa(i))}
		ms := sd.Methods()
		for j := 0; j < ms.Len(); j++ {
			md := ms.Get(j)
			if !md.IsStreamingServer() || md.IsStreamingClient() || md.Output().FullName() == "google.api.HttpBody" {
				// Vanguard streams google.api.HttpBody replies over REST itself.
				continue
			}
			mp := protodesc.ToMethodDescriptorProto(md)
			mp.ClientStreaming, mp.ServerStreaming = nil, nil
			svc.Method = append(svc.Method, mp)
			deps[md.Input().ParentFile().Path()] = true
			deps[md.Output().ParentFile().Path()] = true
			out, err := h.res.FindMessageByName(md.Output().FullName())
			if err != nil {
				return nil, fmt.Errorf("output type of %s: %w", md.FullName(), err)
			}
			todo = append(todo, pending{
				twinPath: "/" + streamTwinPackage + "." + svc.GetName() + "/" + string(md.Name()),
				target:   &streamTarget{grpcPath: "/" + string(sd.FullName()) + "/" + string(md.Name()), output: out},
			})
		}
		if len(svc.Method) > 0 {
			fdp.Service = append(fdp.Service, svc)
		}
	}
	if len(fdp.Service) == 0 {
		return nil, nil
	}
	for d := range deps {
		fdp.Dependency = append(fdp.Dependency, d)
	}
	sort.Strings(fdp.Dependency)
	fd, err := protodesc.NewFile(fdp, files)
	if err != nil {
		return nil, fmt.Errorf("streaming twins: %w", err)
	}
	for _, p := range todo {
		h.targets[p.twinPath] = p.target
	}
	out := make([]protoreflect.ServiceDescriptor, fd.Services().Len())
	for i := range out {
		out[i] = fd.Services().Get(i)
	}
	return out, nil
}

// streamCaptureKey is the context key of a *streamCapture.
type streamCaptureKey struct{}

// streamCapture receives the outcome of routing a REST request through the twins' transcoder.
type streamCapture struct {
	target   *streamTarget
	payload  []byte
	notFound bool
}

// markNotFound is the twins' transcoder's unknown handler: the request is not a REST call of a
// server-streaming method.
func markNotFound(_ http.ResponseWriter, r *http.Request) {
	if c, ok := r.Context().Value(streamCaptureKey{}).(*streamCapture); ok {
		c.notFound = true
	}
}

// capture is the twins' handler. Vanguard calls it with the Connect unary protocol and the proto
// codec, so the body is the serialized request message, routed and assembled from path, query and
// body. It records the message and answers with an empty message, which is discarded.
func (h *httpHandler) capture(w http.ResponseWriter, r *http.Request) {
	c, ok := r.Context().Value(streamCaptureKey{}).(*streamCapture)
	t := h.targets[r.URL.Path]
	if !ok || t == nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, HTTPMaxMessageBytes+1))
	if err != nil || len(body) > HTTPMaxMessageBytes {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"code":"invalid_argument","message":"cannot read the request"}`)
		return
	}
	c.target, c.payload = t, body
	w.Header().Set("Content-Type", "application/proto")
	w.WriteHeader(http.StatusOK)
}

// serveStream routes r through the twins' transcoder. It reports false when r is not a REST call of
// a server-streaming method (the caller then hands it to the main transcoder, the body unread);
// otherwise it has answered r: with the stream, or with the error vanguard found (bad JSON, a
// malformed path value).
func (h *httpHandler) serveStream(w http.ResponseWriter, r *http.Request) bool {
	c := &streamCapture{}
	rec := &httpRecorder{header: http.Header{}}
	h.streams.ServeHTTP(rec, r.Clone(context.WithValue(r.Context(), streamCaptureKey{}, c)))
	switch {
	case c.target != nil && rec.code == http.StatusOK:
		// Vanguard decoded the request and passed it to capture, which answered with an empty
		// message. (When decoding fails after capture ran, rec holds the error instead.)
		h.runStream(w, r, c.target, c.payload)
		return true
	case c.notFound, c.target == nil && rec.code == http.StatusMethodNotAllowed:
		// Not a streaming route, or a streaming route with another HTTP method: the main transcoder
		// may have a route for it.
		return false
	}
	// An error found while vanguard decoded the request. The twins' handler never fails with
	// UNKNOWN, so that code is vanguard's rendering of a malformed request (see restErrorWriter).
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	code, body := asInvalidArgument(rec.code, rec.body.Bytes())
	w.Header().Del("Content-Length")
	w.WriteHeader(code)
	_, _ = w.Write(body)
	return true
}

// httpRecorder is a minimal in-memory http.ResponseWriter (with Flush, which vanguard requires).
type httpRecorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *httpRecorder) Header() http.Header { return r.header }
func (r *httpRecorder) Flush()              {}
func (r *httpRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
func (r *httpRecorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	if r.body.Len() < 1<<20 { // only ever an error message or an empty message
		r.body.Write(p)
	}
	return len(p), nil
}

// requestHeaderSkip lists request headers not passed on to the gRPC call as metadata.
var requestHeaderSkip = map[string]bool{
	"Accept": true, "Accept-Encoding": true, "Connection": true, "Content-Encoding": true,
	"Content-Length": true, "Content-Type": true, "Host": true, "Keep-Alive": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// runStream calls the server-streaming method t in-process on the gRPC server with payload as its
// request, and relays the replies to w as NDJSON or SSE.
func (h *httpHandler) runStream(w http.ResponseWriter, r *http.Request, t *streamTarget, payload []byte) {
	frame := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(payload)))
	copy(frame[5:], payload)

	hdr := make(http.Header, len(r.Header)+2)
	for k, v := range r.Header {
		lk := strings.ToLower(k)
		if requestHeaderSkip[k] || strings.HasPrefix(lk, "grpc-") || strings.HasPrefix(lk, "connect-") {
			continue
		}
		hdr[k] = v
	}
	hdr.Set("Content-Type", "application/grpc")
	hdr.Set("Te", "trailers")
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           &url.URL{Path: t.grpcPath},
		RequestURI:    t.grpcPath,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        hdr,
		Body:          io.NopCloser(bytes.NewReader(frame)),
		ContentLength: int64(len(frame)),
		Host:          r.Host,
		RemoteAddr:    r.RemoteAddr,
		TLS:           r.TLS,
	}).WithContext(r.Context())

	sw := &streamWriter{
		w:         w,
		rc:        http.NewResponseController(w),
		sse:       strings.Contains(strings.ToLower(strings.Join(r.Header.Values("Accept"), ",")), ContentTypeSSE),
		out:       t.output,
		marshal:   h.marshal,
		unmarshal: proto.UnmarshalOptions{Resolver: h.res},
		header:    http.Header{},
	}
	h.grpc.ServeHTTP(sw, req)
	st := sw.finish()
	if st.GetCode() != int32(codes.OK) {
		h.log.Debug("streamed HTTP call failed", "method", t.grpcPath, "code", codes.Code(st.GetCode()), "message", st.GetMessage(), "replies", sw.sent)
	}
}

// streamWriter is the http.ResponseWriter the gRPC server writes a server-streaming call to: it
// parses the gRPC frames as they arrive and relays each reply to the client as JSON. The gRPC
// server calls it from one goroutine only.
type streamWriter struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	sse       bool
	out       protoreflect.MessageType
	marshal   protojson.MarshalOptions
	unmarshal proto.UnmarshalOptions

	header  http.Header // the gRPC server's response headers, then its trailers
	code    int         // the gRPC server's HTTP status
	buf     []byte      // bytes of a frame not complete yet
	errBody []byte      // body of a non-gRPC error answer (e.g. 415 from the gRPC server)
	started bool        // the client's response headers are written
	sent    int         // replies relayed
	err     *statuspb.Status
}

func (s *streamWriter) Header() http.Header { return s.header }
func (s *streamWriter) Flush()              {}
func (s *streamWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}

func (s *streamWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if s.code != http.StatusOK {
		if len(s.errBody) < 4096 {
			s.errBody = append(s.errBody, p...)
		}
		return len(p), nil
	}
	if s.err != nil {
		return len(p), nil // the stream already failed; drain what the server still writes
	}
	s.buf = append(s.buf, p...)
	for len(s.buf) >= 5 {
		n := binary.BigEndian.Uint32(s.buf[1:5])
		if uint64(len(s.buf)-5) < uint64(n) {
			break
		}
		flags, msg := s.buf[0], s.buf[5:5+int(n)]
		s.relay(flags, msg)
		s.buf = s.buf[5+int(n):]
		if s.err != nil {
			break
		}
	}
	if len(s.buf) == 0 {
		s.buf = nil // release the backing array between messages
	}
	return len(p), nil
}

// relay sends one reply to the client.
func (s *streamWriter) relay(flags byte, raw []byte) {
	if flags&1 != 0 {
		s.err = &statuspb.Status{Code: int32(codes.Internal), Message: "the gRPC server sent a compressed message"}
		return
	}
	msg := s.out.New().Interface()
	if err := s.unmarshal.Unmarshal(raw, msg); err != nil {
		s.err = &statuspb.Status{Code: int32(codes.Internal), Message: fmt.Sprintf("reply is not a valid %s: %v", s.out.Descriptor().FullName(), err)}
		return
	}
	js, err := s.marshal.Marshal(msg)
	if err != nil {
		s.err = &statuspb.Status{Code: int32(codes.Internal), Message: fmt.Sprintf("reply cannot be rendered as JSON: %v", err)}
		return
	}
	s.start()
	s.writeEvent("", js)
	s.sent++
}

// start writes the client's response headers: the reply metadata, then the stream's content type.
func (s *streamWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	for k, v := range s.header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "grpc-") || lk == "content-type" || lk == "trailer" || lk == "date" || lk == "content-length" || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		h[k] = v
	}
	if s.sse {
		h.Set("Content-Type", ContentTypeSSE)
		h.Set("Cache-Control", "no-cache")
	} else {
		h.Set("Content-Type", ContentTypeNDJSON)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Add("Trailer", "Grpc-Status")
	h.Add("Trailer", "Grpc-Message")
	s.w.WriteHeader(http.StatusOK)
}

// writeEvent writes one JSON value as an NDJSON line or an SSE event (with the given event name,
// "" for the default) and flushes it.
func (s *streamWriter) writeEvent(event string, js []byte) {
	var b []byte
	if s.sse {
		if event != "" {
			b = append(b, "event: "...)
			b = append(b, event...)
			b = append(b, '\n')
		}
		b = append(b, "data: "...)
		b = append(b, js...)
		b = append(b, "\n\n"...)
	} else {
		b = append(append(b, js...), '\n')
	}
	_, _ = s.w.Write(b)
	_ = s.rc.Flush()
}

// finish ends the client's response after the gRPC call returned, and returns the call's status.
func (s *streamWriter) finish() *statuspb.Status {
	st := s.status()
	if st.GetCode() == int32(codes.OK) {
		s.start()
		s.setTrailers(st)
		return st
	}
	js, err := s.marshal.Marshal(st)
	if err != nil {
		js = []byte(`{"code":13,"message":"failed to render the error","details":[]}`)
	}
	if !s.started {
		h := s.w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		s.w.WriteHeader(HTTPStatusFromCode(codes.Code(st.GetCode())))
		_, _ = s.w.Write(js)
		return st
	}
	if s.sse {
		s.writeEvent("error", js)
	} else {
		s.writeEvent("", append(append([]byte(`{"error":`), js...), '}'))
	}
	s.setTrailers(st)
	return st
}

// setTrailers sets the declared HTTP trailers to the call's outcome.
func (s *streamWriter) setTrailers(st *statuspb.Status) {
	h := s.w.Header()
	h.Set("Grpc-Status", strconv.Itoa(int(st.GetCode())))
	if m := st.GetMessage(); m != "" {
		h.Set("Grpc-Message", url.PathEscape(m))
	}
}

// status returns the outcome of the gRPC call from the trailers the gRPC server left in the header
// map, or from a non-gRPC answer (the server refused the request).
func (s *streamWriter) status() *statuspb.Status {
	if s.err != nil {
		return s.err
	}
	get := func(k string) string {
		if v := s.header.Get(k); v != "" {
			return v
		}
		return s.header.Get(http.TrailerPrefix + k)
	}
	raw := get("Grpc-Status")
	if raw == "" {
		if s.code != 0 && s.code != http.StatusOK {
			return &statuspb.Status{Code: int32(codeFromHTTPStatus(s.code)), Message: strings.TrimSpace(string(s.errBody))}
		}
		return &statuspb.Status{Code: int32(codes.Internal), Message: "the gRPC call ended without a status"}
	}
	if bin := get("Grpc-Status-Details-Bin"); bin != "" {
		if b, err := decodeBinHeader(bin); err == nil {
			st := &statuspb.Status{}
			if proto.Unmarshal(b, st) == nil {
				return st
			}
		}
	}
	code, err := strconv.Atoi(raw)
	if err != nil {
		return &statuspb.Status{Code: int32(codes.Internal), Message: "malformed grpc-status " + strconv.Quote(raw)}
	}
	st := &statuspb.Status{Code: int32(code), Message: decodeGRPCMessage(get("Grpc-Message"))}
	if st.Code == int32(codes.OK) && len(s.buf) > 0 {
		return &statuspb.Status{Code: int32(codes.Internal), Message: "the gRPC call ended inside a message"}
	}
	return st
}

// decodeBinHeader decodes a gRPC binary header value (base64, padded or not).
func decodeBinHeader(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// decodeGRPCMessage undoes the percent-encoding of grpc-message.
func decodeGRPCMessage(m string) string {
	if !strings.Contains(m, "%") {
		return m
	}
	var b strings.Builder
	for i := 0; i < len(m); i++ {
		if m[i] == '%' && i+2 < len(m) {
			if v, err := strconv.ParseUint(m[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(m[i])
	}
	return b.String()
}

// HTTPStatusFromCode maps a gRPC status code to the HTTP status the front door answers with, the
// same table vanguard (and grpc-gateway) use: Unknown, Internal and DataLoss → 500,
// InvalidArgument, FailedPrecondition and OutOfRange → 400, NotFound → 404, Unimplemented → 501,
// Unavailable → 503, DeadlineExceeded → 504, and so on.
func HTTPStatusFromCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// codeFromHTTPStatus maps the HTTP status of a non-gRPC answer of the gRPC server to a code.
func codeFromHTTPStatus(code int) codes.Code {
	switch code {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Internal
}
