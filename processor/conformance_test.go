package processor

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

const (
	esService  = "kstate.test.v1.EventSourcedTest"
	esTwo      = "kstate.test.v1.EventSourcedTwo"
	esEntity   = "cloudstate.eventsourced.EventSourced"
	testPID    = "es-test"
	testTwoPID = "es-two"
)

func esEntities(passivation time.Duration) []*cloudstatepb.Entity {
	var strat *cloudstatepb.EntityPassivationStrategy
	if passivation > 0 {
		strat = &cloudstatepb.EntityPassivationStrategy{Strategy: &cloudstatepb.EntityPassivationStrategy_Timeout{
			Timeout: &cloudstatepb.TimeoutPassivationStrategy{Timeout: passivation.Milliseconds()},
		}}
	}
	return []*cloudstatepb.Entity{
		{EntityType: esEntity, ServiceName: esService, PersistenceId: testPID, PassivationStrategy: strat},
		{EntityType: esEntity, ServiceName: esTwo, PersistenceId: testTwoPID, PassivationStrategy: strat},
	}
}

var nodeCounter atomic.Int32

// testConfig is the configuration of a test node on kfake: a fresh data dir, any free port,
// 4 partitions.
func testConfig(t *testing.T, brokers []string, app, ufAddr string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = "n-" + app + "-" + strconv.Itoa(int(nodeCounter.Add(1)))
	cfg.DataDir = t.TempDir()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.UserFunction = ufAddr
	cfg.Broker.Brokers = brokers
	cfg.Broker.App = app
	cfg.Broker.Partitions = 4
	cfg.Logger = testLogger(t)
	return cfg
}

// startNode builds and starts a node (closed when t ends); the error is Start's.
func startNode(t *testing.T, cfg Config) (*Node, error) {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n, n.Start(ctx)
}

// testNode starts one kstate node on kfake against the given user function and waits until it
// serves every partition.
func testNode(t *testing.T, brokers []string, app, ufAddr string) (*Node, *grpc.ClientConn) {
	t.Helper()
	n, err := startNode(t, testConfig(t, brokers, app, ufAddr))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	waitServing(t, cc)
	return n, cc
}

func waitServing(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	hc := healthpb.NewHealthClient(cc)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
	t.Fatal("node not SERVING within 30s")
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func replyOut(id int64, reply proto.Message, events []*anypb.Any, snapshot *anypb.Any) *eventsourcedpb.EventSourcedStreamOut {
	a, _ := anypb.New(reply)
	return &eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
		CommandId:    id,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: a}}},
		Events:       events,
		Snapshot:     snapshot,
	}}}
}

func event(t *testing.T, s string) *anypb.Any { return anyOf(t, &testpb.Event{Payload: s}) }

// call runs EventSourcedTest/Process asynchronously and returns a channel with its outcome.
func call(cc *grpc.ClientConn, id, payload string) chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := testpb.NewEventSourcedTestClient(cc).Process(ctx, &testpb.Request{Id: id, Payload: payload})
		ch <- callResult{r, err}
	}()
	return ch
}

type callResult struct {
	resp *testpb.Response
	err  error
}

func wait(t *testing.T, ch chan callResult) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(25 * time.Second):
		t.Fatal("call did not finish")
		return callResult{}
	}
}

func expectInit(t *testing.T, fs *fakeStream, service, id string) *eventsourcedpb.EventSourcedInit {
	t.Helper()
	m := fs.recv(t)
	init := m.GetInit()
	if init == nil {
		t.Fatalf("first message is not init: %v", m)
	}
	if init.GetServiceName() != service || init.GetEntityId() != id {
		t.Fatalf("init for %s/%s, want %s/%s", init.GetServiceName(), init.GetEntityId(), service, id)
	}
	return init
}

func expectCommand(t *testing.T, fs *fakeStream, id int64, name string) *cloudstatepb.Command {
	t.Helper()
	m := fs.recv(t)
	c := m.GetCommand()
	if c == nil {
		t.Fatalf("want command %d, got %v", id, m)
	}
	if c.GetId() != id || c.GetName() != name {
		t.Fatalf("command id %d name %q, want %d %q", c.GetId(), c.GetName(), id, name)
	}
	return c
}

