package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	"github.com/kstatehq/kstate/sdk"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testService = "kstate.test.v1.EventSourcedTest"
	twoService  = "kstate.test.v1.EventSourcedTwo"
)

// testEntity interprets Request.payload as space-separated actions:
//
//	emit:X        emit Event{X}
//	forward:X     forward Request{X} to EventSourcedTwo/Call
//	effect:X      asynchronous side effect Request{X} to EventSourcedTwo/Call
//	synceffect:X  synchronous side effect
//	fail:X        ctx.Fail(X) and carry on
//	error:X       return errors.New(X)
//	panic:X       panic(X)
//	meta:K        reply with the metadata value of K
//	emitwrong     emit a message that has no event handler
//	forwardwrong  forward a Response (wrong input type) to EventSourcedTwo/Call
//	nilreply      return a nil reply
//
// Unless told otherwise it replies Response{message: the state's payloads joined by ","}.
func testEntity() *sdk.EventSourcedEntity[*testpb.State] {
	e := sdk.NewEventSourced(testService, func(string) *testpb.State { return &testpb.State{} }).
		PersistenceID("test-entity").
		SnapshotEvery(5).
		Passivation(30 * time.Second)
	sdk.Command(e, "Process", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		var reply *testpb.Response
		forwarded := false
		for _, action := range strings.Fields(in.GetPayload()) {
			verb, arg, _ := strings.Cut(action, ":")
			switch verb {
			case "emit":
				if err := ctx.Emit(&testpb.Event{Payload: arg}); err != nil {
					return nil, err
				}
			case "forward":
				if err := ctx.Forward(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: arg}); err != nil {
					return nil, err
				}
				forwarded = true
			case "effect", "synceffect":
				if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: arg}, verb == "synceffect"); err != nil {
					return nil, err
				}
			case "fail":
				_ = ctx.Fail("%s", arg)
			case "error":
				return nil, errors.New(arg)
			case "panic":
				panic(arg)
			case "meta":
				reply = &testpb.Response{Message: ctx.Metadata().Get(arg)}
			case "emitwrong":
				_ = ctx.Emit(&testpb.Response{Message: "no handler"})
			case "forwardwrong":
				_ = ctx.Forward(twoService, "Call", &testpb.Response{})
			case "nilreply":
				return nil, nil
			}
		}
		if forwarded {
			return reply, nil
		}
		if reply == nil {
			reply = &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}
		}
		return reply, nil
	})
	sdk.Command(e, "Composite", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.CompositeRequest) (*testpb.Response, error) {
		return &testpb.Response{Message: ctx.EntityID()}, nil
	})
	sdk.Event(e, func(s *testpb.State, ev *testpb.Event) *testpb.State {
		s.Payloads = append(s.Payloads, ev.GetPayload())
		return s
	})
	return e
}

// twoEntity is a second entity with default settings.
func twoEntity() *sdk.EventSourcedEntity[*testpb.State] {
	e := sdk.NewEventSourced[*testpb.State](twoService, nil)
	sdk.Command(e, "Call", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		return &testpb.Response{Message: "two:" + in.GetPayload()}, nil
	})
	return e
}

