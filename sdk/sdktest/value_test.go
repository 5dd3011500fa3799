package sdktest_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

const valueService = "kstate.test.v1.ValueTest"

// value keeps a list of words: each Request.payload word is appended, except "delete", "fail",
// "panic" (after scribbling on the state), "forward", "effect" and "meta", which do what they
// say.
func value(initial func(string) *testpb.State) *sdk.ValueEntity[*testpb.State] {
	e := sdk.NewValue(valueService, initial)
	sdk.ValueCommand(e, "Process", func(ctx *sdk.ValueContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		for _, w := range strings.Fields(in.GetPayload()) {
			switch w {
			case "delete":
				ctx.Delete()
			case "fail":
				return nil, ctx.Fail("refused %s", in.GetId())
			case "panic":
				ctx.State().Payloads = append(ctx.State().Payloads, "corrupt")
				panic("boom")
			case "forward":
				return nil, ctx.Forward(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: "fw"})
			case "effect":
				if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: "se"}, false); err != nil {
					return nil, err
				}
			case "meta":
				return &testpb.Response{Message: ctx.Metadata().Get("who")}, nil
			default:
				s := ctx.State()
				s.Payloads = append(s.Payloads, w)
				if err := ctx.Update(s); err != nil {
					return nil, err
				}
			}
		}
		return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}, nil
	})
	return e
}

func valueCmd(t *testing.T, h *sdktest.Value[*testpb.State], payload string) *sdktest.ValueResult[*testpb.State] {
	t.Helper()
	res, err := h.Command("Process", &testpb.Request{Id: "v1", Payload: payload})
	if err != nil {
		t.Fatalf("Process %q: %v", payload, err)
	}
	return res
}

func TestValueHarness(t *testing.T) {
	h := sdktest.NewValue(t, value(nil), "v1")
	if _, ok := h.Stored(); ok {
		t.Fatal("a new entity has a stored value")
	}
	res := valueCmd(t, h, "a b")
	if res.CommandID != 1 || res.Reply.(*testpb.Response).GetMessage() != "a,b" || res.Deleted ||
		!proto.Equal(res.Updated, &testpb.State{Payloads: []string{"a", "b"}}) {
		t.Fatalf("update: %+v", res)
	}
	if res := valueCmd(t, h, ""); res.Updated != nil || res.Deleted {
		t.Fatalf("read-only command stored %+v", res)
	}
	if v, ok := h.Stored(); !ok || !proto.Equal(v, &testpb.State{Payloads: []string{"a", "b"}}) {
		t.Fatalf("stored %v %v", v, ok)
	}
	// State is a copy.
	h.State().Payloads = nil
	if len(h.State().GetPayloads()) != 2 {
		t.Fatal("State returned the entity's own message")
	}
	h.Restart()
	if !proto.Equal(h.State(), &testpb.State{Payloads: []string{"a", "b"}}) {
		t.Fatalf("after restart %v", h.State())
	}

	res = valueCmd(t, h, "delete")
	if !res.Deleted || res.Updated != nil || res.Reply.(*testpb.Response).GetMessage() != "" {
		t.Fatalf("delete: %+v", res)
	}
	if _, ok := h.Stored(); ok {
		t.Fatal("a deleted entity has a stored value")
	}
	h.Restart()
	res = valueCmd(t, h, "c delete d")
	if res.Deleted || !proto.Equal(res.Updated, &testpb.State{Payloads: []string{"d"}}) {
		t.Fatalf("update, delete, update: %+v", res)
	}
}

func TestValueHarnessFailuresAndEffects(t *testing.T) {
	h := sdktest.NewValue(t, value(nil), "v1", sdktest.WithState(&testpb.State{Payloads: []string{"s"}}))
	if !proto.Equal(h.State(), &testpb.State{Payloads: []string{"s"}}) {
		t.Fatalf("WithState: %v", h.State())
	}
	_, err := h.Command("Process", &testpb.Request{Id: "v1", Payload: "x effect fail"})
	var f *sdktest.Failure
	if !errors.As(err, &f) || f.Description != "refused v1" || f.Restart || f.CommandID != 1 {
		t.Fatalf("failure: %v", err)
	}
	// The panicking handler scribbled on its copy of the state; the restart starts from the
	// stored value.
	_, err = h.Command("Process", &testpb.Request{Id: "v1", Payload: "y panic"})
	if !errors.As(err, &f) || !f.Restart || !strings.Contains(err.Error(), "entity restarted") {
		t.Fatalf("panic: %v", err)
	}
	if !proto.Equal(h.State(), &testpb.State{Payloads: []string{"s"}}) {
		t.Fatalf("state after failures: %v", h.State())
	}
	res := valueCmd(t, h, "z effect forward")
	if res.Reply != nil || res.Forward == nil || res.Forward.Service != twoService || !proto.Equal(res.Forward.Message, &testpb.Request{Id: "v1", Payload: "fw"}) {
		t.Fatalf("forward: %+v", res)
	}
	if len(res.SideEffects) != 1 || res.SideEffects[0].Synchronous || !proto.Equal(res.Updated, &testpb.State{Payloads: []string{"s", "z"}}) {
		t.Fatalf("side effects %+v, updated %v", res.SideEffects, res.Updated)
	}
	res, err = h.Command("Process", &testpb.Request{Payload: "meta"}, sdktest.WithMetadata("who", "bob"))
	if err != nil || res.Reply.(*testpb.Response).GetMessage() != "bob" {
		t.Fatalf("metadata: %v %v", res, err)
	}
}

func TestValueHarnessRestartCatchesUnstableInitialState(t *testing.T) {
	n := 0
	unstable := func(string) *testpb.State {
		n++
		return &testpb.State{Payloads: []string{strings.Repeat("x", n)}}
	}
	tb := &fakeTB{}
	h := sdktest.NewValue(tb, value(unstable), "v1")
	msg := expectFatal(t, tb, h.Restart)
	if !strings.Contains(msg, "restarting from the stored value gives") {
		t.Fatalf("fatal message %q", msg)
	}
	// With a stored value the initial state does not matter.
	h = sdktest.NewValue(t, value(unstable), "v1", sdktest.WithState(&testpb.State{}))
	h.Restart()
}

func TestValueHarnessErrors(t *testing.T) {
	tb := &fakeTB{}
	msg := expectFatal(t, tb, func() { sdktest.NewValue(tb, sdk.NewValue[*testpb.State](valueService, nil), "v1") })
	if !strings.Contains(msg, "missing command handler") {
		t.Fatalf("definition error: %q", msg)
	}
	tb = &fakeTB{}
	msg = expectFatal(t, tb, func() { sdktest.NewValue(tb, value(nil), "v1", sdktest.WithState(&testpb.Response{})) })
	if !strings.Contains(msg, "state type") {
		t.Fatalf("stored value of another type: %q", msg)
	}
	tb = &fakeTB{}
	msg = expectFatal(t, tb, func() { sdktest.NewValue(tb, value(nil), "v1", sdktest.WithEvents(&testpb.Event{})) })
	if !strings.Contains(msg, "for event-sourced entities") {
		t.Fatalf("WithEvents: %q", msg)
	}
	tb = &fakeTB{}
	msg = expectFatal(t, tb, func() {
		sdktest.NewEventSourced(tb, entity(appendPayload), "e1", sdktest.WithState(&testpb.State{}))
	})
	if !strings.Contains(msg, "for value entities") {
		t.Fatalf("WithState on an event-sourced entity: %q", msg)
	}
}
