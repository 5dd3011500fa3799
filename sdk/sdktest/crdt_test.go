package sdktest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

const crdtService = "kstate.test.v1.CrdtSdkTest"

type itemSet = sdk.ORSet[*testpb.Item]

// tagSet is an ORSet entity: Process adds each op ("-x" removes x, "!" fails) and replies with
// the elements; Watch streams the elements and removes "online" when cancelled.
func tagSet() *sdk.CRDTEntity[*itemSet] {
	e := sdk.NewCRDT[*itemSet](crdtService)
	render := func(s *itemSet) *testpb.CrdtResponse {
		var ns []string
		for _, it := range s.Elements() {
			ns = append(ns, it.GetName())
		}
		return &testpb.CrdtResponse{State: strings.Join(ns, ",")}
	}
	sdk.CRDTCommand(e, "Process", func(ctx *sdk.CRDTContext[*itemSet], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		for _, op := range in.GetOps() {
			switch {
			case op == "!":
				return nil, ctx.Fail("refused")
			case op == "delete":
				ctx.Delete()
			case strings.HasPrefix(op, "-"):
				if err := ctx.State().Remove(&testpb.Item{Name: op[1:]}); err != nil {
					return nil, err
				}
			default:
				if err := ctx.State().Add(&testpb.Item{Name: op}); err != nil {
					return nil, err
				}
			}
		}
		return render(ctx.State()), nil
	})
	sdk.CRDTStreamed(e, "Watch", func(ctx *sdk.CRDTStreamContext[*itemSet, *testpb.CrdtResponse], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		if err := ctx.State().Add(&testpb.Item{Name: "online"}); err != nil {
			return nil, err
		}
		ctx.OnChange(func(cc *sdk.CRDTChangeContext[*itemSet]) (*testpb.CrdtResponse, error) {
			return render(cc.State()), nil
		})
		ctx.OnCancel(func(cc *sdk.CRDTCancelContext[*itemSet]) error {
			return cc.State().Remove(&testpb.Item{Name: "online"})
		})
		return render(ctx.State()), nil
	})
	return e
}

func addOp(names ...string) *crdtpb.CrdtDelta {
	d := &crdtpb.ORSetDelta{}
	for _, n := range names {
		a, err := anypb.New(&testpb.Item{Name: n})
		if err != nil {
			panic(err)
		}
		d.Added = append(d.Added, a)
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: d}}
}

