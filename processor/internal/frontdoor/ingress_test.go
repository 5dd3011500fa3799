package frontdoor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/proctest"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// igCall is one command the dispatcher received.
type igCall struct {
	method  string
	id      string
	payload []byte
	md      *cloudstatepb.Metadata
}

// igDispatcher records commands. Unary replies with Response{message: "<id>/<payload>"} unless
// unaryErr is set; Stream runs stream, which tests set per case.
type igDispatcher struct {
	mu       sync.Mutex
	calls    []igCall
	unaryErr error
	replyMD  *cloudstatepb.Metadata
	stream   func(ctx context.Context, m *catalog.Method, s CommandStream) error
}

// ctCatalog builds the catalog of proctest.Spec.
func ctCatalog(t testing.TB) *catalog.Catalog {
	t.Helper()
	cat, err := catalog.BuildCatalog(proctest.Spec(t))
	if err != nil {
		t.Fatalf("BuildCatalog: %v", err)
	}
	return cat
}

func (d *igDispatcher) Unary(_ context.Context, m *catalog.Method, id string, payload []byte, md *cloudstatepb.Metadata) ([]byte, *cloudstatepb.Metadata, error) {
	d.mu.Lock()
	d.calls = append(d.calls, igCall{m.FullName, id, payload, md})
	err, rmd := d.unaryErr, d.replyMD
	d.mu.Unlock()
	if err != nil {
		return nil, rmd, err
	}
	msg, derr := m.Decode(payload)
	if derr != nil {
		return nil, nil, derr
	}
	text := ""
	if f := m.Input.Fields().ByName("payload"); f != nil {
		text = msg.Get(f).String()
	}
	b, _ := proto.Marshal(&testpb.Response{Message: id + "/" + text})
	return b, rmd, nil
}

func (d *igDispatcher) Stream(ctx context.Context, m *catalog.Method, s CommandStream) error {
	d.mu.Lock()
	d.calls = append(d.calls, igCall{method: m.FullName, id: s.EntityID(), md: s.Metadata()})
	f := d.stream
	d.mu.Unlock()
	if f == nil {
		return status.Error(codes.Unimplemented, "no stream handler")
	}
	return f(ctx, m, s)
}

func (d *igDispatcher) recorded() []igCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]igCall(nil), d.calls...)
}

// igServer is a real gRPC server on bufconn running an Ingress next to reflection and health, as
// the node runs them.
type igServer struct {
	ing  *Ingress
	refl *Reflection
	cc   *grpc.ClientConn
}

func igServe(t *testing.T, cat *catalog.Catalog, d Dispatcher, lim Limits, extra ...string) *igServer {
	t.Helper()
	ing := NewIngress(cat, d, lim)
	s := grpc.NewServer(ing.ServerOptions()...)
	refl := RegisterReflection(s, cat, extra...)
	healthpb.RegisterHealthServer(s, health.NewServer())
	lis := bufconn.Listen(1 << 20)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.Serve(lis)
	}()
	cc, err := grpc.NewClient("passthrough:///ingress",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		s.Stop()
		<-served
	})
	return &igServer{ing: ing, refl: refl, cc: cc}
}

func igCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// invokeRaw calls a method with raw request bytes through the raw codec.
func (s *igServer) invokeRaw(ctx context.Context, method string, req []byte) ([]byte, error) {
	var out RawMessage
	err := s.cc.Invoke(ctx, method, RawMessage(req), &out, grpc.ForceCodecV2(Codec{}))
	return out, err
}

func igMetadataString(m *cloudstatepb.Metadata) string {
	var parts []string
	for _, e := range m.GetEntries() {
		switch v := e.GetValue().(type) {
		case *cloudstatepb.MetadataEntry_StringValue:
			parts = append(parts, e.GetKey()+"="+v.StringValue)
		case *cloudstatepb.MetadataEntry_BytesValue:
			parts = append(parts, fmt.Sprintf("%s=%x", e.GetKey(), v.BytesValue))
		}
	}
	return strings.Join(parts, " ")
}

