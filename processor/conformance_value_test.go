package processor

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
)

const (
	valueService = "kstate.test.v1.ValueTest"
	valuePID     = "value-test"
)

func valueEntities(passivation time.Duration) []*cloudstatepb.Entity {
	es := esEntities(0)
	var strat *cloudstatepb.EntityPassivationStrategy
	if passivation > 0 {
		strat = &cloudstatepb.EntityPassivationStrategy{Strategy: &cloudstatepb.EntityPassivationStrategy_Timeout{
			Timeout: &cloudstatepb.TimeoutPassivationStrategy{Timeout: passivation.Milliseconds()},
		}}
	}
	return append(es,
		&cloudstatepb.Entity{EntityType: "cloudstate.valueentity.ValueEntity", ServiceName: valueService, PersistenceId: valuePID, PassivationStrategy: strat},
		&cloudstatepb.Entity{EntityType: "cloudstate.action.ActionProtocol", ServiceName: "kstate.test.v1.ActionTest"},
	)
}

func callValue(cc *grpc.ClientConn, id string) chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := testpb.NewValueTestClient(cc).Process(ctx, &testpb.Request{Id: id})
		ch <- callResult{r, err}
	}()
	return ch
}

func valueReply(t *testing.T, id int64, msg string, action *valueentitypb.ValueEntityAction, effects ...*cloudstatepb.SideEffect) *valueentitypb.ValueEntityStreamOut {
	return &valueentitypb.ValueEntityStreamOut{Message: &valueentitypb.ValueEntityStreamOut_Reply{Reply: &valueentitypb.ValueEntityReply{
		CommandId: id,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{
			Payload: anyOf(t, &testpb.Response{Message: msg}),
		}}},
		SideEffects: effects,
		StateAction: action,
	}}}
}

func update(t *testing.T, payloads ...string) *valueentitypb.ValueEntityAction {
	return &valueentitypb.ValueEntityAction{Action: &valueentitypb.ValueEntityAction_Update{Update: &valueentitypb.ValueEntityUpdate{
		Value: anyOf(t, &testpb.State{Payloads: payloads}),
	}}}
}

func deleteState() *valueentitypb.ValueEntityAction {
	return &valueentitypb.ValueEntityAction{Action: &valueentitypb.ValueEntityAction_Delete{Delete: &valueentitypb.ValueEntityDelete{}}}
}

func expectValueInit(t *testing.T, vs *ufValueStream, id string) *anypb.Any {
	t.Helper()
	init := vs.recv(t).GetInit()
	if init == nil || init.GetServiceName() != valueService || init.GetEntityId() != id {
		t.Fatalf("want init for %s, got %v", id, init)
	}
	if init.GetState() == nil {
		t.Fatal("value entity init without state (PROTOCOL.md: init.state is always set)")
	}
	return init.GetState().GetValue()
}

func expectValueCommand(t *testing.T, vs *ufValueStream, id int64) {
	t.Helper()
	c := vs.recv(t).GetCommand()
	if c == nil || c.GetId() != id || c.GetName() != "Process" {
		t.Fatalf("want command %d, got %v", id, c)
	}
}

func stateOf(t *testing.T, a *anypb.Any) []string {
	t.Helper()
	if a == nil {
		return nil
	}
	var s testpb.State
	if err := a.UnmarshalTo(&s); err != nil {
		t.Fatal(err)
	}
	return s.GetPayloads()
}