// proxy is the test's side of the protocol: a gRPC client of a Server served over bufconn.
type proxy struct {
	t         *testing.T
	discovery cloudstatepb.EntityDiscoveryClient
	es        eventsourcedpb.EventSourcedClient
	ve        valueentitypb.ValueEntityClient
	action    actionpb.ActionProtocolClient
	conn      *grpc.ClientConn
	logs      *syncBuffer
	cancel    context.CancelFunc
	served    chan error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newProxy(t *testing.T, entities ...sdk.Entity) *proxy {
	t.Helper()
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	srv := sdk.NewServer(sdk.WithLogger(log), sdk.WithServiceInfo("sdk-test", "1.2.3"), sdk.WithShutdownTimeout(5*time.Second))
	if err := srv.Register(entities...); err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	p := &proxy{t: t, logs: logs, cancel: cancel, served: make(chan error, 1)}
	go func() { p.served <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.discovery = cloudstatepb.NewEntityDiscoveryClient(conn)
	p.es = eventsourcedpb.NewEventSourcedClient(conn)
	p.ve = valueentitypb.NewValueEntityClient(conn)
	p.action = actionpb.NewActionProtocolClient(conn)
	p.conn = conn
	t.Cleanup(func() {
		_ = conn.Close()
		p.stop()
	})
	return p
}

// stop shuts the server down and waits for Serve to return nil.
func (p *proxy) stop() {
	p.t.Helper()
	p.cancel()
	if err := <-p.served; err != nil {
		p.t.Errorf("Serve: %v", err)
	}
	p.served <- nil // later calls return at once
}

type esStream struct {
	t *testing.T
	s eventsourcedpb.EventSourced_HandleClient
}

func (p *proxy) open() *esStream {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p.t.Cleanup(cancel)
	s, err := p.es.Handle(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	return &esStream{t: p.t, s: s}
}

func (s *esStream) send(in *eventsourcedpb.EventSourcedStreamIn) {
	s.t.Helper()
	if err := s.s.Send(in); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

func (s *esStream) init(service, id string, snap *eventsourcedpb.EventSourcedSnapshot) {
	s.t.Helper()
	s.send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Init{
		Init: &eventsourcedpb.EventSourcedInit{ServiceName: service, EntityId: id, Snapshot: snap},
	}})
}

func (s *esStream) event(seq int64, payload string) {
	s.t.Helper()
	s.send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Event{
		Event: &eventsourcedpb.EventSourcedEvent{Sequence: seq, Payload: mustAny(s.t, &testpb.Event{Payload: payload})},
	}})
}

func (s *esStream) recv() *eventsourcedpb.EventSourcedStreamOut {
	s.t.Helper()
	out, err := s.s.Recv()
	if err != nil {
		s.t.Fatalf("recv: %v", err)
	}
	return out
}

// command sends a command and returns its reply; the next message on the stream must be it.
func (s *esStream) command(id int64, name string, msg proto.Message, md ...*cloudstatepb.MetadataEntry) *eventsourcedpb.EventSourcedReply {
	s.t.Helper()
	cmd := &cloudstatepb.Command{EntityId: "e1", Id: id, Name: name, Payload: mustAny(s.t, msg)}
	if len(md) > 0 {
		cmd.Metadata = &cloudstatepb.Metadata{Entries: md}
	}
	return s.rawCommand(cmd)
}

func (s *esStream) rawCommand(cmd *cloudstatepb.Command) *eventsourcedpb.EventSourcedReply {
	s.t.Helper()
	s.send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{Command: cmd}})
	out := s.recv()
	r := out.GetReply()
	if r == nil {
		s.t.Fatalf("command %d: got %v, want a reply", cmd.GetId(), out)
	}
	if r.GetCommandId() != cmd.GetId() {
		s.t.Fatalf("reply for command %d, want %d", r.GetCommandId(), cmd.GetId())
	}
	if r.GetSnapshot() != nil && len(r.GetEvents()) == 0 {
		s.t.Fatalf("command %d: snapshot without events", cmd.GetId())
	}
	return r
}

