package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// Dispatcher runs the commands that arrive at the Ingress. The ingress has already resolved the
// method, checked the request against the method's input type and extracted the entity id.
type Dispatcher interface {
	// Unary runs one command of a unary method and returns the serialized reply (a message of
	// m.Output) and the reply metadata, sent to the client as response headers. entityID is "" for
	// actions. An error is converted with ToStatus; ErrNoReply ends the call without a response
	// message.
	Unary(ctx context.Context, m *catalog.Method, entityID string, payload []byte, md *cloudstatepb.Metadata) ([]byte, *cloudstatepb.Metadata, error)
	// Stream runs a call of a client-, server- or bidi-streaming method until it returns. The
	// returned error is converted with ToStatus; nil ends the call with OK.
	Stream(ctx context.Context, m *catalog.Method, s CommandStream) error
}

// CommandStream is one streamed call as a Dispatcher sees it: raw request payloads in, raw reply
// payloads out. Recv and Send may be called from different goroutines, but neither concurrently with
// itself.
type CommandStream interface {
	// Context is the call's context; it is done when the client cancels or the deadline passes.
	Context() context.Context
	// EntityID is the entity id of a server-streaming call of a keyed entity (its single request is
	// read and checked before Stream is called), "" otherwise.
	EntityID() string
	// Metadata is the request metadata (see MetadataFromGRPC), or nil when there is none.
	Metadata() *cloudstatepb.Metadata
	// Recv returns the next request payload, already checked to parse as the method's input type
	// (a malformed one is an error wrapping ErrInvalidArgument), or io.EOF once the client has
	// finished sending. For a server-streaming method it returns the single request, then io.EOF.
	Recv() ([]byte, error)
	// Send sends one reply payload, a serialized message of the method's output type.
	Send(payload []byte) error
	// SetHeader sets response headers from Cloudstate metadata; they are sent with the first reply
	// or when the call ends, so SetHeader fails once a reply has been sent. Entries that are not
	// valid gRPC headers are dropped (see MetadataToGRPC).
	SetHeader(md *cloudstatepb.Metadata) error
}

// Limits bounds what a client may send the ingress (RELIABILITY.md, T19). A zero field means its
// default.
type Limits struct {
	// MaxRecvBytes caps one request message; a larger one gets ResourceExhausted from gRPC itself.
	// Default 4 MiB (grpc-go's own default).
	MaxRecvBytes int
	// MaxSendBytes caps one reply message. Default 16 MiB.
	MaxSendBytes int
	// MaxConcurrentStreams caps concurrent calls per client connection. Default 1024.
	MaxConcurrentStreams uint32
	// MaxEntityIDBytes caps the length of an entity id; a longer one gets InvalidArgument.
	// Default 4096.
	MaxEntityIDBytes int
}

// Default limits.
const (
	DefaultMaxRecvBytes         = 4 << 20
	DefaultMaxSendBytes         = 16 << 20
	DefaultMaxConcurrentStreams = 1024
	DefaultMaxEntityIDBytes     = 4096
)

// DefaultLimits returns the default Limits.
func DefaultLimits() Limits {
	return Limits{
		MaxRecvBytes:         DefaultMaxRecvBytes,
		MaxSendBytes:         DefaultMaxSendBytes,
		MaxConcurrentStreams: DefaultMaxConcurrentStreams,
		MaxEntityIDBytes:     DefaultMaxEntityIDBytes,
	}
}

// Validate rejects negative limits.
func (l Limits) Validate() error {
	switch {
	case l.MaxRecvBytes < 0:
		return fmt.Errorf("limits: MaxRecvBytes %d is negative", l.MaxRecvBytes)
	case l.MaxSendBytes < 0:
		return fmt.Errorf("limits: MaxSendBytes %d is negative", l.MaxSendBytes)
	case l.MaxEntityIDBytes < 0:
		return fmt.Errorf("limits: MaxEntityIDBytes %d is negative", l.MaxEntityIDBytes)
	}
	return nil
}

// withDefaults replaces zero or negative fields with their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxRecvBytes <= 0 {
		l.MaxRecvBytes = d.MaxRecvBytes
	}
	if l.MaxSendBytes <= 0 {
		l.MaxSendBytes = d.MaxSendBytes
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = d.MaxConcurrentStreams
	}
	if l.MaxEntityIDBytes <= 0 {
		l.MaxEntityIDBytes = d.MaxEntityIDBytes
	}
	return l
}

// Ingress is kstate's gRPC front door for the user's services, built from a Catalog with no
// generated code: it is installed as the server's unknown-service handler, so every call to a
// method the server does not otherwise register lands here. It resolves the method, checks the
// request, extracts the entity id, converts metadata and hands the command to a Dispatcher.
type Ingress struct {
	cat atomic.Pointer[catalog.Catalog]
	d   Dispatcher
	lim Limits
}

// NewIngress returns an Ingress serving cat's services through d. Zero or negative fields of lim
// take their defaults.
func NewIngress(cat *catalog.Catalog, d Dispatcher, lim Limits) *Ingress {
	in := &Ingress{d: d, lim: lim.withDefaults()}
	in.cat.Store(cat)
	return in
}