// stateTopic reads the value entity's .state topic records for one entity.
func stateTopic(t *testing.T, n *Node, id string) []broker.Record {
	t.Helper()
	p := broker.Partition([]byte(id), n.cfg.Broker.Partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []broker.Record
	_, err := broker.ReadToEnd(ctx, n.cfg.Broker, []broker.TopicPartitionFrom{{Topic: n.cfg.Broker.StateTopic(valuePID), Partition: p}}, func(r broker.Record) error {
		if string(r.Key) == id {
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestValueEntityConformance(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, valueEntities(100*time.Millisecond)...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "value"), uf.addr)

	t.Run("state changes and rehydration", func(t *testing.T) {
		ch := callValue(cc, "v-1")
		vs := uf.nextValue(t)
		if st := expectValueInit(t, vs, "v-1"); st != nil {
			t.Fatalf("new entity init state has a value: %v", st)
		}
		expectValueCommand(t, vs, 1)
		vs.send(valueReply(t, 1, "u1", update(t, "a")))
		if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "u1" {
			t.Fatalf("%v %v", r.resp, r.err)
		}
		// update, delete, update: the last one wins.
		for i, act := range []*valueentitypb.ValueEntityAction{update(t, "b"), deleteState(), update(t, "c")} {
			ch = callValue(cc, "v-1")
			expectValueCommand(t, vs, int64(i+2))
			vs.send(valueReply(t, int64(i+2), "ok", act))
			if r := wait(t, ch); r.err != nil {
				t.Fatal(r.err)
			}
		}
		recs := stateTopic(t, n, "v-1")
		if len(recs) != 4 || recs[2].Value != nil || recs[3].Value == nil {
			t.Fatalf("state topic records %v: want update, update, tombstone, update", recs)
		}
		// Passivation (100 ms) closes the stream; the next command rehydrates from Pebble.
		vs.waitClosed(t, 2*time.Second)
		ch = callValue(cc, "v-1")
		vs2 := uf.nextValue(t)
		if got := stateOf(t, expectValueInit(t, vs2, "v-1")); len(got) != 1 || got[0] != "c" {
			t.Fatalf("rehydrated state %v, want [c]", got)
		}
		expectValueCommand(t, vs2, 1)
		vs2.send(valueReply(t, 1, "read", deleteState()))
		wait(t, ch)
		vs2.waitClosed(t, 2*time.Second)
		ch = callValue(cc, "v-1")
		vs3 := uf.nextValue(t)
		if st := expectValueInit(t, vs3, "v-1"); st != nil {
			t.Fatalf("deleted entity rehydrated with %v", st)
		}
		expectValueCommand(t, vs3, 1)
		vs3.send(valueReply(t, 1, "empty", nil))
		wait(t, ch)
		vs3.waitClosed(t, 2*time.Second)
		uf.noMoreInteractions(t)
	})

	t.Run("an empty state is not a delete", func(t *testing.T) {
		ch := callValue(cc, "v-empty")
		vs := uf.nextValue(t)
		expectValueInit(t, vs, "v-empty")
		expectValueCommand(t, vs, 1)
		vs.send(valueReply(t, 1, "ok", update(t))) // State{} encodes to zero bytes
		wait(t, ch)
		vs.waitClosed(t, 2*time.Second)
		ch = callValue(cc, "v-empty")
		vs2 := uf.nextValue(t)
		if st := expectValueInit(t, vs2, "v-empty"); st == nil {
			t.Fatal("an empty state came back as no state")
		}
		expectValueCommand(t, vs2, 1)
		vs2.send(valueReply(t, 1, "ok", nil))
		wait(t, ch)
		vs2.waitClosed(t, 2*time.Second)
		uf.noMoreInteractions(t)
	})

	t.Run("failure drops the state change and side effects", func(t *testing.T) {
		ch := callValue(cc, "v-2")
		vs := uf.nextValue(t)
		expectValueInit(t, vs, "v-2")
		expectValueCommand(t, vs, 1)
		vs.send(&valueentitypb.ValueEntityStreamOut{Message: &valueentitypb.ValueEntityStreamOut_Reply{Reply: &valueentitypb.ValueEntityReply{
			CommandId:    1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{CommandId: 1, Description: "no"}}},
			SideEffects:  []*cloudstatepb.SideEffect{{ServiceName: esTwo, CommandName: "Call", Payload: anyOf(t, &testpb.Request{Id: "x"})}},
			StateAction:  update(t, "never"),
		}}})
		if r := wait(t, ch); status.Code(r.err) != codes.Unknown || status.Convert(r.err).Message() != "no" {
			t.Fatalf("got %v", r.err)
		}
		if recs := stateTopic(t, n, "v-2"); len(recs) != 0 {
			t.Fatalf("a failed command wrote state: %v", recs)
		}
		vs.waitClosed(t, 2*time.Second)
		uf.noMoreInteractions(t) // no stream for the side effect's target
	})

	t.Run("forward opens a second stream for the target", func(t *testing.T) {
		ch := callValue(cc, "v-3")
		vs := uf.nextValue(t)
		expectValueInit(t, vs, "v-3")
		expectValueCommand(t, vs, 1)
		vs.send(&valueentitypb.ValueEntityStreamOut{Message: &valueentitypb.ValueEntityStreamOut_Reply{Reply: &valueentitypb.ValueEntityReply{
			CommandId: 1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: &cloudstatepb.Forward{
				ServiceName: valueService, CommandName: "Process", Payload: anyOf(t, &testpb.Request{Id: "v-4"}),
			}}},
			StateAction: update(t, "before-forward"),
		}}})
		vs2 := uf.nextValue(t)
		expectValueInit(t, vs2, "v-4")
		expectValueCommand(t, vs2, 1)
		vs2.send(valueReply(t, 1, "from v-4", nil))
		if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "from v-4" {
			t.Fatalf("%v %v", r.resp, r.err)
		}
		// Committed before the forward ran; poll only because a broker may publish a just
		// committed transaction's markers to read_committed readers a moment later.
		deadline := time.Now().Add(5 * time.Second)
		for recs := stateTopic(t, n, "v-3"); len(recs) != 1; recs = stateTopic(t, n, "v-3") {
			if time.Now().After(deadline) {
				t.Fatalf("forwarding command's update not committed: %v", recs)
			}
			time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
		}
		vs.waitClosed(t, 2*time.Second)
		vs2.waitClosed(t, 2*time.Second)
		uf.noMoreInteractions(t)
	})
}

