package processor

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/sdk"
)

// Go SDK entities in-process: the event-sourced and value drivers call the SDK's sessions
// directly. These tests run the same protocol through that path: activation, snapshots, replay
// after passivation, and a restart of the node on the same store.

func inprocEntities() []sdk.Entity {
	es := sdk.NewEventSourced("kstate.test.v1.EventSourcedTest", func(string) *testpb.State { return &testpb.State{} }).
		PersistenceID("inproc-es").SnapshotEvery(2).Passivation(100 * time.Millisecond)
	sdk.Command(es, "Process", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		if in.GetPayload() == "" {
			return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}, nil
		}
		if in.GetPayload() == "bad" {
			return nil, ctx.Fail("bad payload")
		}
		if err := ctx.Emit(&testpb.Event{Payload: in.GetPayload()}); err != nil {
			return nil, err
		}
		return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}, nil
	})
	sdk.Command(es, "Composite", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.CompositeRequest) (*testpb.Response, error) {
		return &testpb.Response{Message: ctx.EntityID()}, nil
	})
	sdk.Event(es, func(s *testpb.State, e *testpb.Event) *testpb.State {
		s.Payloads = append(s.Payloads, e.GetPayload())
		return s
	})
	v := sdk.NewValue("kstate.test.v1.ValueTest", func(string) *testpb.State { return &testpb.State{} }).
		PersistenceID("inproc-value").Passivation(100 * time.Millisecond)
	sdk.ValueCommand(v, "Process", func(ctx *sdk.ValueContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		st := ctx.State()
		if in.GetPayload() != "" {
			st.Payloads = append(st.Payloads, in.GetPayload())
			if err := ctx.Update(st); err != nil {
				return nil, err
			}
		}
		return &testpb.Response{Message: strings.Join(st.GetPayloads(), ",")}, nil
	})
	return []sdk.Entity{es, v}
}

func inprocNode(t *testing.T, brokers []string, app, dataDir string) (*Node, *grpc.ClientConn) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = "inproc-" + app
	cfg.DataDir = dataDir
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Broker.Brokers = brokers
	cfg.Broker.App = app
	cfg.Broker.Partitions = 2
	cfg.Logger = testLogger(t)
	n, err := New(cfg, WithEntities(inprocEntities()...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() }) // a second Close is a no-op
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	waitServing(t, cc)
	return n, cc
}

func TestInProcessEntities(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	app := kafkatest.Unique(t, "inproc")
	dir := t.TempDir()
	n, cc := inprocNode(t, brokers, app, dir)
	es := testpb.NewEventSourcedTestClient(cc)
	val := testpb.NewValueTestClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	process := func(c interface {
		Process(context.Context, *testpb.Request, ...grpc.CallOption) (*testpb.Response, error)
	}, id, payload, want string) {
		t.Helper()
		r, err := c.Process(ctx, &testpb.Request{Id: id, Payload: payload})
		if err != nil || r.GetMessage() != want {
			t.Fatalf("Process(%s, %q) = %v, %v; want %q", id, payload, r, err, want)
		}
	}
	for i, p := range []string{"a", "b", "c"} {
		process(es, "e1", p, strings.Join([]string{"a", "b", "c"}[:i+1], ","))
	}
	if _, err := es.Process(ctx, &testpb.Request{Id: "e1", Payload: "bad"}); err == nil || !strings.Contains(err.Error(), "bad payload") {
		t.Fatalf("failure: %v", err)
	}
	process(val, "v1", "x", "x")
	process(val, "v1", "y", "x,y")
	if r, err := es.Composite(ctx, &testpb.CompositeRequest{A: 7, B: "k"}); err != nil || r.GetMessage() != "k-7" {
		t.Fatalf("composite key: %v %v", r, err)
	}

	// Passivation (100 ms) and reactivation from Pebble: a snapshot at 2, event 3 replayed.
	time.Sleep(300 * time.Millisecond) // let the entities passivate: an idle period is the input here
	process(es, "e1", "", "a,b,c")
	process(val, "v1", "", "x,y")

	// A new node on the same store and broker restores the partitions and serves the same state.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	_, cc2 := inprocNode(t, brokers, app, dir)
	es, val = testpb.NewEventSourcedTestClient(cc2), testpb.NewValueTestClient(cc2)
	process(es, "e1", "d", "a,b,c,d")
	process(val, "v1", "z", "x,y,z")
}
