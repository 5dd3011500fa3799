package grpccall_test

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

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/internal/grpccall"
	"github.com/kstatehq/kstate/internal/testpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eventSourced answers Process with "processed <id>: <payload>" (plus " by <x-user>" when that
// header is set), and fails with FailedPrecondition when the payload is "fail".
type eventSourced struct {
	testpb.UnimplementedEventSourcedTestServer
}

func (eventSourced) Process(ctx context.Context, req *testpb.Request) (*testpb.Response, error) {
	if req.GetPayload() == "fail" {
		return nil, status.Errorf(codes.FailedPrecondition, "cart %s is closed", req.GetId())
	}
	msg := "processed " + req.GetId() + ": " + req.GetPayload()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("x-user"); len(v) > 0 {
			msg += " by " + strings.Join(v, ",")
		}
	}
	return &testpb.Response{Message: msg}, nil
}

func (eventSourced) Composite(_ context.Context, req *testpb.CompositeRequest) (*testpb.Response, error) {
	return &testpb.Response{Message: fmt.Sprintf("%s-%d-%v", req.GetB(), req.GetA(), req.GetC())}, nil
}

// action implements the four shapes. StreamedOut sends one Response per word of the payload; the
// word "wait" sends nothing and blocks until release is closed, the word "fail" ends the stream
// with Aborted.
type action struct {
	testpb.UnimplementedActionTestServer
	release chan struct{}
}

func (action) Unary(context.Context, *testpb.Request) (*testpb.Response, error) {
	return &testpb.Response{}, nil
}

func (a action) StreamedOut(req *testpb.Request, stream grpc.ServerStreamingServer[testpb.Response]) error {
	for _, w := range strings.Fields(req.GetPayload()) {
		switch w {
		case "wait":
			select {
			case <-a.release:
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		case "fail":
			return status.Error(codes.Aborted, "stream broke")
		default:
			if err := stream.Send(&testpb.Response{Message: w}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (action) StreamedIn(stream grpc.ClientStreamingServer[testpb.Request, testpb.Response]) error {
	var got []string
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testpb.Response{Message: strings.Join(got, ",")})
		}
		if err != nil {
			return err
		}
		got = append(got, req.GetPayload())
	}
}

func (action) Streamed(stream grpc.BidiStreamingServer[testpb.Request, testpb.Response]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.Response{Message: "echo " + req.GetPayload()}); err != nil {
			return err
		}
	}
}

type reflectionKind int

const (
	reflectV1AndAlpha reflectionKind = iota
	reflectAlphaOnly
	reflectNone
)

// serve starts a real gRPC server on a loopback port with the test services and returns a
// connection to it. Both are closed when the test ends.
func serve(t *testing.T, kind reflectionKind, act action) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterEventSourcedTestServer(srv, eventSourced{})
	testpb.RegisterActionTestServer(srv, act)
	switch kind {
	case reflectV1AndAlpha:
		reflection.Register(srv)
	case reflectAlphaOnly:
		rpbalpha.RegisterServerReflectionServer(srv, reflection.NewServer(reflection.ServerOptions{Services: srv}))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-done
	})
	return conn
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, conn *grpc.ClientConn) *grpccall.Client {
	t.Helper()
	c, err := grpccall.New(testCtx(t), conn)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func call(t *testing.T, c *grpccall.Client, method, req string, md metadata.MD) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := c.Call(testCtx(t), method, []byte(req), md, &out)
	return out.String(), err
}

func TestServices(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	want := []string{
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
		"kstate.test.v1.ActionTest",
		"kstate.test.v1.EventSourcedTest",
	}
	if got := c.Services(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Services() = %v, want %v", got, want)
	}
}

func TestCallUnary(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	out, err := call(t, c, "kstate.test.v1.EventSourcedTest/Process", `{"id": "c1", "payload": "hello"}`,
		metadata.Pairs("x-user", "ann"))
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"message\": \"processed c1: hello by ann\"\n}\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}

	// Metadata already in ctx is kept alongside md.
	var buf bytes.Buffer
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-user", "bob")
	if err := c.Call(ctx, "kstate.test.v1.EventSourcedTest/Process", []byte(`{"id":"c2"}`), metadata.Pairs("x-user", "cy"), &buf); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"message\": \"processed c2:  by bob,cy\"\n}\n"; buf.String() != want {
		t.Fatalf("output %q, want %q", buf.String(), want)
	}
}

