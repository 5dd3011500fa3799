package sdk_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

// step is one command of a table test: its ops, then what the reply's state and update must be.
type step struct {
	ops    string // space-separated
	state  string
	update *crdtpb.CrdtDelta // nil: no state action
	remote *crdtpb.CrdtDelta // if set, the step is a change at another node instead of a command
	fail   string            // a command failure
}

// harness is what the table runner needs of an sdktest.CRDT of any type.
type harness interface {
	Command(name string, in proto.Message, opts ...sdktest.CommandOption) (*sdktest.CRDTResult, error)
	Remote(node string, op *crdtpb.CrdtDelta)
	Restart()
}

func process(t *testing.T, h harness, ops string) (*sdktest.CRDTResult, error) {
	t.Helper()
	return h.Command("Process", &testpb.CrdtRequest{Id: "e1", Ops: strings.Fields(ops)})
}

func stateOf(t *testing.T, res *sdktest.CRDTResult) string {
	t.Helper()
	return res.Reply.(*testpb.CrdtResponse).GetState()
}

func run(t *testing.T, h harness, steps []step) {
	t.Helper()
	for i, s := range steps {
		if s.remote != nil {
			h.Remote("", s.remote)
			if s.state == "" {
				continue
			}
		}
		ops := s.ops
		if s.remote != nil {
			ops = ""
		}
		res, err := process(t, h, ops)
		if s.fail != "" {
			var f *sdktest.Failure
			if !errors.As(err, &f) || !strings.Contains(f.Description, s.fail) {
				t.Fatalf("step %d (%q): err %v, want a failure containing %q", i, s.ops, err, s.fail)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d (%q): %v", i, s.ops, err)
		}
		if got := stateOf(t, res); got != s.state {
			t.Errorf("step %d (%q): state %q, want %q", i, s.ops, got, s.state)
		}
		want := s.update
		if s.remote != nil {
			want = nil
		}
		if !proto.Equal(want, res.Update) {
			t.Errorf("step %d (%q): update\n got %v\nwant %v", i, s.ops, res.Update, want)
		}
	}
	h.Restart()
}

func TestCRDTGCounter(t *testing.T) {
	h := sdktest.NewCRDT(t, gcounterEntity(), "e1")
	run(t, h, []step{
		{ops: "", state: "0"},
		{ops: "inc:1 inc:2", state: "3", update: gcounterOp(3)},
		{remote: gcounterOp(10), state: "13"},
		{ops: "inc:0", state: "13"},
		{ops: "inc:2 inc:-1", fail: "a GCounter cannot be decremented"},
		{ops: "", state: "13"},
		{ops: "inc:4", state: "17", update: gcounterOp(4)},
	})
	if got := h.State().Value(); got != 17 {
		t.Fatalf("value %d", got)
	}
	if err := h.State().Increment(1); !errors.Is(err, sdk.ErrReadOnly) {
		t.Fatalf("a change outside of a handler: %v", err)
	}
}

func TestCRDTPNCounter(t *testing.T) {
	h := sdktest.NewCRDT(t, pncounterEntity(), "e1", sdktest.WithRemoteOps("", pncounterOp(-5)))
	run(t, h, []step{
		{ops: "", state: "-5"},
		{ops: "inc:10 dec:3", state: "2", update: pncounterOp(7)},
		{ops: "inc:3 dec:3", state: "2"},
		{remote: pncounterOp(-20), state: "-18"},
		{ops: "inc:9223372036854775807 inc:9223372036854775807", fail: "overflow"},
		{ops: "dec:-9223372036854775808", fail: "overflow"},
		{ops: "dec:2", state: "-20", update: pncounterOp(-2)},
	})
}

func TestCRDTGSet(t *testing.T) {
	h := sdktest.NewCRDT(t, gsetEntity(), "e1")
	run(t, h, []step{
		{ops: "", state: ""},
		{ops: "add:a add:b add:a", state: "a,b", update: gsetOp("a", "b")},
		{remote: gsetOp("b", "c"), state: "a,b,c"},
		{ops: "add:c add:d", state: "a,b,c,d", update: gsetOp("d")},
		{ops: "add:e fail:no", fail: "no"},
		{ops: "", state: "a,b,c,d"},
	})
	s := h.State()
	if !s.Contains(item("a")) || s.Contains(item("e")) || s.Len() != 4 {
		t.Fatalf("contains: %v %v %d", s.Contains(item("a")), s.Contains(item("e")), s.Len())
	}
}

// TestCRDTORSet follows Cloudstate's TCK "ORSet state changes" and "mix of local and replicated
// state changes".
func TestCRDTORSet(t *testing.T) {
	h := sdktest.NewCRDT(t, orsetEntity(), "e1")
	run(t, h, []step{
		{ops: "add:a add:b", state: "a,b", update: orsetOp(false, nil, []string{"a", "b"})},
		{ops: "add:b add:c", state: "a,b,c", update: orsetOp(false, nil, []string{"c"})},
		{ops: "add:c add:a", state: "a,b,c"},
		{ops: "remove:b remove:d", state: "a,c", update: orsetOp(false, []string{"b"}, nil)},
		{ops: "remove:c remove:d add:b add:c", state: "a,b,c", update: orsetOp(false, nil, []string{"b"})},
		{ops: "clear", state: "", update: orsetOp(true, nil, nil)},
		{ops: "add:a clear add:x", state: "x", update: orsetOp(true, nil, []string{"x"})},
		{ops: "add:y add:z remove:y", state: "x,z", update: orsetOp(false, nil, []string{"z"})},
		{remote: orsetOp(false, []string{"x"}, []string{"p", "q"}), state: "p,q,z"},
		{ops: "add:r remove:p", state: "q,r,z", update: orsetOp(false, []string{"p"}, []string{"r"})},
		{remote: orsetOp(true, nil, []string{"m"}), state: "m"},
		{ops: "remove:m", state: "", update: orsetOp(false, []string{"m"}, nil)},
		{ops: "add:n addnil", fail: "nil message"},
	})
}

// A remove at one node concurrent with a re-add at another: the add wins, and the harness's
// replica (crdtlog) agrees with what the entity was told.
func TestCRDTORSetAddWins(t *testing.T) {
	h := sdktest.NewCRDT(t, orsetEntity(), "e1", sdktest.WithRemoteOps("node-b", orsetOp(false, nil, []string{"a"})))
	if _, err := process(t, h, "remove:a"); err != nil {
		t.Fatal(err)
	}
	h.Remote("node-b", orsetOp(false, nil, []string{"a"})) // node-b had not seen the remove
	res, err := process(t, h, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, res); got != "a" {
		t.Fatalf("state %q, want a", got)
	}
}

func TestCRDTLWWRegister(t *testing.T) {
	h := sdktest.NewCRDT(t, lwwEntity(), "e1")
	run(t, h, []step{
		{ops: "", state: "<none>"},
		{ops: "set:one", state: "one", update: lwwOp("one", crdtpb.CrdtClock_DEFAULT, 0)},
		{ops: "set:one", state: "one"},
		{remote: lwwOp("two", crdtpb.CrdtClock_DEFAULT, 0), state: "two"},
		// TCK "state changes with clock settings".
		{ops: "setreverse:A", state: "A", update: lwwOp("A", crdtpb.CrdtClock_REVERSE, 0)},
		{ops: "setcustom:A@123", state: "A", update: lwwOp("A", crdtpb.CrdtClock_CUSTOM, 123)},
		{ops: "setauto:A@456", state: "A", update: lwwOp("A", crdtpb.CrdtClock_CUSTOM_AUTO_INCREMENT, 456)},
		{ops: "set:B set:C", state: "C", update: lwwOp("C", crdtpb.CrdtClock_DEFAULT, 0)},
	})
}

// A write whose clock loses: the entity sets its value, kstate keeps the winner and tells the
// entity, which ends up with the winner.
func TestCRDTLWWRegisterLosingWrite(t *testing.T) {
	h := sdktest.NewCRDT(t, lwwEntity(), "e1")
	if _, err := process(t, h, "setcustom:new@100"); err != nil {
		t.Fatal(err)
	}
	res, err := process(t, h, "setcustom:old@5")
	if err != nil {
		t.Fatal(err)
	}
	if stateOf(t, res) != "old" {
		t.Fatalf("reply %q: the command sees its own write", stateOf(t, res))
	}
	if got := renderLWW(h.State()); got != "new" {
		t.Fatalf("after the correction the entity holds %q, want new", got)
	}
}

func TestCRDTFlag(t *testing.T) {
	h := sdktest.NewCRDT(t, flagEntity(), "e1")
	run(t, h, []step{
		{ops: "", state: "false"},
		{ops: "enable", state: "true", update: flagOp()},
		{ops: "enable", state: "true"},
	})
	h2 := sdktest.NewCRDT(t, flagEntity(), "e2", sdktest.WithRemoteOps("", flagOp()))
	run(t, h2, []step{{ops: "enable", state: "true"}})
}

// TestCRDTVote follows Cloudstate's TCK Vote scenarios: the entity's node counts as a voter.
func TestCRDTVote(t *testing.T) {
	h := sdktest.NewCRDT(t, voteEntity(), "e1")
	run(t, h, []step{
		{ops: "", state: "self=false for=0 voters=1"},
		{ops: "vote:true", state: "self=true for=1 voters=1", update: voteOp(true)},
		{ops: "vote:true", state: "self=true for=1 voters=1"},
		{remote: voteOp(true), state: "self=true for=2 voters=2"},
		{ops: "vote:false", state: "self=false for=1 voters=2", update: voteOp(false)},
		{ops: "vote:true vote:false", state: "self=false for=1 voters=2"},
	})
	h.RemoveNode(sdktest.RemoteNode)
	if got := renderVote(h.State()); got != "self=false for=0 voters=1" {
		t.Fatalf("after the remote node left: %s", got)
	}
	if v := h.State(); v.AtLeastOne() || v.Majority() || v.All() {
		t.Fatal("helpers on no votes")
	}
}

func TestCRDTORMapOfCounters(t *testing.T) {
	h := sdktest.NewCRDT(t, ormapEntity(), "e1")
	run(t, h, []step{
		{ops: "", state: ""},
		{ops: "create:a inc:b=2", state: "a=0,b=2", update: ormapOp(false, nil, nil, []entryOp{{"a", pncounterOp(0)}, {"b", pncounterOp(2)}})},
		{ops: "inc:a=5 inc:b=-1 create:b", state: "a=5,b=1", update: ormapOp(false, nil, []entryOp{{"a", pncounterOp(5)}, {"b", pncounterOp(-1)}}, nil)},
		{ops: "drop:a create:c drop:c", state: "b=1", update: ormapOp(false, []string{"a"}, nil, nil)},
		{ops: "drop:b inc:b=7", state: "b=7", update: ormapOp(false, []string{"b"}, nil, []entryOp{{"b", pncounterOp(7)}})},
		{remote: ormapOp(false, nil, []entryOp{{"b", pncounterOp(3)}}, []entryOp{{"z", pncounterOp(1)}}), state: "b=10,z=1"},
		{ops: "clear inc:q=1", state: "q=1", update: ormapOp(true, nil, nil, []entryOp{{"q", pncounterOp(1)}})},
		{ops: "inc:q=1 inc:q=1 fail:no", fail: "no"},
		{ops: "", state: "q=1"},
	})
}

func TestCRDTORMapOfSets(t *testing.T) {
	h := sdktest.NewCRDT(t, setMapEntity(), "e1")
	run(t, h, []step{
		{ops: "add:k=a add:k=b", state: "k={a,b}", update: ormapOp(false, nil, nil, []entryOp{{"k", orsetOp(false, nil, []string{"a", "b"})}})},
		{ops: "remove:k=a add:k=c", state: "k={b,c}", update: ormapOp(false, nil, []entryOp{{"k", orsetOp(false, []string{"a"}, []string{"c"})}}, nil)},
		{remote: ormapOp(false, nil, []entryOp{{"k", orsetOp(false, []string{"b"}, []string{"d"})}}, nil), state: "k={c,d}"},
		{ops: "drop:k", state: "", update: ormapOp(false, []string{"k"}, nil, nil)},
	})
}

func TestCRDTORMapOfRegisters(t *testing.T) {
	h := sdktest.NewCRDT(t, registerMapEntity(), "e1")
	run(t, h, []step{
		// A register created without a value holds an empty message.
		{ops: "create:k", state: "k=", update: ormapOp(false, nil, nil, []entryOp{{"k", lwwOp("", crdtpb.CrdtClock_DEFAULT, 0)}})},
		{ops: "set:k=v", state: "k=v", update: ormapOp(false, nil, []entryOp{{"k", lwwOp("v", crdtpb.CrdtClock_DEFAULT, 0)}}, nil)},
		{ops: "set:j=w", state: "j=w,k=v", update: ormapOp(false, nil, nil, []entryOp{{"j", lwwOp("w", crdtpb.CrdtClock_DEFAULT, 0)}})},
	})
}

// A map of any CRDTs reads what other nodes create, and cannot create values itself.
func TestCRDTORMapOfAnyType(t *testing.T) {
	h := sdktest.NewCRDT(t, anyMapEntity(), "e1")
	h.Remote("", ormapOp(false, nil, nil, []entryOp{
		{"c", gcounterOp(2)}, {"s", orsetOp(false, nil, []string{"x", "y"})}, {"v", voteOp(true)},
	}))
	res, err := process(t, h, "inc:c")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := stateOf(t, res), "c=3,s=set of 2,v=self=false for=1 voters=1"; got != want {
		t.Fatalf("state %q, want %q", got, want)
	}
	if _, err := process(t, h, "create:n"); err == nil || !strings.Contains(err.Error(), "interface") {
		t.Fatalf("create in a map of any type: %v", err)
	}
}

func TestCRDTFailureRollsBackAndPanicsDoNotRestart(t *testing.T) {
	h := sdktest.NewCRDT(t, orsetEntity(), "e1")
	if _, err := process(t, h, "add:a"); err != nil {
		t.Fatal(err)
	}
	for _, ops := range []string{"add:b remove:a error:boom", "clear effect:x panic:boom", "add:b bogus"} {
		_, err := process(t, h, ops)
		var f *sdktest.Failure
		if !errors.As(err, &f) || f.Restart {
			t.Fatalf("%q: %v, want a failure without restart", ops, err)
		}
	}
	res, err := process(t, h, "")
	if err != nil {
		t.Fatal(err)
	}
	if stateOf(t, res) != "a" || res.Update != nil {
		t.Fatalf("after failures: %q %v", stateOf(t, res), res.Update)
	}
}

func TestCRDTForwardSideEffectsConsistencyMetadata(t *testing.T) {
	h := sdktest.NewCRDT(t, pncounterEntity(), "e1")
	res, err := process(t, h, "inc:2 effect:one synceffect:two forward:fw consistency:majority")
	if err != nil {
		t.Fatal(err)
	}
	if res.Forward == nil || res.Forward.Service != twoService || res.Forward.Message.(*testpb.Request).GetId() != "fw" || res.Reply != nil {
		t.Fatalf("forward %+v reply %v", res.Forward, res.Reply)
	}
	if len(res.SideEffects) != 2 || res.SideEffects[0].Synchronous || !res.SideEffects[1].Synchronous {
		t.Fatalf("side effects %+v", res.SideEffects)
	}
	if res.WriteConsistency != sdk.WriteMajority || !proto.Equal(res.Update, pncounterOp(2)) {
		t.Fatalf("consistency %v update %v", res.WriteConsistency, res.Update)
	}
	res, err = h.Command("Process", &testpb.CrdtRequest{Id: "e1", Ops: []string{"meta:who"}}, sdktest.WithMetadata("Who", "zoe"))
	if err != nil || stateOf(t, res) != "zoe" {
		t.Fatalf("metadata: %v %v", res, err)
	}
	res, err = process(t, h, "noreply consistency:all inc:1")
	if err != nil || !proto.Equal(res.Reply, &testpb.CrdtResponse{}) || res.WriteConsistency != sdk.WriteAll {
		t.Fatalf("nil reply of a unary command: %+v %v", res, err)
	}
}

func TestCRDTDelete(t *testing.T) {
	h := sdktest.NewCRDT(t, gsetEntity(), "e1")
	w, err := h.Stream("Watch", &testpb.CrdtRequest{Id: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := process(t, h, "add:x delete consistency:all")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Deleted || res.Update != nil || res.WriteConsistency != sdk.WriteAll || !h.Deleted() {
		t.Fatalf("delete: %+v", res)
	}
	if !w.Ended() || len(w.Messages()) != 0 {
		t.Fatalf("the watch stream after delete: ended %v, messages %v", w.Ended(), w.Messages())
	}
	if _, err := process(t, h, ""); err == nil || !strings.Contains(err.Error(), sdk.ErrEntityDeleted.Error()) {
		t.Fatalf("command after delete: %v", err)
	}
	h.Restart()
	if res, err := process(t, h, ""); err != nil || stateOf(t, res) != "" {
		t.Fatalf("after restart: %v %v", res, err)
	}

	// Deleted by the proxy.
	h2 := sdktest.NewCRDT(t, gsetEntity(), "e2")
	if _, err := process(t, h2, "add:x"); err != nil {
		t.Fatal(err)
	}
	h2.Delete()
	if _, err := process(t, h2, ""); err == nil {
		t.Fatal("command after the proxy's delete succeeded")
	}
}

func watch(t *testing.T, h interface {
	Stream(string, proto.Message, ...sdktest.CommandOption) (*sdktest.CRDTStream, error)
}, ops string) *sdktest.CRDTStream {
	t.Helper()
	st, err := h.Stream("Watch", &testpb.CrdtRequest{Id: "e1", Ops: strings.Fields(ops)})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// next returns the stream's next message's state, failing when there is none.
func next(t *testing.T, st *sdktest.CRDTStream) sdktest.StreamMessage {
	t.Helper()
	m, ok := st.Next()
	if !ok {
		t.Fatal("no stream message")
	}
	return m
}

func wantNoMessage(t *testing.T, st *sdktest.CRDTStream) {
	t.Helper()
	if m, ok := st.Next(); ok {
		t.Fatalf("unexpected stream message %+v", m)
	}
}

func msgState(m sdktest.StreamMessage) string { return m.Reply.(*testpb.CrdtResponse).GetState() }

// TCK "streamed responses" and "stream ending action".
func TestCRDTStreamedResponses(t *testing.T) {
	h := sdktest.NewCRDT(t, gcounterEntity(), "e1")
	st := watch(t, h, "end:6")
	if !st.Open || stateOf(t, st.First) != "0" {
		t.Fatalf("first reply: open %v, %+v", st.Open, st.First)
	}
	for i, want := range []string{"1", "3", "6"} {
		if _, err := process(t, h, "inc:"+string(rune('1'+i))); err != nil {
			t.Fatal(err)
		}
		m := next(t, st)
		if msgState(m) != want || m.EndStream != (want == "6") {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if !st.Ended() || len(h.OpenStreams()) != 0 {
		t.Fatalf("ended %v, open %v", st.Ended(), h.OpenStreams())
	}
	if _, err := process(t, h, "inc:1"); err != nil {
		t.Fatal(err)
	}
	wantNoMessage(t, st)
}

// A change by another node reaches the streams; the command that changes the state does not
// see its own change, and read-only commands trigger nothing.
func TestCRDTStreamsSeeRemoteAndOtherLocalChanges(t *testing.T) {
	h := sdktest.NewCRDT(t, orsetEntity(), "e1")
	a := watch(t, h, "")
	b := watch(t, h, "add:b") // changes the state: a sees it, b does not
	if m := next(t, a); msgState(m) != "b" {
		t.Fatalf("a: %+v", m)
	}
	wantNoMessage(t, b)
	if _, err := process(t, h, ""); err != nil {
		t.Fatal(err)
	}
	wantNoMessage(t, a)
	h.Remote("", orsetOp(false, nil, []string{"r"}))
	for _, st := range []*sdktest.CRDTStream{a, b} {
		if m := next(t, st); msgState(m) != "b,r" {
			t.Fatalf("remote change: %+v", m)
		}
	}
	if got := h.OpenStreams(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("open streams %v", got)
	}
}

// TCK "streamed responses with cancellation" and "empty streamed responses with cancellation".
func TestCRDTStreamCancellation(t *testing.T) {
	h := sdktest.NewCRDT(t, pncounterEntity(), "e1")
	st := watch(t, h, "oncancel:dec:42")
	if _, err := process(t, h, "inc:10"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, st); msgState(m) != "10" {
		t.Fatalf("%+v", m)
	}
	empty := watch(t, h, "empty oncancel:inc:1")
	if !empty.Open || empty.First.Reply != nil {
		t.Fatalf("empty streamed reply: %+v", empty.First)
	}
	res := st.Cancel()
	if !proto.Equal(res.Update, pncounterOp(-42)) {
		t.Fatalf("cancel update %v", res.Update)
	}
	// The other stream's OnChange runs after the cancel handler's change.
	if m := next(t, empty); msgState(m) != "-32" {
		t.Fatalf("empty stream after cancel: %+v", m)
	}
	wantNoMessage(t, st)
	res = empty.Cancel()
	if !proto.Equal(res.Update, pncounterOp(1)) {
		t.Fatalf("second cancel %v", res.Update)
	}
	if r, _ := process(t, h, ""); stateOf(t, r) != "-31" {
		t.Fatalf("state %q", stateOf(t, r))
	}
}

func TestCRDTStreamCancelHandlers(t *testing.T) {
	h := sdktest.NewCRDT(t, pncounterEntity(), "e1")
	failing := watch(t, h, "oncancel:fail:no")
	if res := failing.Cancel(); res.Update != nil || len(res.SideEffects) != 0 {
		t.Fatalf("a failing cancel handler: %+v", res)
	}
	effect := watch(t, h, "oncancel:effect:bye")
	if res := effect.Cancel(); len(res.SideEffects) != 1 || res.SideEffects[0].Message.(*testpb.Request).GetId() != "bye" {
		t.Fatalf("cancel side effects: %+v", res)
	}
	plain := watch(t, h, "")
	if res := plain.Cancel(); res.Update != nil || len(res.SideEffects) != 0 || res.Deleted {
		t.Fatalf("no cancel handler: %+v", res)
	}
	deleting := watch(t, h, "oncancel:delete:")
	if res := deleting.Cancel(); !res.Deleted || !h.Deleted() {
		t.Fatalf("delete in a cancel handler: %+v", res)
	}
}

// TCK "streamed responses with side effects", plus forwards, failures and forbidden changes in
// OnChange.
func TestCRDTStreamMessagesEffectsAndFailures(t *testing.T) {
	h := sdktest.NewCRDT(t, gsetEntity(), "e1")
	effects := watch(t, h, "changeeffect:one")
	forward := watch(t, h, "changeforward:fw")
	failing := watch(t, h, "changefail")
	mutating := watch(t, h, "changemutate:add:z")
	distinct := watch(t, h, "changedistinct")
	if _, err := process(t, h, "add:a"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, effects); msgState(m) != "a" || len(m.SideEffects) != 1 || m.EndStream {
		t.Fatalf("effects: %+v", m)
	}
	if m := next(t, forward); m.Forward == nil || m.Forward.Message.(*testpb.Request).GetId() != "fw" || m.Reply != nil {
		t.Fatalf("forward: %+v", m)
	}
	if m := next(t, failing); m.Failure == nil || m.Failure.Description != "change failed" || !m.EndStream || !failing.Ended() {
		t.Fatalf("failing: %+v", m)
	}
	if m := next(t, mutating); m.Failure == nil || !strings.Contains(m.Failure.Description, "read-only") || !mutating.Ended() {
		t.Fatalf("mutating: %+v", m)
	}
	if m := next(t, distinct); msgState(m) != "a" {
		t.Fatalf("distinct: %+v", m)
	}
	// The same element again from another node: a delta that changes nothing visible.
	h.Remote("", gsetOp("a"))
	wantNoMessage(t, distinct)
	if res, _ := process(t, h, ""); stateOf(t, res) != "a" {
		t.Fatalf("the mutating stream changed the state: %q", stateOf(t, res))
	}
}

func TestCRDTStreamWithoutCallbacksEnds(t *testing.T) {
	h := sdktest.NewCRDT(t, flagEntity(), "e1")
	st := watch(t, h, "nocallbacks enable")
	if st.Open || !st.Ended() || stateOf(t, st.First) != "true" || !proto.Equal(st.First.Update, flagOp()) {
		t.Fatalf("stream without callbacks: %+v %+v", st, st.First)
	}
	if _, err := h.Stream("Watch", &testpb.CrdtRequest{Id: "e1", Ops: []string{"fail:nope"}}); err == nil {
		t.Fatal("a failing streamed command succeeded")
	}
	if len(h.OpenStreams()) != 0 {
		t.Fatalf("open streams %v", h.OpenStreams())
	}
}

// TCK "streamed responses for connection tracking": a monitor sees a connection vote true, and
// false when it is cancelled.
func TestCRDTConnectionTracking(t *testing.T) {
	h := sdktest.NewCRDT(t, voteEntity(), "e1")
	monitor := watch(t, h, "")
	connect := watch(t, h, "empty nochange vote:true oncancel:vote:false")
	if !proto.Equal(connect.First.Update, voteOp(true)) || connect.First.Reply != nil {
		t.Fatalf("connect: %+v", connect.First)
	}
	if m := next(t, monitor); msgState(m) != "self=true for=1 voters=1" {
		t.Fatalf("monitor: %+v", m)
	}
	if res := connect.Cancel(); !proto.Equal(res.Update, voteOp(false)) {
		t.Fatalf("cancel: %+v", res)
	}
	if m := next(t, monitor); msgState(m) != "self=false for=0 voters=1" {
		t.Fatalf("monitor: %+v", m)
	}
	if res := monitor.Cancel(); res.Update != nil {
		t.Fatalf("monitor cancel: %+v", res)
	}
}

func TestCRDTRegisterValidation(t *testing.T) {
	bad := sdk.NewCRDT[*sdk.GCounter](crdtService)
	sdk.CRDTStreamed(bad, "Process", func(*sdk.CRDTStreamContext[*sdk.GCounter, *testpb.CrdtResponse], *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		return nil, nil
	})
	sdk.CRDTCommand(bad, "Watch", func(*sdk.CRDTContext[*sdk.GCounter], *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		return nil, nil
	})
	sdk.CRDTCommand(bad, "Nope", func(*sdk.CRDTContext[*sdk.GCounter], *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		return nil, nil
	})
	err := sdk.NewServer().Register(bad)
	if !errors.Is(err, sdk.ErrStreamingMismatch) || !errors.Is(err, sdk.ErrMethodNotFound) {
		t.Fatalf("register: %v", err)
	}

	missing := sdk.NewCRDT[*sdk.GCounter](crdtService)
	err = sdk.NewServer().Register(missing)
	if !errors.Is(err, sdk.ErrMissingHandler) || !strings.Contains(err.Error(), "sdk.CRDTStreamed(entity, \"Watch\"") {
		t.Fatalf("missing handlers: %v", err)
	}

	iface := sdk.NewCRDT[sdk.CRDT](crdtService)
	if err := sdk.NewServer().Register(iface); !errors.Is(err, sdk.ErrInvalidType) {
		t.Fatalf("interface state type: %v", err)
	}
	elem := sdk.NewCRDT[*sdk.ORSet[proto.Message]](crdtService)
	if err := sdk.NewServer().Register(elem); !errors.Is(err, sdk.ErrInvalidType) {
		t.Fatalf("interface element type: %v", err)
	}

	clientStreaming := sdk.NewCRDT[*sdk.Flag]("kstate.test.v1.ActionTest")
	sdk.CRDTCommand(clientStreaming, "StreamedIn", func(*sdk.CRDTContext[*sdk.Flag], *testpb.Request) (*testpb.Response, error) {
		return nil, nil
	})
	if err := sdk.NewServer().Register(clientStreaming); !errors.Is(err, sdk.ErrStreamingMethod) {
		t.Fatalf("client streaming: %v", err)
	}

	if err := sdk.NewServer().Register(gcounterEntity()); err != nil {
		t.Fatalf("a good entity: %v", err)
	}
}