func (s *esStream) process(id int64, payload string) *eventsourcedpb.EventSourcedReply {
	s.t.Helper()
	return s.command(id, "Process", &testpb.Request{Id: "e1", Payload: payload})
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func decode(t *testing.T, a *anypb.Any) proto.Message {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func replyMessage(t *testing.T, r *eventsourcedpb.EventSourcedReply) string {
	t.Helper()
	rep := r.GetClientAction().GetReply()
	if rep == nil {
		t.Fatalf("command %d: client action %v, want a reply", r.GetCommandId(), r.GetClientAction())
	}
	if want := "type.googleapis.com/kstate.test.v1.Response"; rep.GetPayload().GetTypeUrl() != want {
		t.Fatalf("reply type %q, want %q", rep.GetPayload().GetTypeUrl(), want)
	}
	return decode(t, rep.GetPayload()).(*testpb.Response).GetMessage()
}

func eventPayloads(t *testing.T, r *eventsourcedpb.EventSourcedReply) []string {
	t.Helper()
	var ps []string
	for _, a := range r.GetEvents() {
		if want := "type.googleapis.com/kstate.test.v1.Event"; a.GetTypeUrl() != want {
			t.Fatalf("event type %q, want %q", a.GetTypeUrl(), want)
		}
		ps = append(ps, decode(t, a).(*testpb.Event).GetPayload())
	}
	return ps
}

func wantFailure(t *testing.T, r *eventsourcedpb.EventSourcedReply, description string, restart bool) {
	t.Helper()
	f := r.GetClientAction().GetFailure()
	if f == nil {
		t.Fatalf("command %d: client action %v, want a failure", r.GetCommandId(), r.GetClientAction())
	}
	if f.GetCommandId() != r.GetCommandId() || !strings.Contains(f.GetDescription(), description) || f.GetRestart() != restart {
		t.Fatalf("failure %v, want command %d, description containing %q, restart %v", f, r.GetCommandId(), description, restart)
	}
	if len(r.GetEvents()) != 0 || len(r.GetSideEffects()) != 0 || r.GetSnapshot() != nil {
		t.Fatalf("failure reply carries events %v, side effects %v, snapshot %v", r.GetEvents(), r.GetSideEffects(), r.GetSnapshot())
	}
}

func TestDiscovery(t *testing.T) {
	p := newProxy(t, testEntity(), twoEntity())
	spec, err := p.discovery.Discover(context.Background(), &cloudstatepb.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2, ProxyName: "test-proxy", ProxyVersion: "0.0.1",
		SupportedEntityTypes: []string{sdk.EntityTypeAction, sdk.EntityTypeValue, sdk.EntityTypeEventSourced, sdk.EntityTypeCRDT},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []*cloudstatepb.Entity{
		{
			EntityType: "cloudstate.eventsourced.EventSourced", ServiceName: testService, PersistenceId: "test-entity",
			PassivationStrategy: &cloudstatepb.EntityPassivationStrategy{Strategy: &cloudstatepb.EntityPassivationStrategy_Timeout{
				Timeout: &cloudstatepb.TimeoutPassivationStrategy{Timeout: 30000},
			}},
		},
		{EntityType: "cloudstate.eventsourced.EventSourced", ServiceName: twoService, PersistenceId: "EventSourcedTwo"},
	}
	if len(spec.GetEntities()) != len(want) {
		t.Fatalf("entities %v, want %v", spec.GetEntities(), want)
	}
	for i := range want {
		if !proto.Equal(spec.GetEntities()[i], want[i]) {
			t.Errorf("entity %d: %v, want %v", i, spec.GetEntities()[i], want[i])
		}
	}
	si := spec.GetServiceInfo()
	if si.GetServiceName() != "sdk-test" || si.GetServiceVersion() != "1.2.3" || !strings.HasPrefix(si.GetServiceRuntime(), "go1.") ||
		si.GetSupportLibraryName() != "kstate-go-sdk" || si.GetSupportLibraryVersion() == "" ||
		si.GetProtocolMajorVersion() != 0 || si.GetProtocolMinorVersion() != 2 {
		t.Errorf("service info %v", si)
	}

	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	// Dependency order and no duplicates: every file's imports come before it.
	seen := map[string]bool{}
	for _, f := range set.GetFile() {
		if seen[f.GetName()] {
			t.Errorf("%s is in the set twice", f.GetName())
		}
		for _, dep := range f.GetDependency() {
			if !seen[dep] {
				t.Errorf("%s comes before its import %s", f.GetName(), dep)
			}
		}
		seen[f.GetName()] = true
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("the descriptor set does not resolve: %v", err)
	}
	for _, name := range []string{testService, twoService, "kstate.test.v1.Event", "kstate.test.v1.State", "google.api.http", "cloudstate.entity_key"} {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err != nil {
			t.Errorf("%s is not in the descriptor set: %v", name, err)
		}
	}
	d, _ := files.FindDescriptorByName(testService)
	if m := d.(protoreflect.ServiceDescriptor).Methods().ByName("Process"); m == nil || m.Input().FullName() != "kstate.test.v1.Request" {
		t.Errorf("Process in the set: %v", m)
	}

	// A proxy of another major version is answered, with a warning in the log.
	if _, err := p.discovery.Discover(context.Background(), &cloudstatepb.ProxyInfo{ProtocolMajorVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.logs.String(), "another major protocol version") {
		t.Errorf("no version warning in the log:\n%s", p.logs)
	}
}

func TestReportErrorIsLogged(t *testing.T) {
	p := newProxy(t, testEntity())
	if _, err := p.discovery.ReportError(context.Background(), &cloudstatepb.UserFunctionError{Message: "forward target kstate.nope/Call does not exist"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.logs.String(), "forward target kstate.nope/Call does not exist") {
		t.Fatalf("the reported error is not in the log:\n%s", p.logs)
	}
}

func TestInitWithoutSnapshotThenCommands(t *testing.T) {
	p := newProxy(t, testEntity(), twoEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	r := s.process(1, "emit:a emit:b")
	if got := eventPayloads(t, r); strings.Join(got, ",") != "a,b" {
		t.Fatalf("events %v", got)
	}
	if got := replyMessage(t, r); got != "a,b" {
		t.Fatalf("reply %q: later State calls in a command must see its events", got)
	}
	if r.GetSnapshot() != nil || len(r.GetSideEffects()) != 0 {
		t.Fatalf("unexpected snapshot or side effects: %v", r)
	}
	r = s.process(2, "")
	if got := replyMessage(t, r); got != "a,b" || len(r.GetEvents()) != 0 {
		t.Fatalf("reply %q, events %v", got, r.GetEvents())
	}
	// Commands of the second method, and entity ids from init.
	r = s.command(3, "Composite", &testpb.CompositeRequest{A: 1, B: "x"})
	if got := replyMessage(t, r); got != "e1" {
		t.Fatalf("Composite reply %q", got)
	}
}

func TestInitWithSnapshotAndReplay(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", &eventsourcedpb.EventSourcedSnapshot{
		SnapshotSequence: 5,
		Snapshot:         mustAny(t, &testpb.State{Payloads: []string{"1", "2", "3", "4", "5"}}),
	})
	s.event(6, "6")
	s.event(7, "7")
	// The first message back is the reply to command 1: init and events get no answer.
	r := s.process(1, "emit:8 emit:9")
	if got := replyMessage(t, r); got != "1,2,3,4,5,6,7,8,9" {
		t.Fatalf("reply %q", got)
	}
	if r.GetSnapshot() != nil {
		t.Fatal("snapshot before crossing 10")
	}
	r = s.process(2, "emit:10")
	if r.GetSnapshot() == nil {
		t.Fatal("no snapshot on reaching sequence 10")
	}
	snap := decode(t, r.GetSnapshot()).(*testpb.State)
	if got := strings.Join(snap.GetPayloads(), ","); got != "1,2,3,4,5,6,7,8,9,10" {
		t.Fatalf("snapshot %q", got)
	}
}

func TestSnapshotOnCrossingEveryFive(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	for i := int64(1); i <= 11; i++ {
		r := s.process(i, "emit:"+string(rune('a'+i-1)))
		if got, want := r.GetSnapshot() != nil, i == 5 || i == 10; got != want {
			t.Fatalf("event %d: snapshot %v, want %v", i, got, want)
		}
		if r.GetSnapshot() != nil {
			if got := len(decode(t, r.GetSnapshot()).(*testpb.State).GetPayloads()); int64(got) != i {
				t.Fatalf("snapshot at %d holds %d events", i, got)
			}
		}
	}
	// 11 → 14: no multiple of 5 crossed. 14 → 17 crosses 15: one snapshot with all three events.
	if r := s.process(12, "emit:x emit:y emit:z"); r.GetSnapshot() != nil {
		t.Fatal("snapshot at 14")
	}
	r := s.process(13, "emit:x emit:y emit:z")
	if r.GetSnapshot() == nil || len(decode(t, r.GetSnapshot()).(*testpb.State).GetPayloads()) != 17 {
		t.Fatalf("snapshot after crossing 15: %v", r.GetSnapshot())
	}
	// A command without events never snapshots, even at a multiple.
	if r := s.process(14, ""); r.GetSnapshot() != nil {
		t.Fatal("snapshot without events")
	}
}

func TestForward(t *testing.T) {
	p := newProxy(t, testEntity(), twoEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	r := s.process(1, "emit:a forward:hello")
	fw := r.GetClientAction().GetForward()
	if fw == nil {
		t.Fatalf("client action %v, want forward", r.GetClientAction())
	}
	if fw.GetServiceName() != twoService || fw.GetCommandName() != "Call" ||
		fw.GetPayload().GetTypeUrl() != "type.googleapis.com/kstate.test.v1.Request" ||
		decode(t, fw.GetPayload()).(*testpb.Request).GetPayload() != "hello" {
		t.Fatalf("forward %v", fw)
	}
	if got := eventPayloads(t, r); len(got) != 1 || got[0] != "a" {
		t.Fatalf("forward with events: %v", got)
	}
	// Forwarding twice, forwarding the wrong type, and forwarding while replying are failures.
	wantFailure(t, s.process(2, "forward:x forward:y"), "already forwarded", false)
	wantFailure(t, s.process(3, "forwardwrong"), "input type is kstate.test.v1.Request", false)
	wantFailure(t, s.process(4, "forward:x meta:k"), "both forwarded", false)
	if got := replyMessage(t, s.process(5, "")); got != "a" {
		t.Fatalf("state %q after failed forwards", got)
	}
}

func TestSideEffects(t *testing.T) {
	p := newProxy(t, testEntity(), twoEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	r := s.process(1, "effect:one emit:a synceffect:two emit:b emit:c emit:d emit:e")
	if got := replyMessage(t, r); got != "a,b,c,d,e" {
		t.Fatalf("reply %q", got)
	}
	effects := r.GetSideEffects()
	if len(effects) != 2 {
		t.Fatalf("side effects %v", effects)
	}
	for i, want := range []struct {
		payload string
		sync    bool
	}{{"one", false}, {"two", true}} {
		se := effects[i]
		if se.GetServiceName() != twoService || se.GetCommandName() != "Call" || se.GetSynchronous() != want.sync ||
			decode(t, se.GetPayload()).(*testpb.Request).GetPayload() != want.payload {
			t.Errorf("side effect %d: %v", i, se)
		}
	}
	if r.GetSnapshot() == nil {
		t.Fatal("side effects plus events plus snapshot: no snapshot")
	}
	// Failures drop side effects.
	wantFailure(t, s.process(2, "effect:x fail:nope"), "nope", false)
}

func TestFailureDropsEventsAndKeepsStream(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	s.process(1, "emit:a")
	wantFailure(t, s.process(2, "emit:b emit:c fail:boom"), "boom", false)
	wantFailure(t, s.process(3, "emit:b error:plain error"), "plain", false)
	wantFailure(t, s.process(4, "emit:b emitwrong"), "no event handler", false)
	// The stream goes on, with the state from before the failed commands and the sequence too:
	// four more events reach 5 and snapshot.
	r := s.process(5, "emit:2 emit:3 emit:4 emit:5")
	if got := replyMessage(t, r); got != "a,2,3,4,5" {
		t.Fatalf("state after failures %q", got)
	}
	if r.GetSnapshot() == nil {
		t.Fatal("failed commands moved the sequence")
	}
}

func TestPanicFailsWithRestart(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	s.process(1, "emit:a")
	r := s.process(2, "emit:b panic:kaboom")
	wantFailure(t, r, "unexpected failure in command Process", true)
	if strings.Contains(r.GetClientAction().GetFailure().GetDescription(), "kaboom") {
		t.Error("the panic value leaked into the client's description")
	}
	if !strings.Contains(p.logs.String(), "kaboom") {
		t.Errorf("the panic is not logged:\n%s", p.logs)
	}
}

func TestUnknownCommandAndBadPayload(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	wantFailure(t, s.command(1, "Nope", &testpb.Request{}), `unknown command "Nope"`, false)
	wantFailure(t, s.command(2, "Process", &testpb.Response{}), "expects a payload of type", false)
	wantFailure(t, s.rawCommand(&cloudstatepb.Command{Id: 3, Name: "Process", Payload: &anypb.Any{
		TypeUrl: "type.googleapis.com/kstate.test.v1.Request", Value: []byte{0xff},
	}}), "does not decode", false)
	if got := replyMessage(t, s.process(4, "emit:ok")); got != "ok" {
		t.Fatalf("after failures: %q", got)
	}
}

func TestMetadataAndNilReply(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	r := s.command(1, "Process", &testpb.Request{Payload: "meta:x-user"},
		&cloudstatepb.MetadataEntry{Key: "X-User", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "alice"}})
	if got := replyMessage(t, r); got != "alice" {
		t.Fatalf("metadata value %q", got)
	}
	r = s.process(2, "nilreply")
	if got := replyMessage(t, r); got != "" {
		t.Fatalf("nil reply: %q", got)
	}
}

func TestStreamFailures(t *testing.T) {
	p := newProxy(t, testEntity())
	for name, tc := range map[string]struct {
		send func(s *esStream)
		want string
	}{
		"command before init": {
			send: func(s *esStream) {
				s.send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{
					Command: &cloudstatepb.Command{Id: 1, Name: "Process"},
				}})
			},
			want: "first message must be init",
		},
		"event before init": {send: func(s *esStream) { s.event(1, "a") }, want: "first message must be init"},
		"unknown service":   {send: func(s *esStream) { s.init("kstate.test.v1.Nope", "e1", nil) }, want: "kstate.test.v1.Nope"},
		"second init": {
			send: func(s *esStream) { s.init(testService, "e1", nil); s.init(testService, "e1", nil) },
			want: "second init",
		},
		"unknown event type": {
			send: func(s *esStream) {
				s.init(testService, "e1", nil)
				s.send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Event{
					Event: &eventsourcedpb.EventSourcedEvent{Sequence: 1, Payload: mustAny(t, &testpb.Response{})},
				}})
			},
			want: "no event handler",
		},
		"unknown snapshot type": {
			send: func(s *esStream) {
				s.init(testService, "e1", &eventsourcedpb.EventSourcedSnapshot{SnapshotSequence: 3, Snapshot: mustAny(t, &testpb.Response{})})
			},
			want: "unknown snapshot type",
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := p.open()
			s.t = t
			tc.send(s)
			out := s.recv()
			f := out.GetFailure()
			if f == nil || !strings.Contains(f.GetDescription(), tc.want) {
				t.Fatalf("got %v, want a stream failure containing %q", out, tc.want)
			}
			_, err := s.s.Recv()
			if status.Code(err) == codes.OK {
				t.Fatalf("stream continued after a failure: %v", err)
			}
		})
	}
}