func tagState(t *testing.T, h *sdktest.CRDT[*itemSet]) string {
	t.Helper()
	res, err := h.Command("Process", &testpb.CrdtRequest{Id: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	return res.Reply.(*testpb.CrdtResponse).GetState()
}

func TestCRDTHarness(t *testing.T) {
	h := sdktest.NewCRDT(t, tagSet(), "t1", sdktest.WithRemoteOps("", addOp("a")), sdktest.WithRemoteOps("node-c", addOp("c")))
	if got := tagState(t, h); got != "a,c" {
		t.Fatalf("initial state %q", got)
	}
	res, err := h.Command("Process", &testpb.CrdtRequest{Id: "t1", Ops: []string{"b", "-a"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.CommandID != 2 || res.Update.GetOrset() == nil || res.Deleted {
		t.Fatalf("result %+v", res)
	}
	if s, ok := h.Replica().(*crdtlog.ORSet); !ok || s.Len() != 2 {
		t.Fatalf("replica %v", h.Replica())
	}
	_, err = h.Command("Process", &testpb.CrdtRequest{Id: "t1", Ops: []string{"x", "!"}})
	var f *sdktest.Failure
	if !errors.As(err, &f) || f.Description != "refused" || f.CommandID != 3 {
		t.Fatalf("failure %v", err)
	}

	w, err := h.Stream("Watch", &testpb.CrdtRequest{Id: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if !w.Open || w.First.Reply.(*testpb.CrdtResponse).GetState() != "b,c,online" || w.Ended() {
		t.Fatalf("stream %+v", w.First)
	}
	if got := h.OpenStreams(); len(got) != 1 || got[0] != 4 {
		t.Fatalf("open streams %v", got)
	}
	h.Remote("node-b", addOp("r"))
	m, ok := w.Next()
	if !ok || m.Reply.(*testpb.CrdtResponse).GetState() != "b,c,r,online" {
		t.Fatalf("message %+v %v", m, ok)
	}
	if _, ok := w.Next(); ok || len(w.Messages()) != 1 {
		t.Fatalf("messages %v", w.Messages())
	}
	c := w.Cancel()
	if c.Update.GetOrset() == nil || !w.Ended() {
		t.Fatalf("cancel %+v", c)
	}
	if got := tagState(t, h); got != "b,c,r" {
		t.Fatalf("after cancel %q", got)
	}
	h.Restart()
	if got := tagState(t, h); got != "b,c,r" {
		t.Fatalf("after restart %q", got)
	}
	if !h.State().Contains(&testpb.Item{Name: "r"}) {
		t.Fatal("State")
	}
	res, err = h.Command("Process", &testpb.CrdtRequest{Id: "t1", Ops: []string{"delete"}})
	if err != nil || !res.Deleted || !h.Deleted() {
		t.Fatalf("delete %+v %v", res, err)
	}
}

func TestCRDTHarnessFatal(t *testing.T) {
	tb := &fakeTB{}
	msg := expectFatal(t, tb, func() { sdktest.NewCRDT(tb, tagSet(), "t1", sdktest.WithState(&testpb.State{})) })
	if !strings.Contains(msg, "WithRemoteOps") {
		t.Fatalf("WithState: %s", msg)
	}

	tb = &fakeTB{}
	bad := sdk.NewCRDT[*sdk.Flag](crdtService)
	if msg := expectFatal(t, tb, func() { sdktest.NewCRDT(tb, bad, "t1") }); !strings.Contains(msg, "missing command handler") {
		t.Fatalf("definition error: %s", msg)
	}

	tb = &fakeTB{}
	h := sdktest.NewCRDT(tb, tagSet(), "t1")
	var w *sdktest.CRDTStream
	func() {
		defer func() { _ = recover() }()
		w, _ = h.Stream("Watch", &testpb.CrdtRequest{Id: "t1"})
	}()
	if w == nil {
		t.Fatalf("stream: %s", tb.msg)
	}
	if msg := expectFatal(t, tb, h.Restart); !strings.Contains(msg, "are open") {
		t.Fatalf("restart with open streams: %s", msg)
	}
	tb.msg = ""
	if msg := expectFatal(t, tb, func() { h.RemoveNode("x") }); !strings.Contains(msg, "not a Vote") {
		t.Fatalf("RemoveNode: %s", msg)
	}
	tb.msg = ""
	if msg := expectFatal(t, tb, func() { h.Remote(sdktest.SelfNode, addOp("a")) }); !strings.Contains(msg, "own node") {
		t.Fatalf("Remote at self: %s", msg)
	}
	tb.msg = ""
	if msg := expectFatal(t, tb, func() {
		h.Remote("", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Flag{Flag: &crdtpb.FlagDelta{Value: true}}})
	}); !strings.Contains(msg, "kind mismatch") {
		t.Fatalf("Remote of another kind: %s", msg)
	}
	w.Cancel()
	tb.msg = ""
	if msg := expectFatal(t, tb, func() { w.Cancel() }); !strings.Contains(msg, "already ended") {
		t.Fatalf("second cancel: %s", msg)
	}
}

func ExampleNewCRDT() {
	h := sdktest.NewCRDT(nil, tagSet(), "t1", sdktest.WithRemoteOps("node-b", addOp("b"))) // in a test, pass t
	res, _ := h.Command("Process", &testpb.CrdtRequest{Id: "t1", Ops: []string{"a"}})
	fmt.Println(res.Reply.(*testpb.CrdtResponse).GetState(), len(res.Update.GetOrset().GetAdded()))

	w, _ := h.Stream("Watch", &testpb.CrdtRequest{Id: "t1"})
	h.Remote("node-c", addOp("c")) // a change made on another node
	m, _ := w.Next()
	fmt.Println(m.Reply.(*testpb.CrdtResponse).GetState())
	fmt.Println(proto.Equal(w.Cancel().Update, &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{
		Removed: addOp("online").GetOrset().GetAdded(),
	}}}))
	// Output:
	// a,b 1
	// a,b,c,online
	// true
}