// TestValueEntityRestoredElsewhere: a value written through node A is read through node B after
// A leaves (B restores the partition from the state topic into its own Pebble); an aborted
// transaction's update on the same topic is never visible, neither to readers nor to B's restore.
// (The kill -9 variant runs in e2e/.)
func TestValueEntityRestoredElsewhere(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, valueEntities(0)...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "abort"), uf.addr)

	ch := callValue(cc, "v-a")
	vs := uf.nextValue(t)
	expectValueInit(t, vs, "v-a")
	expectValueCommand(t, vs, 1)
	vs.send(valueReply(t, 1, "ok", update(t, "committed")))
	wait(t, ch)

	// An aborted transaction on the same partition, written by a producer of our own.
	p := broker.Partition([]byte("v-a"), n.cfg.Broker.Partitions)
	cfg := n.cfg.Broker
	cfg.App = cfg.App + "-other" // a different transactional id: not a fence of the node
	prod, err := broker.NewTxnProducer(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The fencing record goes to the (unconsumed) commands topic, where nothing reads it.
	if err := prod.Acquire(ctx, broker.Record{Topic: n.cfg.Broker.CommandsTopic(), Partition: p, Key: []byte("test")}); err != nil {
		t.Fatal(err)
	}
	if _, err := prod.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	v, _ := proto.Marshal(&testpb.State{Payloads: []string{"aborted"}})
	if err := prod.Abort(ctx, []broker.Record{{Topic: n.cfg.Broker.StateTopic(valuePID), Partition: p, Key: []byte("v-a"), Value: v}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range stateTopic(t, n, "v-a") {
		var s testpb.State
		_ = proto.Unmarshal(r.Value, &s)
		if len(s.GetPayloads()) > 0 && s.GetPayloads()[0] == "aborted" {
			t.Fatal("read_committed returned an aborted update")
		}
	}
	// Node B joins, A leaves: B owns every partition and serves v-a from its own restore.
	_, ccB := testNode(t, brokers, n.cfg.Broker.App, uf.addr)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	vs.waitClosed(t, 10*time.Second)
	ch = callValue(ccB, "v-a")
	vs2 := uf.nextValue(t)
	if got := stateOf(t, expectValueInit(t, vs2, "v-a")); len(got) != 1 || got[0] != "committed" {
		t.Fatalf("node B restored %v, want [committed]", got)
	}
	expectValueCommand(t, vs2, 1)
	vs2.send(valueReply(t, 1, "from B", nil))
	if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "from B" {
		t.Fatalf("%v %v", r.resp, r.err)
	}
	uf.noMoreInteractions(t)
}