func TestCallMethodForms(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	for _, m := range []string{
		"kstate.test.v1.EventSourcedTest/Process",
		"/kstate.test.v1.EventSourcedTest/Process",
		"kstate.test.v1.EventSourcedTest.Process",
	} {
		out, err := call(t, c, m, `{"id":"x","payload":"p"}`, nil)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if !strings.Contains(out, `"processed x: p"`) {
			t.Fatalf("%s: output %q", m, out)
		}
	}
}

func TestCallDefaultsAndEmptyReply(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	// An empty request means {}; an empty reply prints {} (unpopulated fields are omitted).
	for _, req := range []string{"", "  \n", "{}"} {
		out, err := call(t, c, "kstate.test.v1.ActionTest/Unary", req, nil)
		if err != nil {
			t.Fatalf("request %q: %v", req, err)
		}
		if out != "{}\n" {
			t.Fatalf("request %q: output %q, want {}", req, out)
		}
	}
	// int64 fields take strings or numbers, as protojson does; enum-free bools too.
	for _, req := range []string{`{"a": "9007199254740993", "b": "k", "c": true}`, `{"a": 9007199254740993, "b": "k", "c": true}`} {
		out, err := call(t, c, "kstate.test.v1.EventSourcedTest/Composite", req, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := "{\n  \"message\": \"k-9007199254740993-true\"\n}\n"; out != want {
			t.Fatalf("output %q, want %q", out, want)
		}
	}
}

func TestCallBadJSON(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	for _, tc := range []struct {
		req  string
		want string // part of protojson's (or the scanner's) message
	}{
		{`{"id": 5}`, `invalid value for string field id: 5`},
		{`{"nope": 1}`, `unknown field "nope"`},
		{`{"id": "a"`, `unexpected EOF`},
		{`{"id":"a"} {"id":"b"}`, `2 JSON values given, but Process is not client-streaming`},
	} {
		out, err := call(t, c, "kstate.test.v1.EventSourcedTest/Process", tc.req, nil)
		var rerr *grpccall.RequestError
		if !errors.As(err, &rerr) || !errors.Is(err, grpccall.ErrBadRequest) {
			t.Fatalf("%s: error %v (%T), want *RequestError", tc.req, err, err)
		}
		if rerr.Type != "kstate.test.v1.Request" {
			t.Errorf("%s: Type = %s", tc.req, rerr.Type)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "request does not fit kstate.test.v1.Request: ") || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: error %q, want it to name the type and contain %q", tc.req, msg, tc.want)
		}
		if out != "" {
			t.Errorf("%s: output %q, want none", tc.req, out)
		}
	}
}

func TestUnknownServiceAndMethod(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))

	_, err := call(t, c, "kstate.test.v1.Nope/Process", `{}`, nil)
	var lerr *grpccall.LookupError
	if !errors.As(err, &lerr) || !errors.Is(err, grpccall.ErrUnknownService) {
		t.Fatalf("error %v (%T), want *LookupError(ErrUnknownService)", err, err)
	}
	want := `unknown service "kstate.test.v1.Nope"; available services:
  grpc.reflection.v1.ServerReflection
  grpc.reflection.v1alpha.ServerReflection
  kstate.test.v1.ActionTest
  kstate.test.v1.EventSourcedTest`
	if err.Error() != want {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}

	// A message's name is not a service.
	if _, err := call(t, c, "kstate.test.v1.Request/Process", `{}`, nil); !errors.Is(err, grpccall.ErrUnknownService) {
		t.Fatalf("message as service: error %v, want ErrUnknownService", err)
	}

	_, err = call(t, c, "kstate.test.v1.EventSourcedTest/Proces", `{}`, nil)
	if !errors.As(err, &lerr) || !errors.Is(err, grpccall.ErrUnknownMethod) {
		t.Fatalf("error %v (%T), want *LookupError(ErrUnknownMethod)", err, err)
	}
	want = `unknown method "kstate.test.v1.EventSourcedTest/Proces"; available methods:
  Composite
  Process`
	if err.Error() != want {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}

	for _, bad := range []string{"Process", "/Process", "kstate.test.v1.EventSourcedTest/", "a/b/c", ""} {
		if _, err := call(t, c, bad, `{}`, nil); !errors.Is(err, grpccall.ErrMethodName) {
			t.Errorf("%q: error %v, want ErrMethodName", bad, err)
		}
	}
}