func TestIngressUnary(t *testing.T) {
	d := &igDispatcher{replyMD: &cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{
		{Key: "X-Reply", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "r"}},
		{Key: "x-reply-bin", Value: &cloudstatepb.MetadataEntry_BytesValue{BytesValue: []byte{1, 2}}},
		{Key: "bad key!", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "dropped"}},
		{Key: "grpc-status", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "13"}},
	}}}
	srv := igServe(t, ctCatalog(t), d, Limits{})
	ctx := metadata.AppendToOutgoingContext(igCtx(t), "x-custom", "v1", "x-custom", "v2", "x-trace-bin", "\x00\x01")

	var hdr metadata.MD
	req := &testpb.Request{Id: "e1", Payload: "hello"}
	resp, err := testpb.NewEventSourcedTestClient(srv.cc).Process(ctx, req, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMessage() != "e1/hello" {
		t.Fatalf("reply = %q", resp.GetMessage())
	}
	if got := hdr.Get("x-reply"); len(got) != 1 || got[0] != "r" {
		t.Errorf("x-reply header = %q", got)
	}
	if got := hdr.Get("x-reply-bin"); len(got) != 1 || got[0] != "\x01\x02" {
		t.Errorf("x-reply-bin header = %q", got)
	}
	if hdr.Get("bad key!") != nil || hdr.Get("grpc-status") != nil {
		t.Errorf("invalid reply headers passed: %v", hdr)
	}

	calls := d.recorded()
	if len(calls) != 1 {
		t.Fatalf("%d calls", len(calls))
	}
	c := calls[0]
	want, _ := proto.Marshal(req)
	if c.method != "/kstate.test.v1.EventSourcedTest/Process" || c.id != "e1" || !bytes.Equal(c.payload, want) {
		t.Fatalf("call = %+v", c)
	}
	if got := igMetadataString(c.md); got != "x-custom=v1 x-custom=v2 x-trace-bin=0001" {
		t.Fatalf("metadata = %q (transport headers must be dropped)", got)
	}
}