// SetCatalog replaces the served catalog, e.g. after the user function was rediscovered. Calls
// already running keep the methods they resolved.
func (in *Ingress) SetCatalog(cat *catalog.Catalog) { in.cat.Store(cat) }

// Catalog returns the served catalog.
func (in *Ingress) Catalog() *catalog.Catalog { return in.cat.Load() }

// Limits returns the effective limits.
func (in *Ingress) Limits() Limits { return in.lim }

// ForwardOverhead is the room a kstate.v1.Node Forward needs around a client's message: service,
// method and entity names, and the client's metadata.
const ForwardOverhead = 256 << 10

// ServerOptions returns the options a grpc.Server needs to serve this ingress: the raw Codec
// (forced, so user messages stay bytes while registered services keep working), the message size,
// header size and stream limits, and the unknown-service handler. Request headers are capped at
// 64 KiB, the limit of the HTTP front door on the same port (grpc-go's default is 16 MiB).
func (in *Ingress) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec{}),
		grpc.MaxRecvMsgSize(in.lim.MaxRecvBytes),
		// Clients may ping idle connections to notice a paused node within seconds.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxSendMsgSize(in.lim.MaxSendBytes),
		grpc.MaxHeaderListSize(httpMaxHeaderBytes),
		grpc.MaxConcurrentStreams(in.lim.MaxConcurrentStreams),
		grpc.UnknownServiceHandler(in.Handler()),
		// Reuse stream goroutines rather than start (and grow the stack of) one per request.
		grpc.NumStreamWorkers(uint32(2 * runtime.GOMAXPROCS(0))),
	}
}

// Handler returns the stream handler to install with grpc.UnknownServiceHandler. The server must
// use Codec (see ServerOptions). An observing Dispatcher (Observer) is told how each call ended.
func (in *Ingress) Handler() grpc.StreamHandler {
	return func(_ any, ss grpc.ServerStream) error {
		err := in.serve(ss)
		in.observeCall(ss.Context(), err)
		return err
	}
}

// Resolve finds the method of a gRPC path "/pkg.Service/Method", or returns an Unimplemented
// status error ("unknown service X" or "unknown method Y of service X").
func (in *Ingress) Resolve(fullMethod string) (*catalog.Method, error) {
	cat := in.cat.Load()
	svc, name, ok := splitMethod(fullMethod)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "malformed method name %q", fullMethod)
	}
	var s *catalog.Service
	if cat != nil {
		s, ok = cat.Service(svc)
	}
	if !ok || s == nil {
		return nil, status.Errorf(codes.Unimplemented, "unknown service %s", svc)
	}
	m, ok := s.Method(name)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "unknown method %s of service %s", name, svc)
	}
	return m, nil
}

// splitMethod splits "/pkg.Service/Method" into service and method.
func splitMethod(full string) (svc, method string, ok bool) {
	full = strings.TrimPrefix(full, "/")
	i := strings.LastIndexByte(full, '/')
	if i <= 0 || i == len(full)-1 {
		return "", "", false
	}
	return full[:i], full[i+1:], true
}

// serve handles one call.
func (in *Ingress) serve(ss grpc.ServerStream) error {
	full, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "ingress: the stream carries no method name")
	}
	m, err := in.Resolve(full)
	if err != nil {
		return err
	}
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	cmd := MetadataFromGRPC(md)

	if m.Unary() {
		var req RawMessage
		if err := ss.RecvMsg(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return status.Errorf(codes.InvalidArgument, "%s is unary: send exactly one request message", m.FullName)
			}
			return err // already a status (e.g. ResourceExhausted for an oversize message)
		}
		id, err := in.entityID(m, req)
		if err != nil {
			return ToStatus(err)
		}
		reply, rmd, err := in.d.Unary(ctx, m, id, req, cmd)
		if h := MetadataToGRPC(rmd); err == nil || errors.Is(err, catalog.ErrNoReply) {
			if len(h) > 0 {
				if herr := ss.SetHeader(h); herr != nil {
					return herr
				}
			}
		}
		switch {
		case errors.Is(err, catalog.ErrNoReply):
			return nil
		case err != nil:
			return ToStatus(err)
		}
		return ss.SendMsg(RawMessage(reply))
	}

	cs := &commandStream{ss: ss, m: m, md: cmd}
	if !m.ClientStreaming {
		var req RawMessage
		if err := ss.RecvMsg(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return status.Errorf(codes.InvalidArgument, "%s takes exactly one request message", m.FullName)
			}
			return err
		}
		id, err := in.entityID(m, req)
		if err != nil {
			return ToStatus(err)
		}
		cs.id, cs.first, cs.hasFirst = id, req, true
	}
	return ToStatus(in.d.Stream(ctx, m, cs))
}

// entityID checks a request payload against the method's input type and returns its entity id.
func (in *Ingress) entityID(m *catalog.Method, payload []byte) (string, error) {
	return ExtractEntityID(m, payload, in.lim.MaxEntityIDBytes)
}

