package sdk_test

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

// The CRDT examples implement this service from kstate's test protos:
//
//	message CrdtRequest { string id = 1 [(cloudstate.entity_key) = true]; repeated string ops = 2; }
//	message CrdtResponse { string state = 1; }
//	message Item { string name = 1; }
//	service CrdtSdkTest {
//	  rpc Process(CrdtRequest) returns (CrdtResponse);
//	  rpc Watch(CrdtRequest) returns (stream CrdtResponse);
//	}
//
// Every method needs a handler; the examples that only show one method register the other
// with this.
func noWatch[C sdk.CRDT](e *sdk.CRDTEntity[C]) {
	sdk.CRDTStreamed(e, "Watch", func(*sdk.CRDTStreamContext[C, *testpb.CrdtResponse], *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		return nil, nil
	})
}

// A like counter: each Process call adds its ops as likes, on whichever node serves it.
func ExampleNewCRDT() {
	likes := sdk.NewCRDT[*sdk.GCounter]("kstate.test.v1.CrdtSdkTest").
		PersistenceID("likes") // where kstate keeps the replicated state; default "CrdtSdkTest"
	sdk.CRDTCommand(likes, "Process", func(ctx *sdk.CRDTContext[*sdk.GCounter], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		if err := ctx.State().Increment(int64(len(in.GetOps()))); err != nil {
			return nil, err
		}
		return &testpb.CrdtResponse{State: fmt.Sprint(ctx.State().Value())}, nil
	})
	noWatch(likes)

	h := sdktest.NewCRDT(nil, likes, "post-1") // in a test, pass t rather than nil
	res, _ := h.Command("Process", &testpb.CrdtRequest{Id: "post-1", Ops: []string{"alice", "bob"}})
	fmt.Println(res.Reply.(*testpb.CrdtResponse).GetState(), res.Update.GetGcounter().GetIncrement())
	// Another node's likes arrive as a delta.
	h.Remote("node-b", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: 5}}})
	fmt.Println(h.State().Value())
	// Output:
	// 2 2
	// 7
}

// A command handler fails on an illegal change, and its other changes are dropped.
func ExampleCRDTCommand() {
	stock := sdk.NewCRDT[*sdk.PNCounter]("kstate.test.v1.CrdtSdkTest")
	sdk.CRDTCommand(stock, "Process", func(ctx *sdk.CRDTContext[*sdk.PNCounter], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		for _, op := range in.GetOps() {
			switch op {
			case "restock":
				_ = ctx.State().Increment(10)
			case "sell":
				if ctx.State().Value() <= 0 {
					return nil, ctx.Fail("sold out")
				}
				_ = ctx.State().Decrement(1)
			}
		}
		ctx.SetWriteConsistency(sdk.WriteMajority) // reply once a majority of nodes can have the change
		return &testpb.CrdtResponse{State: fmt.Sprint(ctx.State().Value())}, nil
	})
	noWatch(stock)

	h := sdktest.NewCRDT(nil, stock, "apples")
	for _, ops := range [][]string{{"restock", "sell"}, {"sell", "sell"}, make([]string, 0)} {
		res, err := h.Command("Process", &testpb.CrdtRequest{Id: "apples", Ops: ops})
		if err != nil {
			fmt.Println(err)
			continue
		}
		// A command that changes nothing sends no state action, and so no write consistency.
		fmt.Println(res.Reply.(*testpb.CrdtResponse).GetState(), res.Update.GetPncounter(), res.WriteConsistency)
	}
	h2 := sdktest.NewCRDT(nil, stock, "pears")
	_, err := h2.Command("Process", &testpb.CrdtRequest{Id: "pears", Ops: []string{"sell"}})
	fmt.Println(err)
	// Output:
	// 9 change:9 MAJORITY
	// 7 change:-2 MAJORITY
	// 7 <nil> LOCAL
	// command 1 failed: sold out
}