func TestIngressKeysAndActions(t *testing.T) {
	d := &igDispatcher{}
	srv := igServe(t, ctCatalog(t), d, Limits{})
	ctx := igCtx(t)
	if _, err := testpb.NewEventSourcedTestClient(srv.cc).Composite(ctx, &testpb.CompositeRequest{A: 7, B: "k", C: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := testpb.NewValueTestClient(srv.cc).Process(ctx, &testpb.Request{Id: "v"}); err != nil {
		t.Fatal(err)
	}
	if _, err := testpb.NewActionTestClient(srv.cc).Unary(ctx, &testpb.Request{Id: "ignored"}); err != nil {
		t.Fatal(err)
	}
	if _, err := testpb.NewKeylessTestClient(srv.cc).Process(ctx, &testpb.Keyless{Payload: "p"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range d.recorded() {
		got = append(got, c.method+"="+c.id)
	}
	want := []string{
		"/kstate.test.v1.EventSourcedTest/Composite=k-7", // declaration order b, a
		"/kstate.test.v1.ValueTest/Process=v",
		"/kstate.test.v1.ActionTest/Unary=",
		"/kstate.test.v1.KeylessTest/Process=",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	for _, c := range d.recorded() {
		if c.md != nil {
			t.Errorf("%s: metadata %v, want nil without user headers", c.method, c.md)
		}
	}
}

func TestIngressRejects(t *testing.T) {
	d := &igDispatcher{}
	srv := igServe(t, ctCatalog(t), d, Limits{MaxRecvBytes: 1024, MaxEntityIDBytes: 16})
	ctx := igCtx(t)
	enc := func(m proto.Message) []byte { b, _ := proto.Marshal(m); return b }
	for _, tc := range []struct {
		name, method string
		req          []byte
		code         codes.Code
		msg          string
	}{
		{"unknown service", "/kstate.test.v1.Nope/Process", nil, codes.Unimplemented, "unknown service kstate.test.v1.Nope"},
		{"unknown method", "/kstate.test.v1.EventSourcedTest/Nope", nil, codes.Unimplemented, "unknown method Nope of service kstate.test.v1.EventSourcedTest"},
		{"malformed name", "/nonsense", nil, codes.Unimplemented, "malformed method name"},
		{"malformed payload", "/kstate.test.v1.EventSourcedTest/Process", []byte{0x0a, 0x05, 'a'}, codes.InvalidArgument, "payload is not a valid kstate.test.v1.Request"},
		{"invalid utf8", "/kstate.test.v1.ValueTest/Process", []byte{0x0a, 0x02, 0xc3, 0x28}, codes.InvalidArgument, "kstate.test.v1.Request"},
		{"empty key", "/kstate.test.v1.EventSourcedTest/Process", enc(&testpb.Request{Payload: "x"}), codes.InvalidArgument, "entity key field(s) id of kstate.test.v1.Request are empty"},
		{"long key", "/kstate.test.v1.EventSourcedTest/Process", enc(&testpb.Request{Id: strings.Repeat("k", 17)}), codes.InvalidArgument, "17 bytes long, more than the 16 allowed"},
		{"malformed action", "/kstate.test.v1.ActionTest/Unary", []byte{0xff}, codes.InvalidArgument, "kstate.test.v1.Request"},
		{"oversize", "/kstate.test.v1.EventSourcedTest/Process", enc(&testpb.Request{Id: "e", Payload: strings.Repeat("x", 2048)}), codes.ResourceExhausted, "larger than max"},
	} {
		_, err := srv.invokeRaw(ctx, tc.method, tc.req)
		st := status.Convert(err)
		if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
	if calls := d.recorded(); len(calls) != 0 {
		t.Fatalf("rejected requests reached the dispatcher: %+v", calls)
	}
}

func TestIngressDispatcherErrors(t *testing.T) {
	d := &igDispatcher{}
	srv := igServe(t, ctCatalog(t), d, Limits{})
	client := testpb.NewEventSourcedTestClient(srv.cc)
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{&catalog.CommandFailure{Description: "boom"}, codes.Unknown, "boom"},
		{fmt.Errorf("wrapped: %w", &catalog.CommandFailure{Description: "bang", Restart: true}), codes.Unknown, "bang"},
		{fmt.Errorf("partition 3: %w", catalog.ErrNotOwner), codes.Unavailable, "partition 3: partition not owned by this node"},
		{fmt.Errorf("queue: %w", catalog.ErrOverloaded), codes.ResourceExhausted, "queue"},
		{status.Error(codes.Aborted, "as is"), codes.Aborted, "as is"},
		{fmt.Errorf("route: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "route"},
		{errors.New("bug"), codes.Internal, "bug"},
	} {
		d.mu.Lock()
		d.unaryErr = tc.err
		d.mu.Unlock()
		_, err := client.Process(igCtx(t), &testpb.Request{Id: "e"})
		st := status.Convert(err)
		if st.Code() != tc.code || st.Message() != tc.msg && !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%v: client got %v, want %v %q", tc.err, err, tc.code, tc.msg)
		}
	}

	// No reply: the call ends without a response message (Cloudstate's behaviour); headers still go.
	d.mu.Lock()
	d.unaryErr = catalog.ErrNoReply
	d.replyMD = &cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{{Key: "x-h", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "1"}}}}
	d.mu.Unlock()
	var hdr metadata.MD
	_, err := client.Process(igCtx(t), &testpb.Request{Id: "e"}, grpc.Header(&hdr))
	if err == nil {
		t.Fatal("a unary call without a reply succeeded")
	}
	if status.Code(err) == codes.Unknown || hdr.Get("x-h") == nil {
		t.Fatalf("no reply: %v, headers %v", err, hdr)
	}
}

func TestIngressStreams(t *testing.T) {
	d := &igDispatcher{}
	d.stream = func(_ context.Context, m *catalog.Method, s CommandStream) error {
		var got []string
		for {
			b, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			var req testpb.Request
			if err := proto.Unmarshal(b, &req); err != nil {
				return err
			}
			got = append(got, req.GetPayload())
			if m.ClientStreaming && m.ServerStreaming { // duplex: echo each
				b, _ := proto.Marshal(&testpb.Response{Message: "echo " + req.GetPayload()})
				if err := s.Send(b); err != nil {
					return err
				}
			}
		}
		hdr := &cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{{Key: "x-stream", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: m.Name}}}}
		if err := s.SetHeader(hdr); err != nil && !(m.ClientStreaming && m.ServerStreaming) {
			return err // a duplex call has sent its headers with its first reply: SetHeader fails then
		}
		switch {
		case m.ServerStreaming && !m.ClientStreaming:
			for i := 0; i < 3; i++ {
				b, _ := proto.Marshal(&testpb.Response{Message: fmt.Sprintf("%s %d", strings.Join(got, ","), i)})
				if err := s.Send(b); err != nil {
					return err
				}
			}
		case !m.ServerStreaming:
			b, _ := proto.Marshal(&testpb.Response{Message: strings.Join(got, ",")})
			return s.Send(b)
		}
		return nil
	}
	srv := igServe(t, ctCatalog(t), d, Limits{})
	client := testpb.NewActionTestClient(srv.cc)
	ctx := metadata.AppendToOutgoingContext(igCtx(t), "x-in", "1")

	in, err := client.StreamedIn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b", "c"} {
		if err := in.Send(&testpb.Request{Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := in.CloseAndRecv()
	if err != nil || resp.GetMessage() != "a,b,c" {
		t.Fatalf("StreamedIn = %v, %v", resp, err)
	}
	if h, _ := in.Header(); h.Get("x-stream") == nil {
		t.Errorf("StreamedIn headers = %v", h)
	}

	out, err := client.StreamedOut(ctx, &testpb.Request{Payload: "only"})
	if err != nil {
		t.Fatal(err)
	}
	var outs []string
	for {
		r, err := out.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, r.GetMessage())
	}
	if strings.Join(outs, "|") != "only 0|only 1|only 2" {
		t.Fatalf("StreamedOut = %q", outs)
	}

	duplex, err := client.Streamed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"x", "y"} {
		if err := duplex.Send(&testpb.Request{Payload: p}); err != nil {
			t.Fatal(err)
		}
		r, err := duplex.Recv()
		if err != nil || r.GetMessage() != "echo "+p {
			t.Fatalf("Streamed echo = %v, %v", r, err)
		}
	}
	if err := duplex.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := duplex.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Streamed end = %v", err)
	}

	for _, c := range d.recorded() {
		if igMetadataString(c.md) != "x-in=1" || c.id != "" {
			t.Errorf("%s: id %q metadata %q", c.method, c.id, igMetadataString(c.md))
		}
	}

	// A malformed message inside a client stream reaches the dispatcher as an InvalidArgument error.
	desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
	raw, err := srv.cc.NewStream(ctx, desc, "/kstate.test.v1.ActionTest/Streamed", grpc.ForceCodecV2(Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.SendMsg(RawMessage{0xff}); err != nil {
		t.Fatal(err)
	}
	var sink RawMessage
	if err := raw.RecvMsg(&sink); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "kstate.test.v1.Request") {
		t.Fatalf("malformed streamed message: %v", err)
	}

	// A server-streaming call without its request is rejected before the dispatcher.
	n := len(d.recorded())
	raw, err = srv.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/kstate.test.v1.ActionTest/StreamedOut", grpc.ForceCodecV2(Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := raw.RecvMsg(&sink); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("server stream without request: %v", err)
	}
	if len(d.recorded()) != n {
		t.Fatal("a server stream without its request reached the dispatcher")
	}
}

func TestIngressKeyedServerStream(t *testing.T) {
	// CRDT methods may stream to the client; the single request's key is extracted up front.
	fdp := proctest.UserFile("crdt.proto", "crdt.v1", []proctest.Field{{Name: "key", Type: descriptorpb.FieldDescriptorProto_TYPE_STRING, Key: proctest.Key1080}})
	fdp.Service[0].Method = append(fdp.Service[0].Method, &descriptorpb.MethodDescriptorProto{
		Name: proto.String("Watch"), InputType: proto.String(".crdt.v1.Cmd"), OutputType: proto.String(".google.protobuf.StringValue"),
		ServerStreaming: proto.Bool(true),
	})
	fdp.Dependency = append(fdp.Dependency, "google/protobuf/wrappers.proto")
	cat, err := catalog.BuildCatalog(proctest.UserSpec(t, catalog.ProtocolCRDT, "", fdp))
	if err != nil {
		t.Fatal(err)
	}
	d := &igDispatcher{stream: func(_ context.Context, _ *catalog.Method, s CommandStream) error {
		b, _ := proto.Marshal(wrapperspb.String("watching " + s.EntityID()))
		return s.Send(b)
	}}
	srv := igServe(t, cat, d, Limits{})
	ctx := igCtx(t)
	req := protowire.AppendString(protowire.AppendTag(nil, 100, protowire.BytesType), "presence-1")
	st, err := srv.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/crdt.v1.Svc/Watch", grpc.ForceCodecV2(Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(RawMessage(req)); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var out RawMessage
	if err := st.RecvMsg(&out); err != nil {
		t.Fatal(err)
	}
	var sv wrapperspb.StringValue
	if err := proto.Unmarshal(out, &sv); err != nil || sv.GetValue() != "watching presence-1" {
		t.Fatalf("reply = %v, %v", sv.GetValue(), err)
	}

	// An empty key is refused before the dispatcher runs.
	n := len(d.recorded())
	st, err = srv.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/crdt.v1.Svc/Watch", grpc.ForceCodecV2(Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(RawMessage{}); err != nil {
		t.Fatal(err)
	}
	if err := st.RecvMsg(&out); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "entity key field(s) key") {
		t.Fatalf("empty key: %v", err)
	}
	if len(d.recorded()) != n {
		t.Fatal("empty key reached the dispatcher")
	}
}