// journal reads the committed events of a persistence id from Kafka, partition by partition.
func journal(t *testing.T, n *Node, pid string) []broker.Record {
	t.Helper()
	var recs []broker.Record
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for p := int32(0); p < n.cfg.Broker.Partitions; p++ {
		parts := []broker.TopicPartitionFrom{{Topic: n.cfg.Broker.EventsTopic(pid), Partition: p}}
		if _, err := broker.ReadToEnd(ctx, n.cfg.Broker, parts, func(r broker.Record) error {
			recs = append(recs, r)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return recs
}

// waitJournal polls (bounded) until the journal holds an event of entity id.
func waitJournal(t *testing.T, n *Node, pid, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, r := range journal(t, n, pid) {
			if string(r.Key) == id {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no committed event of %s in the journal", id)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}
}

func seqOf(t *testing.T, r broker.Record) int64 {
	v, ok := r.HeaderValue(kstatev1.HeaderSequence)
	if !ok {
		t.Fatalf("record without %s header", kstatev1.HeaderSequence)
	}
	s, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEventSourcedConformance(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "conf"), uf.addr)

	t.Run("init with empty state, events and snapshots", func(t *testing.T) {
		ch := call(cc, "cart-1", "a")
		fs := uf.next(t)
		init := expectInit(t, fs, esService, "cart-1")
		if init.GetSnapshot() != nil {
			t.Fatalf("init carries a snapshot for a new entity: %v", init)
		}
		c := expectCommand(t, fs, 1, "Process")
		var req testpb.Request
		if err := c.GetPayload().UnmarshalTo(&req); err != nil || req.GetId() != "cart-1" {
			t.Fatalf("payload %v: %v", c.GetPayload(), err)
		}
		// Snapshot every 5: events 1..4 in one reply, 5..6 with a snapshot crossing 5.
		fs.send(replyOut(1, &testpb.Response{Message: "ok1"}, []*anypb.Any{event(t, "e1"), event(t, "e2"), event(t, "e3"), event(t, "e4")}, nil))
		if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "ok1" {
			t.Fatalf("reply %v %v", r.resp, r.err)
		}
		ch = call(cc, "cart-1", "b")
		expectCommand(t, fs, 2, "Process")
		fs.send(replyOut(2, &testpb.Response{Message: "ok2"}, []*anypb.Any{event(t, "e5"), event(t, "e6")}, anyOf(t, &testpb.State{Payloads: []string{"snap@6"}})))
		if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "ok2" {
			t.Fatalf("reply %v %v", r.resp, r.err)
		}
		var seqs []int64
		deadline := time.Now().Add(5 * time.Second) // markers may trail EndTxn: poll, bounded
		for len(seqs) < 6 && time.Now().Before(deadline) {
			seqs = seqs[:0]
			for _, r := range journal(t, n, testPID) {
				if string(r.Key) == "cart-1" {
					seqs = append(seqs, seqOf(t, r))
				}
			}
			if len(seqs) < 6 {
				time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
			}
		}
		if len(seqs) != 6 {
			t.Fatalf("journal sequences %v, want 1..6", seqs)
		}
		for i, s := range seqs {
			if s != int64(i+1) {
				t.Fatalf("journal sequences %v, want 1..6", seqs)
			}
		}
		uf.noMoreInteractions(t)
	})

	t.Run("failure without restart keeps the stream and drops events", func(t *testing.T) {
		ch := call(cc, "cart-2", "x")
		fs := uf.next(t)
		expectInit(t, fs, esService, "cart-2")
		expectCommand(t, fs, 1, "Process")
		fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
			CommandId:    1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{CommandId: 1, Description: "boom"}}},
			Events:       []*anypb.Any{event(t, "dropped")},
		}}})
		r := wait(t, ch)
		if st := status.Convert(r.err); st.Code() != codes.Unknown || st.Message() != "boom" {
			t.Fatalf("failure surfaced as %v, want UNKNOWN boom", r.err)
		}
		ch = call(cc, "cart-2", "y")
		expectCommand(t, fs, 2, "Process") // same stream, next id
		fs.send(replyOut(2, &testpb.Response{Message: "fine"}, nil, nil))
		if r := wait(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
		for _, r := range journal(t, n, testPID) {
			if string(r.Key) == "cart-2" {
				t.Fatalf("a failed command's event reached the journal: %v", r)
			}
		}
		uf.noMoreInteractions(t)
	})

	t.Run("failure with restart reopens the stream with persisted events only", func(t *testing.T) {
		ch := call(cc, "cart-3", "1")
		fs := uf.next(t)
		expectInit(t, fs, esService, "cart-3")
		expectCommand(t, fs, 1, "Process")
		fs.send(replyOut(1, &testpb.Response{Message: "ok"}, []*anypb.Any{event(t, "e1"), event(t, "e2"), event(t, "e3")}, nil))
		wait(t, ch)
		ch = call(cc, "cart-3", "2")
		expectCommand(t, fs, 2, "Process")
		fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
			CommandId:    2,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{CommandId: 2, Description: "restart me", Restart: true}}},
			Events:       []*anypb.Any{event(t, "e4")},
		}}})
		if r := wait(t, ch); status.Code(r.err) != codes.Unknown {
			t.Fatalf("got %v", r.err)
		}
		fs.waitClosed(t, 5*time.Second)
		ch = call(cc, "cart-3", "3")
		fs2 := uf.next(t)
		expectInit(t, fs2, esService, "cart-3")
		for i := int64(1); i <= 3; i++ {
			ev := fs2.recv(t).GetEvent()
			var e testpb.Event
			if ev == nil || ev.GetSequence() != i || ev.GetPayload().UnmarshalTo(&e) != nil || e.GetPayload() != "e"+strconv.Itoa(int(i)) {
				t.Fatalf("replayed event %d: %v", i, ev)
			}
		}
		expectCommand(t, fs2, 1, "Process")
		fs2.send(replyOut(1, &testpb.Response{Message: "after"}, nil, nil))
		if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "after" {
			t.Fatalf("%v %v", r.resp, r.err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("forward answers with the target's reply", func(t *testing.T) {
		ch := call(cc, "cart-4", "fwd")
		fs := uf.next(t)
		expectInit(t, fs, esService, "cart-4")
		expectCommand(t, fs, 1, "Process")
		fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
			CommandId: 1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: &cloudstatepb.Forward{
				ServiceName: esTwo, CommandName: "Call", Payload: anyOf(t, &testpb.Request{Id: "other", Payload: "p"}),
			}}},
		}}})
		two := uf.next(t)
		expectInit(t, two, esTwo, "other")
		expectCommand(t, two, 1, "Call")
		two.send(replyOut(1, &testpb.Response{Message: "from two"}, nil, nil))
		if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "from two" {
			t.Fatalf("%v %v", r.resp, r.err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("side effects run after persistence", func(t *testing.T) {
		ch := call(cc, "cart-5", "se")
		fs := uf.next(t)
		expectInit(t, fs, esService, "cart-5")
		expectCommand(t, fs, 1, "Process")
		a, _ := anypb.New(&testpb.Response{Message: "done"})
		fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
			CommandId:    1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: a}}},
			SideEffects: []*cloudstatepb.SideEffect{{
				ServiceName: esTwo, CommandName: "Call", Payload: anyOf(t, &testpb.Request{Id: "effect"}), Synchronous: true,
			}},
			Events: []*anypb.Any{event(t, "before-effect")},
		}}})
		two := uf.next(t)
		expectInit(t, two, esTwo, "effect")
		expectCommand(t, two, 1, "Call")
		// The side effect arrived: the event it follows must already be committed. (Polled,
		// bounded: a broker writes a committed transaction's markers right after EndTxn
		// returns, so read_committed readers may see it a moment later.)
		waitJournal(t, n, testPID, "cart-5")
		select {
		case r := <-ch:
			t.Fatalf("replied before the synchronous side effect finished: %v", r)
		default:
		}
		two.send(replyOut(1, &testpb.Response{Message: "effect done"}, nil, nil))
		if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "done" {
			t.Fatalf("%v %v", r.resp, r.err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("stream failure crashes the entity", func(t *testing.T) {
		ch := call(cc, "cart-6", "x")
		fs := uf.next(t)
		expectInit(t, fs, esService, "cart-6")
		expectCommand(t, fs, 1, "Process")
		fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Failure{Failure: &cloudstatepb.Failure{CommandId: 1, Description: "crash"}}})
		if r := wait(t, ch); status.Code(r.err) != codes.Unknown {
			t.Fatalf("got %v", r.err)
		}
		fs.waitClosed(t, 5*time.Second)
		ch = call(cc, "cart-6", "y")
		fs2 := uf.next(t)
		expectInit(t, fs2, esService, "cart-6")
		expectCommand(t, fs2, 1, "Process")
		fs2.send(replyOut(1, &testpb.Response{Message: "again"}, nil, nil))
		if r := wait(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("snapshot without events is a protocol error", func(t *testing.T) {
		ch := call(cc, "cart-7", "x")
		fs := uf.next(t)
		expectInit(t, fs, esService, "cart-7")
		expectCommand(t, fs, 1, "Process")
		fs.send(replyOut(1, &testpb.Response{}, nil, anyOf(t, &testpb.State{})))
		if r := wait(t, ch); r.err == nil {
			t.Fatal("accepted a snapshot without events")
		}
		fs.waitClosed(t, 5*time.Second)
		uf.noMoreInteractions(t)
	})
}

func TestEventSourcedPassivationAndReplay(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(100*time.Millisecond)...)
	_, cc := testNode(t, brokers, kafkatest.Unique(t, "pass"), uf.addr)

	ch := call(cc, "p-1", "a")
	fs := uf.next(t)
	expectInit(t, fs, esService, "p-1")
	expectCommand(t, fs, 1, "Process")
	evs := make([]*anypb.Any, 7)
	for i := range evs {
		evs[i] = event(t, "e"+strconv.Itoa(i+1))
	}
	// Events 1..7 with a snapshot at 7 is not allowed by the every-5 rule of the SDK, but the
	// proxy must take whatever snapshot the function sends with events; use 5 events + snapshot
	// then 2 more.
	fs.send(replyOut(1, &testpb.Response{Message: "1"}, evs[:5], anyOf(t, &testpb.State{Payloads: []string{"at5"}})))
	wait(t, ch)
	ch = call(cc, "p-1", "b")
	expectCommand(t, fs, 2, "Process")
	fs.send(replyOut(2, &testpb.Response{Message: "2"}, evs[5:], nil))
	wait(t, ch)

	// 100 ms passivation: the stream must close within 2 s (TCK).
	fs.waitClosed(t, 2*time.Second)

	ch = call(cc, "p-1", "c")
	fs2 := uf.next(t)
	init := expectInit(t, fs2, esService, "p-1")
	var st testpb.State
	if init.GetSnapshot().GetSnapshotSequence() != 5 || init.GetSnapshot().GetSnapshot().UnmarshalTo(&st) != nil || st.GetPayloads()[0] != "at5" {
		t.Fatalf("init snapshot %v", init.GetSnapshot())
	}
	for _, want := range []int64{6, 7} {
		if ev := fs2.recv(t).GetEvent(); ev.GetSequence() != want {
			t.Fatalf("replayed %v, want sequence %d", ev, want)
		}
	}
	expectCommand(t, fs2, 1, "Process")
	fs2.send(replyOut(1, &testpb.Response{Message: "3"}, nil, nil))
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	fs2.waitClosed(t, 2*time.Second)
	uf.noMoreInteractions(t)
}
