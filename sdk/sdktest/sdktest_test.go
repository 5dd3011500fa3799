package sdktest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

const (
	testService = "kstate.test.v1.EventSourcedTest"
	twoService  = "kstate.test.v1.EventSourcedTwo"
)

// entity appends every Request.payload word as an event; the words "fail", "panic", "forward"
// and "effect" do what they say instead, and "meta" replies with the "who" metadata.
func entity(apply func(*testpb.State, *testpb.Event) *testpb.State) *sdk.EventSourcedEntity[*testpb.State] {
	e := sdk.NewEventSourced[*testpb.State](testService, nil).SnapshotEvery(3)
	sdk.Command(e, "Process", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		for _, w := range strings.Fields(in.GetPayload()) {
			switch w {
			case "fail":
				return nil, ctx.Fail("refused %s", in.GetId())
			case "panic":
				ctx.State().Payloads = append(ctx.State().Payloads, "corrupt")
				panic("boom")
			case "forward":
				return nil, ctx.Forward(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: "fw"})
			case "effect":
				if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: "se"}, true); err != nil {
					return nil, err
				}
			case "meta":
				return &testpb.Response{Message: ctx.Metadata().Get("who")}, nil
			default:
				if err := ctx.Emit(&testpb.Event{Payload: w}); err != nil {
					return nil, err
				}
			}
		}
		return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}, nil
	})
	sdk.Command(e, "Composite", func(ctx *sdk.CommandContext[*testpb.State], _ *testpb.CompositeRequest) (*testpb.Response, error) {
		return &testpb.Response{Message: ctx.EntityID()}, nil
	})
	sdk.Event(e, apply)
	return e
}

func appendPayload(s *testpb.State, e *testpb.Event) *testpb.State {
	s.Payloads = append(s.Payloads, e.GetPayload())
	return s
}

func process(t *testing.T, h *sdktest.EventSourced[*testpb.State], payload string) *sdktest.Result {
	t.Helper()
	res, err := h.Command("Process", &testpb.Request{Id: "e1", Payload: payload})
	if err != nil {
		t.Fatalf("Process %q: %v", payload, err)
	}
	return res
}

// fakeTB records the harness's fatal errors; Fatalf stops the caller with a panic, as
// testing.T.Fatalf stops it with runtime.Goexit.
type fakeTB struct{ msg string }

type fatal struct{}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatal{})
}

// expectFatal runs fn and returns the message it failed the fake TB with.
func expectFatal(t *testing.T, tb *fakeTB, fn func()) string {
	t.Helper()
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatal); !ok {
					panic(r)
				}
			}
		}()
		fn()
	}()
	if tb.msg == "" {
		t.Fatal("the harness did not fail the test")
	}
	return tb.msg
}

func TestCommandsEventsSnapshots(t *testing.T) {
	h := sdktest.NewEventSourced(t, entity(appendPayload), "e1")
	res := process(t, h, "a b")
	if res.CommandID != 1 || res.Reply.(*testpb.Response).GetMessage() != "a,b" || len(res.Events) != 2 || res.Snapshot != nil {
		t.Fatalf("first command: %+v", res)
	}
	res = process(t, h, "c")
	if res.CommandID != 2 || res.Snapshot == nil || !proto.Equal(res.Snapshot, &testpb.State{Payloads: []string{"a", "b", "c"}}) {
		t.Fatalf("second command: %+v", res)
	}
	process(t, h, "d e f g")
	evs := h.Events()
	if len(evs) != 7 || !proto.Equal(evs[6], &testpb.Event{Payload: "g"}) {
		t.Fatalf("events %v", evs)
	}
	snaps := h.Snapshots()
	if len(snaps) != 2 || snaps[0].Sequence != 3 || snaps[1].Sequence != 7 || len(snaps[1].State.GetPayloads()) != 7 {
		t.Fatalf("snapshots %+v", snaps)
	}
	if h.Sequence() != 7 || len(h.State().GetPayloads()) != 7 {
		t.Fatalf("sequence %d, state %v", h.Sequence(), h.State())
	}
	// State is a copy.
	h.State().Payloads = nil
	if len(h.State().GetPayloads()) != 7 {
		t.Fatal("State returned the entity's own message")
	}
	h.Restart()
	if h.Sequence() != 7 || len(h.State().GetPayloads()) != 7 {
		t.Fatalf("after restart: sequence %d, state %v", h.Sequence(), h.State())
	}
}