func TestIngressSharesServerAndSwapsCatalog(t *testing.T) {
	d := &igDispatcher{}
	srv := igServe(t, ctCatalog(t), d, Limits{})
	ctx := igCtx(t)
	// Registered services use the same forced codec's protobuf fallback.
	hc, err := healthpb.NewHealthClient(srv.cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hc, err)
	}

	// A new catalog without the value entity: its calls become Unimplemented.
	spec := proctest.Spec(t)
	spec.Entities = spec.Entities[:2]
	cat2, err := catalog.BuildCatalog(spec)
	if err != nil {
		t.Fatal(err)
	}
	srv.ing.SetCatalog(cat2)
	srv.refl.SetCatalog(cat2)
	if srv.ing.Catalog() != cat2 {
		t.Fatal("Catalog() did not return the new catalog")
	}
	_, err = testpb.NewValueTestClient(srv.cc).Process(ctx, &testpb.Request{Id: "v"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("removed service: %v", err)
	}
	if _, err := testpb.NewEventSourcedTestClient(srv.cc).Process(ctx, &testpb.Request{Id: "e"}); err != nil {
		t.Fatal(err)
	}
}

func TestLimits(t *testing.T) {
	ing := NewIngress(nil, &igDispatcher{}, Limits{MaxRecvBytes: -1})
	if got := ing.Limits(); got != DefaultLimits() {
		t.Fatalf("defaults = %+v", got)
	}
	if DefaultLimits().MaxRecvBytes != 4<<20 {
		t.Fatal("default MaxRecvBytes is not 4 MiB")
	}
	if err := (Limits{MaxSendBytes: -1}).Validate(); err == nil {
		t.Fatal("negative limit accepted")
	}
	if err := (Limits{}).Validate(); err != nil {
		t.Fatal(err)
	}
	if len(ing.ServerOptions()) != 8 {
		t.Fatal("ServerOptions")
	}
	// With no catalog every call is an unknown service.
	if _, err := ing.Resolve("/a.B/C"); status.Code(err) != codes.Unimplemented {
		t.Fatalf("Resolve without catalog = %v", err)
	}
}

