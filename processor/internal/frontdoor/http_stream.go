package frontdoor

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/kstatehq/kstate/processor/internal/catalog"
)

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

// streamTarget is a server-streaming method served over REST by the front door itself.
type streamTarget struct {
	grpcPath string // "/pkg.Service/Method"
	output   protoreflect.MessageType
}

// streamTwins builds, for every server-streaming method of the served services, a unary twin with
// the same input, output and HTTP rules, in synthetic services of streamTwinPackage. Vanguard
// routes and decodes REST requests to the twins (it would refuse the streaming originals), and the
// front door then runs the original method (see serveStream). It fills h.targets, keyed by the
// twin's method path.
func (h *httpHandler) streamTwins(cat *catalog.Catalog, files *protoregistry.Files) ([]protoreflect.ServiceDescriptor, error) {
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
func (h *httpHandler) serveStream(w http.ResponseWriter, r *http.Request, req *restRequest) bool {
	c := &streamCapture{}
	rec := &httpRecorder{header: http.Header{}}
	h.streams.ServeHTTP(rec, r.Clone(context.WithValue(r.Context(), streamCaptureKey{}, c)))
	switch {
	case c.target != nil && rec.code == http.StatusOK:
		// Vanguard decoded the request and passed it to capture, which answered with an empty
		// message. (When decoding fails after capture ran, rec holds the error instead.) The body
		// is read: its deadline must not outlive it into the stream.
		endBodyDeadline(w)
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
	writeRESTError(w, req, rec.code, rec.body.Bytes(), true)
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
