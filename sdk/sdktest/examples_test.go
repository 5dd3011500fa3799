package sdktest_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

// counter is an entity of service kstate.test.v1.EventSourcedTwo (rpc Call(Request) returns
// (Response)) that records every non-empty Request.payload as an Event and refuses empty ones.
func counter() *sdk.EventSourcedEntity[*testpb.State] {
	e := sdk.NewEventSourced[*testpb.State]("kstate.test.v1.EventSourcedTwo", nil).SnapshotEvery(2)
	sdk.Command(e, "Call", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		if in.GetPayload() == "" {
			return nil, ctx.Fail("empty payload")
		}
		if err := ctx.Emit(&testpb.Event{Payload: in.GetPayload()}); err != nil {
			return nil, err
		}
		return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}, nil
	})
	sdk.Event(e, func(s *testpb.State, ev *testpb.Event) *testpb.State {
		s.Payloads = append(s.Payloads, ev.GetPayload())
		return s
	})
	return e
}

func ExampleNewEventSourced() {
	// In a test: h := sdktest.NewEventSourced(t, counter(), "c1")
	h := sdktest.NewEventSourced(nil, counter(), "c1")

	res, err := h.Command("Call", &testpb.Request{Id: "c1", Payload: "a"})
	fmt.Println(res.Reply.(*testpb.Response).GetMessage(), len(res.Events), err)

	_, err = h.Command("Call", &testpb.Request{Id: "c1"})
	var f *sdktest.Failure
	fmt.Println(errors.As(err, &f), f.Description)

	res, _ = h.Command("Call", &testpb.Request{Id: "c1", Payload: "b"})
	fmt.Println(res.CommandID, res.Reply.(*testpb.Response).GetMessage(), res.Snapshot.(*testpb.State).GetPayloads())
	fmt.Println(len(h.Events()), h.Sequence())
	// Output:
	// a 1 <nil>
	// true empty payload
	// 3 a,b [a b]
	// 2 2
}

func ExampleEventSourced_Restart() {
	h := sdktest.NewEventSourced(nil, counter(), "c1")
	for _, p := range []string{"a", "b", "c"} {
		_, _ = h.Command("Call", &testpb.Request{Payload: p})
	}
	// Restart rebuilds the entity as a proxy would, from the snapshot at 2 plus event 3, and
	// checks the result (and a full replay of events 1..3) against the state it had.
	h.Restart()
	fmt.Println(h.State().GetPayloads(), h.Snapshots()[0].Sequence)
	// Output:
	// [a b c] 2
}

func ExampleWithEvents() {
	// Given a history, when a command arrives, then...
	h := sdktest.NewEventSourced(nil, counter(), "c1",
		sdktest.WithSnapshot(2, &testpb.State{Payloads: []string{"a", "b"}}),
		sdktest.WithEvents(&testpb.Event{Payload: "c"}))
	res, _ := h.Command("Call", &testpb.Request{Payload: "d"})
	fmt.Println(res.Reply.(*testpb.Response).GetMessage(), h.Sequence())
	// Output:
	// a,b,c,d 4
}