// A streamed command sends the state, then each change, until it reaches a target.
func ExampleCRDTStreamed() {
	set := sdk.NewCRDT[*sdk.ORSet[*testpb.Item]]("kstate.test.v1.CrdtSdkTest")
	render := func(s *sdk.ORSet[*testpb.Item]) *testpb.CrdtResponse {
		var names []string
		for _, it := range s.Elements() {
			names = append(names, it.GetName())
		}
		return &testpb.CrdtResponse{State: strings.Join(names, ",")}
	}
	sdk.CRDTCommand(set, "Process", func(ctx *sdk.CRDTContext[*sdk.ORSet[*testpb.Item]], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		for _, name := range in.GetOps() {
			if err := ctx.State().Add(&testpb.Item{Name: name}); err != nil {
				return nil, err
			}
		}
		return render(ctx.State()), nil
	})
	sdk.CRDTStreamed(set, "Watch", func(ctx *sdk.CRDTStreamContext[*sdk.ORSet[*testpb.Item], *testpb.CrdtResponse], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		ctx.OnChange(func(cc *sdk.CRDTChangeContext[*sdk.ORSet[*testpb.Item]]) (*testpb.CrdtResponse, error) {
			if cc.State().Len() >= 3 {
				cc.EndStream()
			}
			return render(cc.State()), nil
		})
		ctx.OnCancel(func(cc *sdk.CRDTCancelContext[*sdk.ORSet[*testpb.Item]]) error {
			return cc.State().Clear()
		})
		return render(ctx.State()), nil // the stream's first element
	})

	h := sdktest.NewCRDT(nil, set, "s1")
	w, _ := h.Stream("Watch", &testpb.CrdtRequest{Id: "s1"})
	fmt.Printf("first %q, open %v\n", w.First.Reply.(*testpb.CrdtResponse).GetState(), w.Open)
	_, _ = h.Command("Process", &testpb.CrdtRequest{Id: "s1", Ops: []string{"a"}})
	h.Remote("node-b", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{Added: []*anypb.Any{itemAny("b"), itemAny("c")}}}})
	for m, ok := w.Next(); ok; m, ok = w.Next() {
		fmt.Printf("%q end=%v\n", m.Reply.(*testpb.CrdtResponse).GetState(), m.EndStream)
	}
	// Output:
	// first "", open true
	// "a" end=false
	// "a,b,c" end=true
}

func itemAny(name string) *anypb.Any {
	a, _ := anypb.New(&testpb.Item{Name: name})
	return a
}

// Presence: a node votes true while a client is connected through it, and a cancel handler
// votes false.
func ExampleVote() {
	presence := sdk.NewCRDT[*sdk.Vote]("kstate.test.v1.CrdtSdkTest")
	sdk.CRDTCommand(presence, "Process", func(ctx *sdk.CRDTContext[*sdk.Vote], _ *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		v := ctx.State()
		return &testpb.CrdtResponse{State: fmt.Sprintf("online=%v (%d of %d nodes)", v.AtLeastOne(), v.VotesFor(), v.Voters())}, nil
	})
	sdk.CRDTStreamed(presence, "Watch", func(ctx *sdk.CRDTStreamContext[*sdk.Vote, *testpb.CrdtResponse], _ *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		if err := ctx.State().Vote(true); err != nil {
			return nil, err
		}
		ctx.OnCancel(func(cc *sdk.CRDTCancelContext[*sdk.Vote]) error {
			if cc.OpenStreams("Watch") > 0 {
				return nil // another client is still connected through this node
			}
			return cc.State().Vote(false)
		})
		return nil, nil // no first element
	})

	h := sdktest.NewCRDT(nil, presence, "alice")
	status := func() {
		res, _ := h.Command("Process", &testpb.CrdtRequest{Id: "alice"})
		fmt.Println(res.Reply.(*testpb.CrdtResponse).GetState())
	}
	conn, _ := h.Stream("Watch", &testpb.CrdtRequest{Id: "alice"})
	status()
	h.Remote("node-b", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: true}}})
	status()
	fmt.Println("cancel votes", conn.Cancel().Update.GetVote().GetSelfVote())
	h.RemoveNode("node-b") // node-b left the application
	status()
	// Output:
	// online=true (1 of 1 nodes)
	// online=true (2 of 2 nodes)
	// cancel votes false
	// online=false (0 of 1 nodes)
}

