package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

// The value entity examples implement this service from kstate's test protos:
//
//	service ValueTest { rpc Process(Request) returns (Response); }
//
// and the action examples this one:
//
//	service ActionTest {
//	  rpc Unary(Request) returns (Response);
//	  rpc StreamedIn(stream Request) returns (Response);
//	  rpc StreamedOut(Request) returns (stream Response);
//	  rpc Streamed(stream Request) returns (stream Response);
//	}

func ExampleNewValue() {
	// A list of words per entity, stored whole.
	e := sdk.NewValue("kstate.test.v1.ValueTest", func(entityID string) *testpb.State {
		return &testpb.State{} // the state of an entity without a stored value
	}).
		PersistenceID("words"). // where values are stored; default "ValueTest"
		Passivation(time.Minute)
	sdk.ValueCommand(e, "Process", func(ctx *sdk.ValueContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		if in.GetPayload() == "clear" {
			ctx.Delete()
			return &testpb.Response{Message: "cleared"}, nil
		}
		s := ctx.State() // the command's own copy: modify it, then Update
		s.Payloads = append(s.Payloads, in.GetPayload())
		return &testpb.Response{Message: strings.Join(s.GetPayloads(), " ")}, ctx.Update(s)
	})

	h := sdktest.NewValue(nil, e, "w1") // in a test, pass t rather than nil
	for _, p := range []string{"hello", "value", "clear", "again"} {
		res, err := h.Command("Process", &testpb.Request{Id: "w1", Payload: p})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s (stored: %v, deleted: %v)\n", res.Reply.(*testpb.Response).GetMessage(), res.Updated.GetPayloads(), res.Deleted)
	}
	// Output:
	// hello (stored: [hello], deleted: false)
	// hello value (stored: [hello value], deleted: false)
	// cleared (stored: [], deleted: true)
	// again (stored: [again], deleted: false)
}

func ExampleValueCommand() {
	e := sdk.NewValue[*testpb.State]("kstate.test.v1.ValueTest", nil)
	sdk.ValueCommand(e, "Process", func(ctx *sdk.ValueContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		switch {
		case in.GetPayload() == "":
			// A command failure: nothing is stored, side effects are dropped.
			return nil, ctx.Fail("Payload for %s must not be empty.", ctx.EntityID())
		case len(ctx.State().GetPayloads()) >= 2:
			// Hand the command to another service; the client gets that service's reply.
			return nil, ctx.Forward("kstate.test.v1.EventSourcedTwo", "Call", in)
		}
		s := ctx.State()
		s.Payloads = append(s.Payloads, in.GetPayload())
		if err := ctx.Update(s); err != nil {
			return nil, err
		}
		// Ask the proxy to notify another service once the value is stored.
		if err := ctx.SideEffect("kstate.test.v1.EventSourcedTwo", "Call", in, false); err != nil {
			return nil, err
		}
		return &testpb.Response{Message: fmt.Sprintf("%d stored", len(s.GetPayloads()))}, nil
	})

	h := sdktest.NewValue(nil, e, "w1")
	for _, p := range []string{"", "a", "b", "c"} {
		res, err := h.Command("Process", &testpb.Request{Id: "w1", Payload: p})
		switch {
		case err != nil:
			fmt.Println("failure:", err.(*sdktest.Failure).Description)
		case res.Forward != nil:
			fmt.Println("forwarded to", res.Forward.Service+"/"+res.Forward.Method)
		default:
			fmt.Println(res.Reply.(*testpb.Response).GetMessage(), "+", len(res.SideEffects), "side effect")
		}
	}
	// Output:
	// failure: Payload for w1 must not be empty.
	// 1 stored + 1 side effect
	// 2 stored + 1 side effect
	// forwarded to kstate.test.v1.EventSourcedTwo/Call
}

// shout is an action with a handler for each of the four gRPC shapes.
func shout() *sdk.Action {
	a := sdk.NewAction("kstate.test.v1.ActionTest")
	// Unary: one input, one response.
	sdk.ActionUnary(a, "Unary", func(ctx *sdk.ActionContext, in *testpb.Request) (*testpb.Response, error) {
		if in.GetPayload() == "" {
			return nil, ctx.Fail("nothing to shout")
		}
		return &testpb.Response{Message: strings.ToUpper(in.GetPayload())}, nil
	})
	// Streamed in: read until io.EOF (or range over in.All()), then respond once.
	sdk.ActionStreamedIn(a, "StreamedIn", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		var words []string
		for msg, err := range in.All() {
			if err != nil {
				return nil, err
			}
			words = append(words, strings.ToUpper(msg.GetPayload()))
		}
		return &testpb.Response{Message: strings.Join(words, " ")}, nil
	})
	// Streamed out: send any number of elements, then return.
	sdk.ActionStreamedOut(a, "StreamedOut", func(ctx *sdk.ActionContext, in *testpb.Request, send func(*testpb.Response) error) error {
		for _, w := range strings.Fields(in.GetPayload()) {
			if err := send(&testpb.Response{Message: strings.ToUpper(w)}); err != nil {
				return err
			}
		}
		return nil
	})
	// Duplex: an element per message here, but any interleaving is allowed.
	sdk.ActionStreamed(a, "Streamed", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*testpb.Request], send func(*testpb.Response) error) error {
		for {
			msg, err := in.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := send(&testpb.Response{Message: strings.ToUpper(msg.GetPayload())}); err != nil {
				return err
			}
		}
	})
	return a
}