// reflectClient runs one reflection request through a v1 or v1alpha stream.
type reflectClient interface {
	ask(t *testing.T, req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse
}

type reflectV1 struct {
	st grpc.BidiStreamingClient[rpb.ServerReflectionRequest, rpb.ServerReflectionResponse]
}

func (c reflectV1) ask(t *testing.T, req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
	t.Helper()
	if err := c.st.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := c.st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

type reflectV1Alpha struct {
	st grpc.BidiStreamingClient[rpbalpha.ServerReflectionRequest, rpbalpha.ServerReflectionResponse]
}

func (c reflectV1Alpha) ask(t *testing.T, req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
	t.Helper()
	in := &rpbalpha.ServerReflectionRequest{}
	if err := reencode(req, in); err != nil {
		t.Fatal(err)
	}
	if err := c.st.Send(in); err != nil {
		t.Fatal(err)
	}
	resp, err := c.st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(resp.GetOriginalRequest(), in) {
		t.Fatalf("original_request = %v, want %v", resp.GetOriginalRequest(), in)
	}
	out := &rpb.ServerReflectionResponse{}
	if err := reencode(resp, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReflection(t *testing.T) {
	srv := igServe(t, ctCatalog(t), &igDispatcher{}, Limits{})
	ctx := igCtx(t)
	v1, err := rpb.NewServerReflectionClient(srv.cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alpha, err := rpbalpha.NewServerReflectionClient(srv.cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	user := []string{proctest.Action, proctest.ES, proctest.ESTwo, proctest.Keyless, proctest.Value}
	for _, tc := range []struct {
		name   string
		c      reflectClient
		self   string
		closer func() error
	}{
		{"v1", reflectV1{v1}, "grpc.reflection.v1.ServerReflection", v1.CloseSend},
		{"v1alpha", reflectV1Alpha{alpha}, "grpc.reflection.v1alpha.ServerReflection", alpha.CloseSend},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := strings.Join(append([]string{tc.self}, user...), " ")
			// The TCK's exact expectations: the reflection service first, then the user's services
			// sorted, whatever the filter.
			for _, filter := range []string{"", "nonsense.blabla."} {
				req := &rpb.ServerReflectionRequest{Host: "localhost:9000", MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: filter}}
				resp := tc.c.ask(t, req)
				var names []string
				for _, s := range resp.GetListServicesResponse().GetService() {
					names = append(names, s.GetName())
				}
				if strings.Join(names, " ") != want {
					t.Fatalf("ListServices(%q) = %v, want %s", filter, names, want)
				}
				if resp.GetValidHost() != "localhost:9000" || !proto.Equal(resp.GetOriginalRequest(), req) {
					t.Fatalf("host/original request not echoed: %v", resp)
				}
			}

			// An unknown symbol gets an empty FileDescriptorResponse, not an error.
			for _, req := range []*rpb.ServerReflectionRequest{
				{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "nonsense.blabla.Void"}},
				{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "not a name!"}},
				{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: "nonsense.proto"}},
				{MessageRequest: &rpb.ServerReflectionRequest_FileContainingExtension{FileContainingExtension: &rpb.ExtensionRequest{ContainingType: "google.protobuf.FieldOptions", ExtensionNumber: 4242}}},
			} {
				resp := tc.c.ask(t, req)
				fdr, ok := resp.GetMessageResponse().(*rpb.ServerReflectionResponse_FileDescriptorResponse)
				if !ok || len(fdr.FileDescriptorResponse.GetFileDescriptorProto()) != 0 {
					t.Fatalf("%v: %v, want an empty FileDescriptorResponse", req, resp)
				}
			}

			// A user service resolves to its file, followed by imports not sent before.
			resp := tc.c.ask(t, &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: proctest.ES}})
			files := igFiles(t, resp)
			if len(files) == 0 || files[0].GetName() != testpb.File_testpb_test_proto.Path() {
				t.Fatalf("file containing %s = %v", proctest.ES, igNames(files))
			}
			if !igHasService(files[0], "EventSourcedTest") || !igHasName(files, "cloudstate/entity_key.proto") || !igHasName(files, "google/api/annotations.proto") {
				t.Fatalf("file containing %s: %v", proctest.ES, igNames(files))
			}
			// Asked again, the file comes alone: its imports were sent on this stream.
			resp = tc.c.ask(t, &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: proctest.Pkg + "CompositeRequest.b"}})
			if files := igFiles(t, resp); len(files) != 1 || files[0].GetName() != testpb.File_testpb_test_proto.Path() {
				t.Fatalf("second lookup = %v", igNames(files))
			}
			// Methods, by filename, and the reflection service itself (linked-in) resolve too.
			for _, req := range []*rpb.ServerReflectionRequest{
				{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: proctest.Action + ".StreamedIn"}},
				{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: "cloudstate/entity_key.proto"}},
				{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: tc.self}},
				{MessageRequest: &rpb.ServerReflectionRequest_FileContainingExtension{FileContainingExtension: &rpb.ExtensionRequest{ContainingType: "google.protobuf.FieldOptions", ExtensionNumber: 1080}}},
			} {
				if files := igFiles(t, tc.c.ask(t, req)); len(files) == 0 {
					t.Fatalf("%v: no file", req)
				}
			}
			// Extension numbers of FieldOptions include Cloudstate's key options.
			resp = tc.c.ask(t, &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_AllExtensionNumbersOfType{AllExtensionNumbersOfType: "google.protobuf.FieldOptions"}})
			nums := resp.GetAllExtensionNumbersResponse().GetExtensionNumber()
			if !igContains(nums, 1080) || !igContains(nums, 50002) || resp.GetAllExtensionNumbersResponse().GetBaseTypeName() != "google.protobuf.FieldOptions" {
				t.Fatalf("extension numbers = %v", nums)
			}
			// A request without a message gets an error response, and the stream stays usable.
			resp = tc.c.ask(t, &rpb.ServerReflectionRequest{})
			if resp.GetErrorResponse().GetErrorCode() != int32(codes.InvalidArgument) {
				t.Fatalf("empty request = %v", resp)
			}
			if err := tc.closer(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := v1.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("v1 stream end = %v", err)
	}
	if _, err := alpha.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("v1alpha stream end = %v", err)
	}
}

