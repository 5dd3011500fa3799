package processor

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
)

// fakeUF is a recording user function, in the role of the Cloudstate TCK's interceptor plus model:
// every stream kstate opens is handed to the test, which reads exactly what kstate sent and
// decides every reply.
type fakeUF struct {
	cloudstatepb.UnimplementedEntityDiscoveryServer
	eventsourcedpb.UnimplementedEventSourcedServer

	spec    *cloudstatepb.EntitySpec
	streams chan *fakeStream
	errors  chan string
	addr    string

	mu  sync.Mutex
	all []*fakeStream
}

// fakeStream is one EventSourced.handle stream as the user function sees it.
type fakeStream struct {
	in     chan *eventsourcedpb.EventSourcedStreamIn
	out    chan *eventsourcedpb.EventSourcedStreamOut
	closed chan struct{} // the proxy closed its side (or the stream broke)
	end    chan struct{} // test asks the function to end the stream
}

func startFakeUF(t *testing.T, entities ...*cloudstatepb.Entity) *fakeUF {
	t.Helper()
	uf := &fakeUF{
		spec: &cloudstatepb.EntitySpec{
			Proto:    descriptorSet(testpb.File_testpb_test_proto),
			Entities: entities,
			ServiceInfo: &cloudstatepb.ServiceInfo{
				ServiceName: "fake", SupportLibraryName: "kstate-test",
				ProtocolMajorVersion: 0, ProtocolMinorVersion: 2,
			},
		},
		streams: make(chan *fakeStream, 16),
		errors:  make(chan string, 16),
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	cloudstatepb.RegisterEntityDiscoveryServer(s, uf)
	eventsourcedpb.RegisterEventSourcedServer(s, uf)
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

func (uf *fakeUF) Handle(stream eventsourcedpb.EventSourced_HandleServer) error {
	fs := &fakeStream{
		in:     make(chan *eventsourcedpb.EventSourcedStreamIn, 64),
		out:    make(chan *eventsourcedpb.EventSourcedStreamOut, 64),
		closed: make(chan struct{}),
		end:    make(chan struct{}),
	}
	uf.mu.Lock()
	uf.all = append(uf.all, fs)
	uf.mu.Unlock()
	uf.streams <- fs
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

// noMoreInteractions is the TCK's verifyNoMoreInteractions: no new stream and no message on any
// stream within a short quiet period.
func (uf *fakeUF) noMoreInteractions(t *testing.T) {
	t.Helper()
	quiet := time.NewTimer(50 * time.Millisecond)
	defer quiet.Stop()
	uf.mu.Lock()
	streams := append([]*fakeStream(nil), uf.all...)
	uf.mu.Unlock()
	for {
		select {
		case fs := <-uf.streams:
			t.Fatalf("stray stream opened: %v", fs)
		case <-quiet.C:
			for i, fs := range streams {
				select {
				case m := <-fs.in:
					t.Fatalf("stray message on stream %d: %v", i, m)
				default:
				}
			}
			return
		}
	}
}

// recv returns the next message kstate sent on the stream.
func (fs *fakeStream) recv(t *testing.T) *eventsourcedpb.EventSourcedStreamIn {
	t.Helper()
	select {
	case m := <-fs.in:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("kstate sent nothing within 10s")
		return nil
	}
}

func (fs *fakeStream) send(m *eventsourcedpb.EventSourcedStreamOut) { fs.out <- m }

// waitClosed waits until kstate closes the stream.
func (fs *fakeStream) waitClosed(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-fs.closed:
	case <-time.After(within):
		t.Fatalf("stream still open after %v", within)
	}
}

// descriptorSet returns f and its transitive imports, dependencies first, as Cloudstate's
// EntitySpec.proto carries them.
func descriptorSet(f protoreflect.FileDescriptor) []byte {
	var files []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var walk func(protoreflect.FileDescriptor)
	walk = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imps := f.Imports()
		for i := 0; i < imps.Len(); i++ {
			walk(imps.Get(i).FileDescriptor)
		}
		files = append(files, protodesc.ToFileDescriptorProto(f))
	}
	walk(f)
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		panic(err)
	}
	return b
}