func TestFailureForwardSideEffectMetadata(t *testing.T) {
	h := sdktest.NewEventSourced(t, entity(appendPayload), "e1")
	process(t, h, "a")
	_, err := h.Command("Process", &testpb.Request{Id: "e1", Payload: "b fail"})
	var f *sdktest.Failure
	if !errors.As(err, &f) || f.Description != "refused e1" || f.Restart || f.CommandID != 2 {
		t.Fatalf("failure: %v", err)
	}
	res := process(t, h, "c effect forward")
	if res.Reply != nil || res.Forward == nil || res.Forward.Service != twoService || res.Forward.Method != "Call" ||
		!proto.Equal(res.Forward.Message, &testpb.Request{Id: "e1", Payload: "fw"}) {
		t.Fatalf("forward: %+v", res)
	}
	if len(res.SideEffects) != 1 || !res.SideEffects[0].Synchronous || !proto.Equal(res.SideEffects[0].Message, &testpb.Request{Id: "e1", Payload: "se"}) {
		t.Fatalf("side effects: %+v", res.SideEffects)
	}
	if len(res.Events) != 1 || !proto.Equal(h.State(), &testpb.State{Payloads: []string{"a", "c"}}) {
		t.Fatalf("events %v, state %v", res.Events, h.State())
	}
	res, err = h.Command("Process", &testpb.Request{Payload: "meta"}, sdktest.WithMetadata("Who", "alice"))
	if err != nil || res.Reply.(*testpb.Response).GetMessage() != "alice" {
		t.Fatalf("metadata: %v %v", res, err)
	}
}

func TestPanicRestartsTheEntity(t *testing.T) {
	h := sdktest.NewEventSourced(t, entity(appendPayload), "e1")
	process(t, h, "a")
	_, err := h.Command("Process", &testpb.Request{Payload: "b panic"})
	var f *sdktest.Failure
	if !errors.As(err, &f) || !f.Restart {
		t.Fatalf("panic: %v", err)
	}
	// The handler corrupted the state it read; the restart rebuilt it from the journal.
	if !proto.Equal(h.State(), &testpb.State{Payloads: []string{"a"}}) {
		t.Fatalf("state after the restart: %v", h.State())
	}
}

func TestRestartCatchesImpureEventHandlers(t *testing.T) {
	calls := 0
	impure := func(s *testpb.State, e *testpb.Event) *testpb.State {
		calls++
		s.Payloads = append(s.Payloads, fmt.Sprintf("%s#%d", e.GetPayload(), calls))
		return s
	}
	tb := &fakeTB{}
	h := sdktest.NewEventSourced(tb, entity(impure), "e1")
	if _, err := h.Command("Process", &testpb.Request{Payload: "a b"}); err != nil {
		t.Fatal(err)
	}
	msg := expectFatal(t, tb, h.Restart)
	if !strings.Contains(msg, "event handlers must be pure") {
		t.Fatalf("fatal message %q", msg)
	}
}

func TestHistoryOptions(t *testing.T) {
	h := sdktest.NewEventSourced(t, entity(appendPayload), "e1",
		sdktest.WithSnapshot(10, &testpb.State{Payloads: []string{"s"}}),
		sdktest.WithEvents(&testpb.Event{Payload: "x"}, &testpb.Event{Payload: "y"}))
	if h.Sequence() != 12 || !proto.Equal(h.State(), &testpb.State{Payloads: []string{"s", "x", "y"}}) {
		t.Fatalf("sequence %d state %v", h.Sequence(), h.State())
	}
	if res := process(t, h, "z"); res.Snapshot != nil {
		t.Fatal("snapshot at 13")
	}
	if res := process(t, h, "v w"); res.Snapshot == nil {
		t.Fatal("no snapshot on reaching 15")
	}
	if snaps := h.Snapshots(); len(snaps) != 2 || snaps[0].Sequence != 10 || snaps[1].Sequence != 15 {
		t.Fatalf("snapshots %+v", snaps)
	}
	h.Restart()
	if !proto.Equal(h.State(), &testpb.State{Payloads: []string{"s", "x", "y", "z", "v", "w"}}) {
		t.Fatalf("after restart %v", h.State())
	}
}

func TestDefinitionAndReplayErrorsFail(t *testing.T) {
	bad := sdk.NewEventSourced[*testpb.State](testService, nil) // no handlers
	tb := &fakeTB{}
	msg := expectFatal(t, tb, func() { sdktest.NewEventSourced(tb, bad, "e1") })
	if !strings.Contains(msg, "missing command handler") {
		t.Fatalf("definition error: %q", msg)
	}

	tb = &fakeTB{}
	msg = expectFatal(t, tb, func() {
		sdktest.NewEventSourced(tb, entity(appendPayload), "e1", sdktest.WithEvents(&testpb.Response{}))
	})
	if !strings.Contains(msg, "no event handler") {
		t.Fatalf("replay error: %q", msg)
	}

	// Without a TB, the harness panics.
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "missing command handler") {
			t.Fatalf("nil TB: recovered %v", r)
		}
	}()
	sdktest.NewEventSourced(nil, bad, "e1")
}