func TestServerError(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	out, err := call(t, c, "kstate.test.v1.EventSourcedTest/Process", `{"id":"c1","payload":"fail"}`, nil)
	var rerr *grpccall.RPCError
	if !errors.As(err, &rerr) {
		t.Fatalf("error %v (%T), want *RPCError", err, err)
	}
	if rerr.Code() != codes.FailedPrecondition || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v, want FailedPrecondition", rerr.Code())
	}
	if err.Error() != "FailedPrecondition: cart c1 is closed" {
		t.Fatalf("error %q", err)
	}
	if out != "" {
		t.Fatalf("output %q, want none", out)
	}

}

// syncWriter records writes and closes first after the first one.
type syncWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	first chan struct{}
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return w.buf.Write(p)
}

func TestServerStreaming(t *testing.T) {
	release := make(chan struct{})
	c := newClient(t, serve(t, reflectV1AndAlpha, action{release: release}))

	// The server sends "one" and then waits until the client has printed it: the test only ends
	// if replies are written as they arrive.
	w := &syncWriter{first: make(chan struct{})}
	go func() {
		<-w.first
		close(release)
	}()
	err := c.Call(testCtx(t), "kstate.test.v1.ActionTest/StreamedOut", []byte(`{"payload":"one wait two"}`), nil, w)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"message\": \"one\"\n}\n{\n  \"message\": \"two\"\n}\n"
	if got := w.buf.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}

	// An error after some replies: the replies are printed, then the status is returned.
	out, err := call(t, c, "kstate.test.v1.ActionTest/StreamedOut", `{"payload":"a b fail c"}`, nil)
	if status.Code(err) != codes.Aborted || err.Error() != "Aborted: stream broke" {
		t.Fatalf("error %v, want Aborted: stream broke", err)
	}
	if want := "{\n  \"message\": \"a\"\n}\n{\n  \"message\": \"b\"\n}\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}

	// An empty stream prints nothing.
	if out, err := call(t, c, "kstate.test.v1.ActionTest/StreamedOut", `{}`, nil); err != nil || out != "" {
		t.Fatalf("empty stream: output %q, error %v", out, err)
	}
}

// cancelWriter records writes and cancels a context on the first one.
type cancelWriter struct {
	bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.cancel()
	return w.Buffer.Write(p)
}

func TestCancelMidStream(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{release: make(chan struct{})}))
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	w := &cancelWriter{cancel: cancel}
	err := c.Call(ctx, "kstate.test.v1.ActionTest/StreamedOut", []byte(`{"payload":"x wait y"}`), nil, w)
	var rerr *grpccall.RPCError
	if !errors.As(err, &rerr) || rerr.Code() != codes.Canceled {
		t.Fatalf("error %v (%T), want *RPCError Canceled", err, err)
	}
	if want := "{\n  \"message\": \"x\"\n}\n"; w.String() != want {
		t.Fatalf("output %q, want %q", w.String(), want)
	}
}