func ExampleNewAction() {
	h := sdktest.NewAction(nil, shout()) // in a test, pass t rather than nil

	res, _ := h.Unary("Unary", &testpb.Request{Payload: "hello"})
	fmt.Println(res.Reply.(*testpb.Response).GetMessage())

	_, err := h.Unary("Unary", &testpb.Request{})
	fmt.Println(err)

	res, _ = h.StreamedIn("StreamedIn", []proto.Message{&testpb.Request{Payload: "a"}, &testpb.Request{Payload: "b"}})
	fmt.Println(res.Reply.(*testpb.Response).GetMessage())

	elems, _ := h.StreamedOut("StreamedOut", &testpb.Request{Payload: "x y z"})
	fmt.Println(len(elems), elems[2].Reply.(*testpb.Response).GetMessage())
	// Output:
	// HELLO
	// action failed: nothing to shout
	// A B
	// 3 Z
}

func ExampleActionUnary() {
	a := sdk.NewAction("kstate.test.v1.ActionTest")
	sdk.ActionUnary(a, "Unary", func(ctx *sdk.ActionContext, in *testpb.Request) (*testpb.Response, error) {
		// Side effects go with the response, even a failure.
		if err := ctx.SideEffect("kstate.test.v1.EventSourcedTwo", "Call", in, false); err != nil {
			return nil, err
		}
		switch in.GetPayload() {
		case "":
			return nil, ctx.Fail("empty payload")
		case "later":
			return nil, nil // no reply
		case "elsewhere":
			return nil, ctx.Forward("kstate.test.v1.EventSourcedTwo", "Call", in)
		}
		return &testpb.Response{Message: "done: " + in.GetPayload()}, nil
	})
	sdk.ActionStreamedIn(a, "StreamedIn", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		return nil, nil
	})
	sdk.ActionStreamedOut(a, "StreamedOut", func(*sdk.ActionContext, *testpb.Request, func(*testpb.Response) error) error { return nil })
	sdk.ActionStreamed(a, "Streamed", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request], func(*testpb.Response) error) error {
		return nil
	})

	h := sdktest.NewAction(nil, a)
	for _, p := range []string{"now", "later", "elsewhere", ""} {
		res, err := h.Unary("Unary", &testpb.Request{Payload: p})
		switch {
		case err != nil:
			fmt.Println(err, "+", len(res.SideEffects), "side effect")
		case res.Forward != nil:
			fmt.Println("forward to", res.Forward.Method, "+", len(res.SideEffects), "side effect")
		case res.NoReply():
			fmt.Println("no reply +", len(res.SideEffects), "side effect")
		default:
			fmt.Println(res.Reply.(*testpb.Response).GetMessage(), "+", len(res.SideEffects), "side effect")
		}
	}
	// Output:
	// done: now + 1 side effect
	// no reply + 1 side effect
	// forward to Call + 1 side effect
	// action failed: empty payload + 1 side effect
}

func ExampleActionStreamed() {
	h := sdktest.NewAction(nil, shout())
	call := h.Open("Streamed")
	defer call.Close()
	for _, w := range []string{"ping", "pong"} {
		call.Send(&testpb.Request{Payload: w})
		res, _ := call.Recv()
		fmt.Println(res.Reply.(*testpb.Response).GetMessage())
	}
	call.CloseSend()
	_, err := call.Recv()
	fmt.Println(err)
	// Output:
	// PING
	// PONG
	// EOF
}

func ExampleServer_HandleActionUnary() {
	// An embedding runtime can call actions without gRPC.
	srv := sdk.NewServer()
	if err := srv.Register(shout()); err != nil {
		fmt.Println(err)
		return
	}
	payload, _ := anypb.New(&testpb.Request{Payload: "direct"})
	resp, err := srv.HandleActionUnary(context.Background(), &actionpb.ActionCommand{
		ServiceName: "kstate.test.v1.ActionTest", Name: "Unary", Payload: payload,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	out := &testpb.Response{}
	_ = resp.GetReply().GetPayload().UnmarshalTo(out)
	fmt.Println(resp.GetReply().GetPayload().GetTypeUrl(), out.GetMessage())
	// Output:
	// type.googleapis.com/kstate.test.v1.Response DIRECT
}