// ExtractEntityID is the one entity-id check of every entry — client ingress, node-to-node
// Forward, forward and side-effect targets: the payload decodes as the method's input, and a keyed
// kind's id is non-empty, valid UTF-8 and at most maxLen bytes.
func ExtractEntityID(m *catalog.Method, payload []byte, maxLen int) (string, error) {
	id, err := m.ExtractEntityID(payload)
	if err != nil {
		return "", err
	}
	if len(id) > maxLen {
		return "", fmt.Errorf("%w: entity key of %s is %d bytes long, more than the %d allowed", catalog.ErrInvalidArgument, m.Input.FullName(), len(id), maxLen)
	}
	return id, nil
}

// commandStream implements CommandStream over a grpc.ServerStream.
type commandStream struct {
	ss       grpc.ServerStream
	m        *catalog.Method
	md       *cloudstatepb.Metadata
	id       string
	first    RawMessage
	hasFirst bool
}

func (s *commandStream) Context() context.Context         { return s.ss.Context() }
func (s *commandStream) EntityID() string                 { return s.id }
func (s *commandStream) Metadata() *cloudstatepb.Metadata { return s.md }
func (s *commandStream) Send(payload []byte) error        { return s.ss.SendMsg(RawMessage(payload)) }
func (s *commandStream) SetHeader(md *cloudstatepb.Metadata) error {
	return s.ss.SetHeader(MetadataToGRPC(md))
}

func (s *commandStream) Recv() ([]byte, error) {
	if !s.m.ClientStreaming {
		if !s.hasFirst {
			return nil, io.EOF
		}
		first := s.first
		s.first, s.hasFirst = nil, false
		return first, nil
	}
	var req RawMessage
	if err := s.ss.RecvMsg(&req); err != nil {
		return nil, err
	}
	if _, err := s.m.Decode(req); err != nil {
		return nil, err
	}
	return req, nil
}

// skipRequestHeader reports whether an incoming header is transport-level and not passed to the
// user function: HTTP/2 pseudo-headers, content-type, user-agent, te and everything grpc-*.
func skipRequestHeader(key string) bool {
	switch key {
	case "content-type", "user-agent", "te":
		return true
	}
	return strings.HasPrefix(key, ":") || strings.HasPrefix(key, "grpc-")
}

// MetadataFromGRPC converts incoming gRPC metadata into Cloudstate metadata, minus transport
// headers (see skipRequestHeader). Keys are sorted so the result is deterministic; values keep their
// order. Binary ("-bin") headers become bytes_value entries (gRPC has already base64-decoded them),
// all others string_value. It returns nil when no entry remains.
func MetadataFromGRPC(md metadata.MD) *cloudstatepb.Metadata {
	if len(md) == 0 {
		return nil
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		if !skipRequestHeader(k) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	out := &cloudstatepb.Metadata{}
	for _, k := range keys {
		bin := strings.HasSuffix(k, "-bin")
		for _, v := range md[k] {
			e := &cloudstatepb.MetadataEntry{Key: k}
			if bin {
				e.Value = &cloudstatepb.MetadataEntry_BytesValue{BytesValue: []byte(v)}
			} else {
				e.Value = &cloudstatepb.MetadataEntry_StringValue{StringValue: v}
			}
			out.Entries = append(out.Entries, e)
		}
	}
	return out
}

// skipResponseHeader reports whether a user-supplied header must not be sent: pseudo-headers,
// grpc-*, content-type and the HTTP/1 connection-specific headers HTTP/2 forbids.
func skipResponseHeader(key string) bool {
	switch key {
	case "content-type", "user-agent", "te", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host":
		return true
	}
	return strings.HasPrefix(key, ":") || strings.HasPrefix(key, "grpc-")
}

// validHeaderKey reports whether key only holds the characters gRPC allows: [0-9a-z-_.].
func validHeaderKey(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// printableASCII reports whether s is valid as a non-binary header value.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

// MetadataToGRPC converts Cloudstate metadata (a reply's) into gRPC headers. Keys are lower-cased.
// Entries gRPC would reject, or that would break the transport, are dropped: invalid keys,
// reserved headers (see skipResponseHeader), bytes values under keys without the "-bin" suffix, and
// non-printable string values under keys without it. It returns nil when nothing remains.
func MetadataToGRPC(m *cloudstatepb.Metadata) metadata.MD {
	var md metadata.MD
	for _, e := range m.GetEntries() {
		k := strings.ToLower(e.GetKey())
		if !validHeaderKey(k) || skipResponseHeader(k) {
			continue
		}
		bin := strings.HasSuffix(k, "-bin")
		var v string
		switch val := e.GetValue().(type) {
		case *cloudstatepb.MetadataEntry_StringValue:
			if !bin && !printableASCII(val.StringValue) {
				continue
			}
			v = val.StringValue
		case *cloudstatepb.MetadataEntry_BytesValue:
			if !bin {
				continue
			}
			v = string(val.BytesValue)
		default:
			continue
		}
		if md == nil {
			md = metadata.MD{}
		}
		md[k] = append(md[k], v)
	}
	return md
}