func TestClientAndBidiStreaming(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	out, err := call(t, c, "kstate.test.v1.ActionTest/StreamedIn", `{"payload":"a"}
{"payload":"b"} {"payload":"c"}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"message\": \"a,b,c\"\n}\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}

	out, err = call(t, c, "kstate.test.v1.ActionTest/Streamed", `{"payload":"x"}{"payload":"y"}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"message\": \"echo x\"\n}\n{\n  \"message\": \"echo y\"\n}\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}

	// The second message is bad: nothing is sent.
	_, err = call(t, c, "kstate.test.v1.ActionTest/StreamedIn", `{"payload":"a"} {"id":1}`, nil)
	if !errors.Is(err, grpccall.ErrBadRequest) || !strings.Contains(err.Error(), "message 2: ") {
		t.Fatalf("error %v, want a bad message 2", err)
	}
}

func TestV1AlphaFallback(t *testing.T) {
	c := newClient(t, serve(t, reflectAlphaOnly, action{}))
	if got := c.Services(); !strings.Contains(fmt.Sprint(got), "kstate.test.v1.EventSourcedTest") {
		t.Fatalf("Services() = %v", got)
	}
	out, err := call(t, c, "kstate.test.v1.EventSourcedTest/Process", `{"id":"c1","payload":"p"}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"message\": \"processed c1: p\"\n}\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

func TestNoReflection(t *testing.T) {
	conn := serve(t, reflectNone, action{})
	_, err := grpccall.New(testCtx(t), conn)
	if !errors.Is(err, grpccall.ErrNoReflection) {
		t.Fatalf("error %v, want ErrNoReflection", err)
	}
}

func TestUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // nothing listens there now
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_, err = grpccall.New(testCtx(t), conn)
	var rerr *grpccall.RPCError
	if !errors.As(err, &rerr) || rerr.Code() != codes.Unavailable {
		t.Fatalf("error %v (%T), want *RPCError Unavailable", err, err)
	}
}

func TestPrivateRegistry(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	sd, err := c.Service(testCtx(t), "kstate.test.v1.EventSourcedTest")
	if err != nil {
		t.Fatal(err)
	}
	linked := testpb.File_testpb_test_proto.Services().ByName("EventSourcedTest")
	if sd == linked {
		t.Fatal("Service returned the linked-in descriptor; want one built from reflection")
	}
	if sd.FullName() != linked.FullName() || sd.Methods().Len() != linked.Methods().Len() {
		t.Fatalf("descriptor %v differs from the linked one", sd.FullName())
	}
	// Its imports were resolved too: the entity key option's file and google/api's.
	imports := sd.ParentFile().Imports()
	var names []string
	for i := range imports.Len() {
		names = append(names, imports.Get(i).Path())
	}
	if got := fmt.Sprint(names); got != "[cloudstate/entity_key.proto google/api/annotations.proto]" {
		t.Fatalf("imports %s", got)
	}
	if imports.Get(0).IsPlaceholder() || imports.Get(1).IsPlaceholder() {
		t.Fatal("an import is a placeholder")
	}
}

func TestConcurrentCalls(t *testing.T) {
	c := newClient(t, serve(t, reflectV1AndAlpha, action{}))
	methods := []string{
		"kstate.test.v1.EventSourcedTest/Process",
		"kstate.test.v1.ActionTest/Unary",
		"grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	}
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for i := range 12 {
		wg.Go(func() {
			m := methods[i%len(methods)]
			req := `{}`
			if strings.Contains(m, "Reflection") {
				req = `{"listServices": "*"}`
			}
			var out bytes.Buffer
			if err := c.Call(testCtx(t), m, []byte(req), nil, &out); err != nil {
				errs <- fmt.Errorf("%s: %w", m, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestParseMethod(t *testing.T) {
	for _, tc := range []struct{ in, svc, m string }{
		{"a.B/C", "a.B", "C"},
		{"/a.B/C", "a.B", "C"},
		{"a.B.C", "a.B", "C"},
		{"B/C", "B", "C"},
		{"com.example.shoppingcart.ShoppingCart/AddItem", "com.example.shoppingcart.ShoppingCart", "AddItem"},
	} {
		svc, m, err := grpccall.ParseMethod(tc.in)
		if err != nil || svc != tc.svc || m != tc.m {
			t.Errorf("ParseMethod(%q) = %q, %q, %v; want %q, %q", tc.in, svc, m, err, tc.svc, tc.m)
		}
	}
	for _, bad := range []string{"", "C", "/C", "a.B/", "a..B/C", "a.B/C.D", "a/B/C", "a.B/C-D"} {
		if _, _, err := grpccall.ParseMethod(bad); !errors.Is(err, grpccall.ErrMethodName) {
			t.Errorf("ParseMethod(%q): error %v, want ErrMethodName", bad, err)
		}
	}
}