func TestStreamEndsWhenProxyCloses(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	s.process(1, "emit:a")
	if err := s.s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
}

func TestServeShutsDownOpenStreams(t *testing.T) {
	p := newProxy(t, testEntity())
	s := p.open()
	s.init(testService, "e1", nil)
	s.process(1, "emit:a")
	p.stop() // must not wait for the proxy to close the stream
	if _, err := s.s.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("open stream after shutdown: %v, want UNAVAILABLE", err)
	}
}

func TestRegisterValidation(t *testing.T) {
	missing := sdk.NewEventSourced[*testpb.State](testService, nil)
	sdk.Command(missing, "Process", func(*sdk.CommandContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })

	wrongTypes := sdk.NewEventSourced[*testpb.State](twoService, nil)
	sdk.Command(wrongTypes, "Call", func(*sdk.CommandContext[*testpb.State], *testpb.CompositeRequest) (*testpb.State, error) {
		return nil, nil
	})

	unknownMethod := sdk.NewEventSourced[*testpb.State](twoService, nil)
	sdk.Command(unknownMethod, "Call", func(*sdk.CommandContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })
	sdk.Command(unknownMethod, "Cal", func(*sdk.CommandContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })

	duplicate := twoEntity()
	sdk.Command(duplicate, "Call", func(*sdk.CommandContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })
	sdk.Event(duplicate, func(s *testpb.State, _ *testpb.Event) *testpb.State { return s })
	sdk.Event(duplicate, func(s *testpb.State, _ *testpb.Event) *testpb.State { return s })

	streaming := sdk.NewEventSourced[*testpb.State]("kstate.test.v1.ActionTest", nil)
	for _, m := range []string{"Unary", "StreamedIn", "StreamedOut", "Streamed"} {
		sdk.Command(streaming, m, func(*sdk.CommandContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })
	}

	interfaceState := sdk.NewEventSourced[proto.Message](twoService, nil)
	sdk.Command(interfaceState, "Call", func(*sdk.CommandContext[proto.Message], *testpb.Request) (*testpb.Response, error) { return nil, nil })

	for name, tc := range map[string]struct {
		entity sdk.Entity
		is     error
		want   []string
	}{
		"unknown service": {sdk.NewEventSourced[*testpb.State]("kstate.test.v1.Nope", nil), sdk.ErrServiceNotFound, []string{"kstate.test.v1.Nope"}},
		"not a service":   {sdk.NewEventSourced[*testpb.State]("kstate.test.v1.Request", nil), sdk.ErrServiceNotFound, []string{"not a service"}},
		"missing handler": {missing, sdk.ErrMissingHandler, []string{"method Composite", "testpb.CompositeRequest", "testpb.Response"}},
		"wrong types": {wrongTypes, sdk.ErrTypeMismatch, []string{
			"method Call", "input type is kstate.test.v1.Request, the handler takes kstate.test.v1.CompositeRequest",
			"output type is kstate.test.v1.Response, the handler returns kstate.test.v1.State",
		}},
		"unknown method":  {unknownMethod, sdk.ErrMethodNotFound, []string{"method Cal:", "methods are Call"}},
		"duplicates":      {duplicate, sdk.ErrDuplicate, []string{"command handler", "event handler for kstate.test.v1.Event"}},
		"streaming":       {streaming, sdk.ErrStreamingMethod, []string{"method StreamedIn", "method StreamedOut", "method Streamed:"}},
		"interface state": {interfaceState, sdk.ErrInvalidType, []string{"state type", "interface type"}},
		"nil entity":      {nil, nil, []string{"entity 1 of 1 is nil"}},
	} {
		t.Run(name, func(t *testing.T) {
			srv := sdk.NewServer()
			err := srv.Register(tc.entity)
			if err == nil {
				t.Fatal("Register succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if tc.is != nil {
				var de *sdk.DefinitionError
				if !errors.As(err, &de) || de.Service == "" {
					t.Errorf("error %v is not a *DefinitionError naming the service", err)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	// The same service twice, in one call or two; a failed Register adds nothing.
	srv := sdk.NewServer()
	if err := srv.Register(twoEntity(), twoEntity()); !errors.Is(err, sdk.ErrDuplicate) {
		t.Fatalf("same service twice in one call: %v", err)
	}
	if err := srv.Register(twoEntity()); err != nil {
		t.Fatalf("after a failed Register: %v", err)
	}
	if err := srv.Register(twoEntity()); !errors.Is(err, sdk.ErrDuplicate) {
		t.Fatalf("same service in a second call: %v", err)
	}
}

func TestRegisterCopiesTheDefinition(t *testing.T) {
	e := twoEntity().PersistenceID("before")
	srv := sdk.NewServer()
	if err := srv.Register(e); err != nil {
		t.Fatal(err)
	}
	e.PersistenceID("after")
	sdk.Command(e, "Nope", func(*sdk.CommandContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })
	sess := srv.NewEventSourcedSession(context.Background())
	if _, err := sess.Step(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Init{
		Init: &eventsourcedpb.EventSourcedInit{ServiceName: twoService, EntityId: "x"},
	}}); err != nil {
		t.Fatal(err)
	}
	if sess.ServiceName() != twoService || sess.EntityID() != "x" || sess.Sequence() != 0 {
		t.Fatalf("session %s %q at %d", sess.ServiceName(), sess.EntityID(), sess.Sequence())
	}
}

func TestUserFunctionAddress(t *testing.T) {
	t.Setenv(sdk.EnvUserFunctionHost, "")
	t.Setenv(sdk.EnvUserFunctionPort, "")
	if got := sdk.UserFunctionAddress(); got != "127.0.0.1:8080" {
		t.Fatalf("default %q", got)
	}
	t.Setenv(sdk.EnvUserFunctionHost, "::1")
	t.Setenv(sdk.EnvUserFunctionPort, "8090")
	if got := sdk.UserFunctionAddress(); got != "[::1]:8090" {
		t.Fatalf("from env %q", got)
	}
}

func TestConcurrentStreams(t *testing.T) {
	p := newProxy(t, testEntity(), twoEntity())
	const streams, commands = 8, 20
	var wg sync.WaitGroup
	errs := make(chan string, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := p.es.Handle(ctx)
			if err != nil {
				errs <- err.Error()
				return
			}
			id := string(rune('a' + i))
			_ = s.Send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Init{
				Init: &eventsourcedpb.EventSourcedInit{ServiceName: testService, EntityId: id},
			}})
			for c := int64(1); c <= commands; c++ {
				a, _ := anypb.New(&testpb.Request{Id: id, Payload: "emit:" + id})
				_ = s.Send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{
					Command: &cloudstatepb.Command{EntityId: id, Id: c, Name: "Process", Payload: a},
				}})
				out, err := s.Recv()
				if err != nil {
					errs <- err.Error()
					return
				}
				if got, want := out.GetReply().GetSnapshot() != nil, c%5 == 0; got != want || out.GetReply().GetCommandId() != c {
					errs <- "unexpected reply " + out.String()
					return
				}
			}
			_ = s.CloseSend()
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
