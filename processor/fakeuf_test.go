package processor

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/proctest"
	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
)

// fakeUF is a recording user function, in the role of the Cloudstate TCK's interceptor plus model:
// every stream kstate opens is handed to the test, which reads exactly what kstate sent and
// decides every reply.
type fakeUF struct {
	cloudstatepb.UnimplementedEntityDiscoveryServer

	spec         *cloudstatepb.EntitySpec
	streams      chan *fakeStream
	valueStreams chan *ufValueStream
	crdtStreams  chan *ufCrdtStream
	actions      chan *actionCall
	errors       chan string
	addr         string

	mu  sync.Mutex
	all []interface{ pending() int }
}

// bidiStream is one bidirectional entity stream as the user function sees it: every message
// kstate sends arrives on in; the test's replies go out through out.
type bidiStream[I, O any] struct {
	in     chan *I
	out    chan *O
	closed chan struct{} // the proxy closed its side (or the stream broke)
	end    chan struct{} // test asks the function to end the stream
}

type (
	fakeStream    = bidiStream[eventsourcedpb.EventSourcedStreamIn, eventsourcedpb.EventSourcedStreamOut]
	ufValueStream = bidiStream[valueentitypb.ValueEntityStreamIn, valueentitypb.ValueEntityStreamOut]
	ufCrdtStream  = bidiStream[crdtpb.CrdtStreamIn, crdtpb.CrdtStreamOut]
)

func (fs *bidiStream[I, O]) pending() int { return len(fs.in) }

// serveBidi records a stream's messages and sends the test's replies until either side ends.
func serveBidi[I, O any](uf *fakeUF, stream grpc.BidiStreamingServer[I, O], announce chan *bidiStream[I, O]) error {
	fs := &bidiStream[I, O]{
		in:     make(chan *I, 64),
		out:    make(chan *O, 64),
		closed: make(chan struct{}),
		end:    make(chan struct{}),
	}
	uf.mu.Lock()
	uf.all = append(uf.all, fs)
	uf.mu.Unlock()
	announce <- fs
	go func() {
		defer close(fs.closed)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			fs.in <- m
		}
	}()
	for {
		select {
		case m := <-fs.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-fs.closed:
			return nil
		case <-fs.end:
			return io.EOF
		}
	}
}

// actionCall is one ActionProtocol call: every ActionCommand kstate sent (in order) and, for a
// unary or streamed-in call, the test's one response.
type actionCall struct {
	method string // "unary", "in", "out", "duplex"
	cmds   chan *actionpb.ActionCommand
	out    chan *actionpb.ActionResponse
	done   chan struct{} // the call ended on kstate's side
}

func startFakeUF(t *testing.T, entities ...*cloudstatepb.Entity) *fakeUF {
	t.Helper()
	uf := &fakeUF{
		spec: &cloudstatepb.EntitySpec{
			Proto:    proctest.DescriptorSet([]protoreflect.FileDescriptor{testpb.File_testpb_test_proto}),
			Entities: entities,
			ServiceInfo: &cloudstatepb.ServiceInfo{
				ServiceName: "fake", SupportLibraryName: "kstate-test",
				ProtocolMajorVersion: 0, ProtocolMinorVersion: 2,
			},
		},
		streams:      make(chan *fakeStream, 16),
		valueStreams: make(chan *ufValueStream, 16),
		crdtStreams:  make(chan *ufCrdtStream, 16),
		actions:      make(chan *actionCall, 16),
		errors:       make(chan string, 16),
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	cloudstatepb.RegisterEntityDiscoveryServer(s, uf)
	eventsourcedpb.RegisterEventSourcedServer(s, esServer{uf: uf})
	valueentitypb.RegisterValueEntityServer(s, valueServer{uf: uf})
	crdtpb.RegisterCrdtServer(s, crdtServer{uf: uf})
	actionpb.RegisterActionProtocolServer(s, actionServer{uf: uf})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	uf.addr = lis.Addr().String()
	return uf
}

func (uf *fakeUF) Discover(_ context.Context, info *cloudstatepb.ProxyInfo) (*cloudstatepb.EntitySpec, error) {
	return uf.spec, nil
}

func (uf *fakeUF) ReportError(_ context.Context, e *cloudstatepb.UserFunctionError) (*emptypb.Empty, error) {
	uf.errors <- e.GetMessage()
	return &emptypb.Empty{}, nil
}

// esServer and valueServer serve the two entity protocols (both name their method Handle).
type esServer struct {
	eventsourcedpb.UnimplementedEventSourcedServer
	uf *fakeUF
}

func (s esServer) Handle(stream eventsourcedpb.EventSourced_HandleServer) error {
	return serveBidi(s.uf, stream, s.uf.streams)
}

type valueServer struct {
	valueentitypb.UnimplementedValueEntityServer
	uf *fakeUF
}

func (s valueServer) Handle(stream valueentitypb.ValueEntity_HandleServer) error {
	return serveBidi(s.uf, stream, s.uf.valueStreams)
}

type crdtServer struct {
	crdtpb.UnimplementedCrdtServer
	uf *fakeUF
}

func (s crdtServer) Handle(stream crdtpb.Crdt_HandleServer) error {
	return serveBidi(s.uf, stream, s.uf.crdtStreams)
}

// nextCrdt waits for kstate to open a new CRDT stream.
func (uf *fakeUF) nextCrdt(t *testing.T) *ufCrdtStream {
	t.Helper()
	select {
	case fs := <-uf.crdtStreams:
		return fs
	case <-time.After(10 * time.Second):
		t.Fatal("no CRDT stream opened")
		return nil
	}
}

// next waits for kstate to open a new stream.
func (uf *fakeUF) next(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case fs := <-uf.streams:
		return fs
	case <-time.After(10 * time.Second):
		t.Fatal("kstate opened no entity stream within 10s")
		return nil
	}
}