// A map of counters per product, and the operation delta a command sends.
func ExampleORMap() {
	cart := sdk.NewCRDT[*sdk.ORMap[*testpb.Item, *sdk.PNCounter]]("kstate.test.v1.CrdtSdkTest")
	sdk.CRDTCommand(cart, "Process", func(ctx *sdk.CRDTContext[*sdk.ORMap[*testpb.Item, *sdk.PNCounter]], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		m := ctx.State()
		for _, op := range in.GetOps() {
			name, remove := strings.CutPrefix(op, "-")
			if remove {
				if err := m.Remove(&testpb.Item{Name: name}); err != nil {
					return nil, err
				}
				continue
			}
			c, err := m.GetOrCreate(&testpb.Item{Name: name})
			if err != nil {
				return nil, err
			}
			if err := c.Increment(1); err != nil {
				return nil, err
			}
		}
		var parts []string
		for k, v := range m.All() {
			parts = append(parts, fmt.Sprintf("%s=%d", k.GetName(), v.Value()))
		}
		slices.Sort(parts) // All orders keys by their encoding
		return &testpb.CrdtResponse{State: strings.Join(parts, " ")}, nil
	})
	noWatch(cart)

	h := sdktest.NewCRDT(nil, cart, "cart-1")
	for _, ops := range [][]string{{"apple", "apple", "pear"}, {"-pear", "apple"}} {
		res, _ := h.Command("Process", &testpb.CrdtRequest{Id: "cart-1", Ops: ops})
		d := res.Update.GetOrmap()
		fmt.Printf("%s: removed %d, updated %d, added %d\n", res.Reply.(*testpb.CrdtResponse).GetState(), len(d.GetRemoved()), len(d.GetUpdated()), len(d.GetAdded()))
	}
	// Output:
	// apple=2 pear=1: removed 0, updated 0, added 2
	// apple=3: removed 1, updated 1, added 0
}

// A runtime that hosts entities in process drives a CrdtSession: each input gives the
// outputs to send, in order.
func ExampleServer_NewCrdtSession() {
	e := sdk.NewCRDT[*sdk.Flag]("kstate.test.v1.CrdtSdkTest")
	sdk.CRDTCommand(e, "Process", func(ctx *sdk.CRDTContext[*sdk.Flag], _ *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		return &testpb.CrdtResponse{State: "enabled"}, ctx.State().Enable()
	})
	sdk.CRDTStreamed(e, "Watch", func(ctx *sdk.CRDTStreamContext[*sdk.Flag, *testpb.CrdtResponse], _ *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		ctx.OnChange(func(cc *sdk.CRDTChangeContext[*sdk.Flag]) (*testpb.CrdtResponse, error) {
			cc.EndStream()
			return &testpb.CrdtResponse{State: fmt.Sprint(cc.State().Enabled())}, nil
		})
		return nil, nil
	})
	srv := sdk.NewServer()
	if err := srv.Register(e); err != nil {
		fmt.Println(err)
		return
	}
	s := srv.NewCrdtSession(context.Background())
	payload, _ := anypb.New(&testpb.CrdtRequest{Id: "f1"})
	for _, in := range []*crdtpb.CrdtStreamIn{
		{Message: &crdtpb.CrdtStreamIn_Init{Init: &crdtpb.CrdtInit{ServiceName: "kstate.test.v1.CrdtSdkTest", EntityId: "f1"}}},
		{Message: &crdtpb.CrdtStreamIn_Command{Command: &cloudstatepb.Command{Id: 1, Name: "Watch", Payload: payload, Streamed: true}}},
		{Message: &crdtpb.CrdtStreamIn_Command{Command: &cloudstatepb.Command{Id: 2, Name: "Process", Payload: payload}}},
	} {
		outs, err := s.Step(in)
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, out := range outs {
			switch m := out.GetMessage().(type) {
			case *crdtpb.CrdtStreamOut_Reply:
				fmt.Printf("reply %d: streamed=%v update=%v\n", m.Reply.GetCommandId(), m.Reply.GetStreamed(), m.Reply.GetStateAction().GetUpdate().GetFlag())
			case *crdtpb.CrdtStreamOut_StreamedMessage:
				fmt.Printf("stream %d: end=%v\n", m.StreamedMessage.GetCommandId(), m.StreamedMessage.GetEndStream())
			}
		}
	}
	// Output:
	// reply 1: streamed=true update=<nil>
	// reply 2: streamed=false update=value:true
	// stream 1: end=true
}
