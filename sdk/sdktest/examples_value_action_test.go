package sdktest_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

// tags is a value entity of service kstate.test.v1.ValueTest (rpc Process(Request) returns
// (Response)) that keeps a list of tags; the payload "-" deletes them.
func tags() *sdk.ValueEntity[*testpb.State] {
	e := sdk.NewValue[*testpb.State]("kstate.test.v1.ValueTest", nil)
	sdk.ValueCommand(e, "Process", func(ctx *sdk.ValueContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		switch in.GetPayload() {
		case "":
			return nil, ctx.Fail("empty tag")
		case "-":
			ctx.Delete()
		default:
			s := ctx.State()
			s.Payloads = append(s.Payloads, in.GetPayload())
			if err := ctx.Update(s); err != nil {
				return nil, err
			}
		}
		return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}, nil
	})
	return e
}

func ExampleNewValue() {
	// In a test: h := sdktest.NewValue(t, tags(), "t1")
	h := sdktest.NewValue(nil, tags(), "t1", sdktest.WithState(&testpb.State{Payloads: []string{"old"}}))

	res, err := h.Command("Process", &testpb.Request{Payload: "new"})
	fmt.Println(res.Reply.(*testpb.Response).GetMessage(), res.Updated.GetPayloads(), err)

	_, err = h.Command("Process", &testpb.Request{})
	fmt.Println(err)

	res, _ = h.Command("Process", &testpb.Request{Payload: "-"})
	_, stored := h.Stored()
	fmt.Println(res.Deleted, stored)
	// Output:
	// old,new [old new] <nil>
	// command 2 failed: empty tag
	// true false
}

func ExampleValue_Restart() {
	h := sdktest.NewValue(nil, tags(), "t1")
	_, _ = h.Command("Process", &testpb.Request{Payload: "a"})
	// Restart activates the entity again from the stored value, as a proxy does after
	// passivation, and checks that it comes back with the same state.
	h.Restart()
	stored, _ := h.Stored()
	fmt.Println(h.State().GetPayloads(), stored.GetPayloads())
	// Output:
	// [a] [a]
}

// upper is an action of service kstate.test.v1.ActionTest that upper-cases payloads, in the
// four gRPC shapes.
func upper() *sdk.Action {
	a := sdk.NewAction("kstate.test.v1.ActionTest")
	up := func(r *testpb.Request) *testpb.Response {
		return &testpb.Response{Message: strings.ToUpper(r.GetPayload())}
	}
	sdk.ActionUnary(a, "Unary", func(ctx *sdk.ActionContext, in *testpb.Request) (*testpb.Response, error) {
		return up(in), nil
	})
	sdk.ActionStreamedIn(a, "StreamedIn", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		var all []string
		for msg, err := range in.All() {
			if err != nil {
				return nil, err
			}
			all = append(all, up(msg).GetMessage())
		}
		return &testpb.Response{Message: strings.Join(all, "")}, nil
	})
	sdk.ActionStreamedOut(a, "StreamedOut", func(ctx *sdk.ActionContext, in *testpb.Request, send func(*testpb.Response) error) error {
		for _, c := range in.GetPayload() {
			if err := send(up(&testpb.Request{Payload: string(c)})); err != nil {
				return err
			}
		}
		return nil
	})
	sdk.ActionStreamed(a, "Streamed", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*testpb.Request], send func(*testpb.Response) error) error {
		for {
			msg, err := in.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := send(up(msg)); err != nil {
				return err
			}
		}
	})
	return a
}

func ExampleNewAction() {
	// In a test: h := sdktest.NewAction(t, upper())
	h := sdktest.NewAction(nil, upper())

	res, _ := h.Unary("Unary", &testpb.Request{Payload: "abc"})
	fmt.Println(res.Reply.(*testpb.Response).GetMessage())

	res, _ = h.StreamedIn("StreamedIn", []proto.Message{&testpb.Request{Payload: "d"}, &testpb.Request{Payload: "e"}})
	fmt.Println(res.Reply.(*testpb.Response).GetMessage())

	elems, _ := h.StreamedOut("StreamedOut", &testpb.Request{Payload: "fg"})
	fmt.Println(len(elems), elems[0].Reply.(*testpb.Response).GetMessage(), elems[1].Reply.(*testpb.Response).GetMessage())

	elems, _ = h.Streamed("Streamed", []proto.Message{&testpb.Request{Payload: "h"}})
	fmt.Println(len(elems), elems[0].Reply.(*testpb.Response).GetMessage())
	// Output:
	// ABC
	// DE
	// 2 F G
	// 1 H
}

func ExampleAction_Open() {
	h := sdktest.NewAction(nil, upper())
	call := h.Open("Streamed")
	defer call.Close()
	call.Send(&testpb.Request{Payload: "one"})
	res, _ := call.Recv() // the handler answered before the next message is sent
	fmt.Println(res.Reply.(*testpb.Response).GetMessage())
	call.Send(&testpb.Request{Payload: "two"})
	call.CloseSend()
	res, _ = call.Recv()
	fmt.Println(res.Reply.(*testpb.Response).GetMessage())
	_, err := call.Recv()
	fmt.Println(err)
	// Output:
	// ONE
	// TWO
	// EOF
}