// noMoreInteractions is the TCK's verifyNoMoreInteractions: no new stream or call and no message
// on any stream within a short quiet period.
func (uf *fakeUF) noMoreInteractions(t *testing.T) {
	t.Helper()
	quiet := time.NewTimer(50 * time.Millisecond)
	defer quiet.Stop()
	uf.mu.Lock()
	streams := append([]interface{ pending() int }(nil), uf.all...)
	uf.mu.Unlock()
	select {
	case fs := <-uf.streams:
		t.Fatalf("stray event-sourced stream opened: %v", fs)
	case vs := <-uf.valueStreams:
		t.Fatalf("stray value entity stream opened: %v", vs)
	case cs := <-uf.crdtStreams:
		t.Fatalf("stray CRDT stream opened: %v", cs)
	case a := <-uf.actions:
		t.Fatalf("stray action call: %s", a.method)
	case <-quiet.C:
	}
	for i, fs := range streams {
		if n := fs.pending(); n > 0 {
			t.Fatalf("%d stray message(s) on stream %d", n, i)
		}
	}
}

// nextValue waits for kstate to open a new value entity stream.
func (uf *fakeUF) nextValue(t *testing.T) *ufValueStream {
	t.Helper()
	select {
	case vs := <-uf.valueStreams:
		return vs
	case <-time.After(10 * time.Second):
		t.Fatal("kstate opened no value entity stream within 10s")
		return nil
	}
}

// recv returns the next message kstate sent on the stream.
func (fs *bidiStream[I, O]) recv(t *testing.T) *I {
	t.Helper()
	select {
	case m := <-fs.in:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("kstate sent nothing within 10s")
		return nil
	}
}

func (fs *bidiStream[I, O]) send(m *O) { fs.out <- m }

// waitClosed waits until kstate closes the stream.
func (fs *bidiStream[I, O]) waitClosed(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-fs.closed:
	case <-time.After(within):
		t.Fatalf("stream still open after %v", within)
	}
}

// actionServer records ActionProtocol calls and answers with what the test sends on call.out.
type actionServer struct {
	actionpb.UnimplementedActionProtocolServer
	uf *fakeUF
}

func (s actionServer) call(method string) *actionCall {
	c := &actionCall{
		method: method,
		cmds:   make(chan *actionpb.ActionCommand, 64),
		out:    make(chan *actionpb.ActionResponse, 64),
		done:   make(chan struct{}),
	}
	s.uf.actions <- c
	return c
}

func (s actionServer) HandleUnary(ctx context.Context, cmd *actionpb.ActionCommand) (*actionpb.ActionResponse, error) {
	c := s.call("unary")
	defer close(c.done)
	c.cmds <- cmd
	select {
	case r := <-c.out:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s actionServer) HandleStreamedIn(stream grpc.ClientStreamingServer[actionpb.ActionCommand, actionpb.ActionResponse]) error {
	c := s.call("in")
	defer close(c.done)
	for {
		cmd, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		c.cmds <- cmd
	}
	select {
	case r := <-c.out:
		return stream.SendAndClose(r)
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

func (s actionServer) HandleStreamedOut(cmd *actionpb.ActionCommand, stream grpc.ServerStreamingServer[actionpb.ActionResponse]) error {
	c := s.call("out")
	defer close(c.done)
	c.cmds <- cmd
	for {
		select {
		case r, ok := <-c.out:
			if !ok {
				return nil
			}
			if err := stream.Send(r); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (s actionServer) HandleStreamed(stream grpc.BidiStreamingServer[actionpb.ActionCommand, actionpb.ActionResponse]) error {
	c := s.call("duplex")
	defer close(c.done)
	recvDone := make(chan error, 1)
	go func() {
		for {
			cmd, err := stream.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			c.cmds <- cmd
		}
	}()
	for {
		select {
		case r, ok := <-c.out:
			if !ok {
				return nil
			}
			if err := stream.Send(r); err != nil {
				return err
			}
		case err := <-recvDone:
			if err != io.EOF {
				return err
			}
			recvDone = nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// nextAction waits for kstate to call the action protocol.
func (uf *fakeUF) nextAction(t *testing.T, method string) *actionCall {
	t.Helper()
	select {
	case c := <-uf.actions:
		if c.method != method {
			t.Fatalf("action call %s, want %s", c.method, method)
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("kstate made no %s action call within 10s", method)
		return nil
	}
}

func (c *actionCall) recv(t *testing.T) *actionpb.ActionCommand {
	t.Helper()
	select {
	case m := <-c.cmds:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no action command within 10s")
		return nil
	}
}