func TestReflectionExtraServices(t *testing.T) {
	srv := igServe(t, ctCatalog(t), &igDispatcher{}, Limits{}, "grpc.health.v1.Health", proctest.ES)
	st, err := rpb.NewServerReflectionClient(srv.cc).ServerReflectionInfo(igCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	c := reflectV1{st}
	resp := c.ask(t, &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	want := "grpc.reflection.v1.ServerReflection grpc.health.v1.Health " + strings.Join([]string{proctest.Action, proctest.ES, proctest.ESTwo, proctest.Keyless, proctest.Value}, " ")
	if strings.Join(names, " ") != want {
		t.Fatalf("ListServices = %v, want %s", names, want)
	}
	files := igFiles(t, c.ask(t, &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.Health"}}))
	if len(files) == 0 || !igHasService(files[0], "Health") {
		t.Fatalf("health file = %v", igNames(files))
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
}

func igFiles(t *testing.T, resp *rpb.ServerReflectionResponse) []*descriptorpb.FileDescriptorProto {
	t.Helper()
	var out []*descriptorpb.FileDescriptorProto
	for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fdp := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fdp); err != nil {
			t.Fatal(err)
		}
		out = append(out, fdp)
	}
	return out
}

func igNames(files []*descriptorpb.FileDescriptorProto) []string {
	var names []string
	for _, f := range files {
		names = append(names, f.GetName())
	}
	return names
}

func igHasName(files []*descriptorpb.FileDescriptorProto, name string) bool {
	for _, f := range files {
		if f.GetName() == name {
			return true
		}
	}
	return false
}

func igHasService(f *descriptorpb.FileDescriptorProto, name string) bool {
	for _, s := range f.GetService() {
		if s.GetName() == name {
			return true
		}
	}
	return false
}

func igContains(nums []int32, n int32) bool {
	for _, x := range nums {
		if x == n {
			return true
		}
	}
	return false
}

func TestMetadataConversion(t *testing.T) {
	in := metadata.MD{
		":authority":           {"x"},
		"content-type":         {"application/grpc"},
		"user-agent":           {"grpc-go"},
		"te":                   {"trailers"},
		"grpc-timeout":         {"1S"},
		"grpc-accept-encoding": {"gzip"},
		"b-key":                {"2"},
		"a-key":                {"1", "1b"},
		"auth-bin":             {"\x00\xff"},
	}
	got := MetadataFromGRPC(in)
	if s := igMetadataString(got); s != "a-key=1 a-key=1b auth-bin=00ff b-key=2" {
		t.Fatalf("MetadataFromGRPC = %q", s)
	}
	if MetadataFromGRPC(nil) != nil || MetadataFromGRPC(metadata.MD{"grpc-timeout": {"1S"}}) != nil {
		t.Fatal("empty metadata is not nil")
	}

	entry := func(k, s string) *cloudstatepb.MetadataEntry {
		return &cloudstatepb.MetadataEntry{Key: k, Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: s}}
	}
	binary := func(k string, b []byte) *cloudstatepb.MetadataEntry {
		return &cloudstatepb.MetadataEntry{Key: k, Value: &cloudstatepb.MetadataEntry_BytesValue{BytesValue: b}}
	}
	out := MetadataToGRPC(&cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{
		entry("X-Upper", "ok"),
		entry("x-multi", "1"), entry("x-multi", "2"),
		entry("x-ctl", "bad\nvalue"),     // non-printable: dropped
		entry("x-ctl-bin", "raw\nvalue"), // binary key: any bytes
		binary("x-data-bin", []byte{0, 1}),
		binary("x-data", []byte{0, 1}), // bytes under a non-binary key: dropped
		entry("", "empty key"),
		entry("grpc-message", "reserved"),
		entry(":status", "reserved"),
		entry("content-type", "reserved"),
		entry("connection", "close"),
		entry("key with space", "bad"),
		{Key: "x-none"}, // no value: dropped
	}})
	want := metadata.MD{
		"x-upper":    {"ok"},
		"x-multi":    {"1", "2"},
		"x-ctl-bin":  {"raw\nvalue"},
		"x-data-bin": {"\x00\x01"},
	}
	if fmt.Sprint(out) != fmt.Sprint(want) {
		t.Fatalf("MetadataToGRPC = %v, want %v", out, want)
	}
	if MetadataToGRPC(nil) != nil {
		t.Fatal("nil metadata gives headers")
	}
}

func TestToStatus(t *testing.T) {
	type custom struct{ error }
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{&catalog.CommandFailure{Description: "boom"}, codes.Unknown, "boom"},
		{&catalog.SpecError{Problems: []catalog.SpecProblem{{Service: "a.B", Method: "C", Problem: "no key"}}}, codes.FailedPrecondition, "invalid entity spec: a.B/C: no key"},
		{fmt.Errorf("x: %w", catalog.ErrProtocolVersion), codes.FailedPrecondition, "x: unsupported protocol version"},
		{fmt.Errorf("x: %w", catalog.ErrInvalidArgument), codes.InvalidArgument, "x: invalid argument"},
		{catalog.ErrUnknownService, codes.Unimplemented, "unknown service"},
		{catalog.ErrUnknownMethod, codes.Unimplemented, "unknown method"},
		{catalog.ErrUnknownEntity, codes.Unimplemented, "unknown entity"},
		{catalog.ErrOverloaded, codes.ResourceExhausted, "overloaded"},
		{catalog.ErrNotOwner, codes.Unavailable, "partition not owned by this node"},
		{catalog.ErrUnavailable, codes.Unavailable, "unavailable"},
		{catalog.ErrClosed, codes.Unavailable, "closed"},
		{context.DeadlineExceeded, codes.DeadlineExceeded, "context deadline exceeded"},
		{fmt.Errorf("call: %w", context.Canceled), codes.Canceled, "call: context canceled"},
		{status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied, "no"},
		{fmt.Errorf("wrapped: %w", status.Error(codes.NotFound, "gone")), codes.NotFound, "gone"},
		{custom{errors.New("plain")}, codes.Internal, "plain"},
	} {
		st := status.Convert(ToStatus(tc.err))
		if st.Code() != tc.code || st.Message() != tc.msg {
			t.Errorf("ToStatus(%v) = %v %q, want %v %q", tc.err, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
	if ToStatus(nil) != nil {
		t.Error("ToStatus(nil) != nil")
	}
	// The outcome classes carry a machine-readable reason.
	if err := ToStatus(fmt.Errorf("commit: %w", catalog.ErrOutcomeUnknown)); !HasReason(err, ReasonOutcomeUnknown) || HasReason(err, ReasonNotRun) {
		t.Errorf("outcome unknown: %v without its reason", err)
	}
	if err := ToStatus(catalog.ErrNotOwner); !HasReason(err, ReasonNotRun) {
		t.Errorf("not the owner: %v without its reason", err)
	}
	if HasReason(ToStatus(catalog.ErrInvalidArgument), ReasonNotRun) || HasReason(errors.New("x"), ReasonNotRun) {
		t.Error("a reason on an error that has none")
	}
	// A status error is returned as is, not re-wrapped.
	orig := status.Error(codes.Aborted, "a")
	if ToStatus(orig) != orig {
		t.Error("status error re-wrapped")
	}
	two := &catalog.SpecError{Problems: []catalog.SpecProblem{{Problem: "p1"}, {Service: "s", Problem: "p2"}}}
	if two.Error() != "invalid entity spec (2 problems):\n  - p1\n  - s: p2" {
		t.Errorf("SpecError.Error() = %q", two.Error())
	}
}

func TestCodec(t *testing.T) {
	c := Codec{}
	if c.Name() != "proto" {
		t.Fatal(c.Name())
	}
	raw := []byte{1, 2, 3}
	for _, v := range []any{RawMessage(raw), (*RawMessage)(&raw), raw, &raw} {
		bs, err := c.Marshal(v)
		if err != nil || !bytes.Equal(bs.Materialize(), raw) {
			t.Fatalf("Marshal(%T) = %v, %v", v, bs.Materialize(), err)
		}
	}
	var rm RawMessage
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, &rm); err != nil || !bytes.Equal(rm, raw) {
		t.Fatalf("Unmarshal(*RawMessage) = %v, %v", rm, err)
	}
	var b []byte
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, &b); err != nil || !bytes.Equal(b, raw) {
		t.Fatalf("Unmarshal(*[]byte) = %v, %v", b, err)
	}
	// proto.Message values fall back to protobuf.
	bs, err := c.Marshal(&testpb.Request{Id: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var req testpb.Request
	if err := c.Unmarshal(bs, &req); err != nil || req.GetId() != "x" {
		t.Fatalf("proto round trip = %v, %v", &req, err)
	}
	if _, err := c.Marshal(42); err == nil {
		t.Fatal("Marshal(int) succeeded")
	}
}
