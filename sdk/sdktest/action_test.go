package sdktest_test

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

const actionService = "kstate.test.v1.ActionTest"

// words handles one message: "fail", "forward", "effect", "none" and "meta" do what they say,
// "soft X" fails the response with X without returning an error, other words are echoed.
func words(ctx *sdk.ActionContext, payload string) (*testpb.Response, error) {
	var echo []string
	for _, w := range strings.Fields(payload) {
		switch w {
		case "fail":
			return nil, ctx.Fail("refused %q", payload)
		case "soft":
			_ = ctx.Fail("%s", strings.TrimPrefix(payload, "soft "))
			return nil, nil
		case "forward":
			return nil, ctx.Forward(twoService, "Call", &testpb.Request{Payload: "fw"})
		case "effect":
			if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Payload: "se"}, true); err != nil {
				return nil, err
			}
		case "none":
			return nil, nil
		case "meta":
			echo = append(echo, ctx.Metadata().Get("who"))
		default:
			echo = append(echo, w)
		}
	}
	return &testpb.Response{Message: strings.Join(echo, " ")}, nil
}

func echoAction() *sdk.Action {
	a := sdk.NewAction(actionService)
	sdk.ActionUnary(a, "Unary", func(ctx *sdk.ActionContext, in *testpb.Request) (*testpb.Response, error) {
		return words(ctx, in.GetPayload())
	})
	sdk.ActionStreamedIn(a, "StreamedIn", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		var all []string
		for msg, err := range in.All() {
			if err != nil {
				return nil, err
			}
			r, err := words(ctx, msg.GetPayload())
			if err != nil || r == nil {
				return r, err
			}
			all = append(all, r.GetMessage())
		}
		return &testpb.Response{Message: strings.Join(all, "+")}, nil
	})
	sdk.ActionStreamedOut(a, "StreamedOut", func(ctx *sdk.ActionContext, in *testpb.Request, send func(*testpb.Response) error) error {
		for _, p := range strings.Split(in.GetPayload(), ",") {
			r, err := words(ctx, p)
			if err != nil {
				return err
			}
			if err := send(r); err != nil {
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
			r, err := words(ctx, msg.GetPayload())
			if err != nil {
				return err
			}
			if err := send(r); err != nil {
				return err
			}
		}
	})
	return a
}

func reply(r *sdktest.ActionResult) string {
	switch {
	case r.Failure != nil:
		return "failure:" + r.Failure.Description
	case r.Forward != nil:
		return "forward:" + r.Forward.Service + "/" + r.Forward.Method
	case r.NoReply():
		return "none"
	}
	return r.Reply.(*testpb.Response).GetMessage()
}

func TestActionHarnessUnary(t *testing.T) {
	h := sdktest.NewAction(t, echoAction())
	res, err := h.Unary("Unary", &testpb.Request{Payload: "hello effect"})
	if err != nil || reply(res) != "hello" || len(res.SideEffects) != 1 || !res.SideEffects[0].Synchronous {
		t.Fatalf("reply: %+v %v", res, err)
	}
	res, err = h.Unary("Unary", &testpb.Request{Payload: "none"})
	if err != nil || !res.NoReply() {
		t.Fatalf("no reply: %+v %v", res, err)
	}
	res, err = h.Unary("Unary", &testpb.Request{Payload: "forward"})
	if err != nil || reply(res) != "forward:"+twoService+"/Call" || !proto.Equal(res.Forward.Message, &testpb.Request{Payload: "fw"}) {
		t.Fatalf("forward: %+v %v", res, err)
	}
	// A failure keeps its side effects; the error is the *Failure.
	res, err = h.Unary("Unary", &testpb.Request{Payload: "effect fail"})
	var f *sdktest.Failure
	if !errors.As(err, &f) || f != res.Failure || f.Description != `refused "effect fail"` || len(res.SideEffects) != 1 {
		t.Fatalf("failure: %+v %v", res, err)
	}
	if err.Error() != `action failed: refused "effect fail"` {
		t.Fatalf("failure text %q", err)
	}
	res, err = h.Unary("Unary", &testpb.Request{Payload: "meta"}, sdktest.WithMetadata("who", "carol"))
	if err != nil || reply(res) != "carol" {
		t.Fatalf("metadata: %+v %v", res, err)
	}
}

func TestActionHarnessStreamedIn(t *testing.T) {
	h := sdktest.NewAction(t, echoAction())
	res, err := h.StreamedIn("StreamedIn", []proto.Message{&testpb.Request{Payload: "a"}, &testpb.Request{Payload: "b effect"}, &testpb.Request{Payload: "meta"}},
		sdktest.WithMetadata("who", "dave"))
	if err != nil || reply(res) != "a+b+dave" || len(res.SideEffects) != 1 {
		t.Fatalf("streamed in: %+v %v", res, err)
	}
	if res, err := h.StreamedIn("StreamedIn", nil); err != nil || reply(res) != "" {
		t.Fatalf("no messages: %+v %v", res, err)
	}
	res, err = h.StreamedIn("StreamedIn", []proto.Message{&testpb.Request{Payload: "effect"}, &testpb.Request{Payload: "fail"}})
	if err == nil || reply(res) != `failure:refused "fail"` || len(res.SideEffects) != 1 {
		t.Fatalf("failure: %+v %v", res, err)
	}
}

func TestActionHarnessStreamedOut(t *testing.T) {
	h := sdktest.NewAction(t, echoAction())
	rs, err := h.StreamedOut("StreamedOut", &testpb.Request{Payload: "a,b effect,none,forward"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, reply(r))
	}
	if strings.Join(got, "|") != "a|b|none|forward:"+twoService+"/Call" || len(rs[1].SideEffects) != 1 {
		t.Fatalf("elements %q", got)
	}
	rs, err = h.StreamedOut("StreamedOut", &testpb.Request{Payload: "a,effect fail,b"})
	var f *sdktest.Failure
	if !errors.As(err, &f) || len(rs) != 2 || reply(rs[0]) != "a" || rs[1].Failure != f || len(rs[1].SideEffects) != 1 {
		t.Fatalf("failure: %+v %v", rs, err)
	}
	// Failure elements do not end the stream; the error is the first one.
	rs, err = h.StreamedOut("StreamedOut", &testpb.Request{Payload: "a,soft one,b,soft two"})
	if !errors.As(err, &f) || len(rs) != 4 || rs[1].Failure != f || reply(rs[1]) != "failure:one" || reply(rs[2]) != "b" || reply(rs[3]) != "failure:two" {
		t.Fatalf("failure elements: %+v %v", rs, err)
	}
}

func TestActionHarnessStreamed(t *testing.T) {
	h := sdktest.NewAction(t, echoAction())
	rs, err := h.Streamed("Streamed", []proto.Message{&testpb.Request{Payload: "x"}, &testpb.Request{Payload: "y"}})
	if err != nil || len(rs) != 2 || reply(rs[0]) != "x" || reply(rs[1]) != "y" {
		t.Fatalf("batch: %+v %v", rs, err)
	}

	// Interleaved: each message's element arrives before the next message is sent.
	d := h.Open("Streamed", sdktest.WithMetadata("who", "erin"))
	for _, step := range [][2]string{{"one", "one"}, {"meta", "erin"}, {"effect two", "two"}} {
		d.Send(&testpb.Request{Payload: step[0]})
		r, err := d.Recv()
		if err != nil || reply(r) != step[1] {
			t.Fatalf("%q: %+v %v", step[0], r, err)
		}
	}
	d.CloseSend()
	if _, err := d.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v", err)
	}

	d = h.Open("Streamed")
	d.Send(&testpb.Request{Payload: "fail"})
	r, err := d.Recv()
	var f *sdktest.Failure
	if !errors.As(err, &f) || r.Failure != f {
		t.Fatalf("failure: %+v %v", r, err)
	}
	if _, err := d.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the failure: %v", err)
	}

	// Close cancels a handler that is still waiting for input.
	d = h.Open("Streamed")
	d.Send(&testpb.Request{Payload: "a"})
	if r, err := d.Recv(); err != nil || reply(r) != "a" {
		t.Fatalf("before Close: %+v %v", r, err)
	}
	d.Close()
	d.Close()
}

func TestActionHarnessConcurrentCalls(t *testing.T) {
	h := sdktest.NewAction(t, echoAction())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if res, err := h.Unary("Unary", &testpb.Request{Payload: "p"}); err != nil || reply(res) != "p" {
					t.Errorf("unary: %+v %v", res, err)
					return
				}
				if rs, err := h.Streamed("Streamed", []proto.Message{&testpb.Request{Payload: "q"}}); err != nil || len(rs) != 1 {
					t.Errorf("streamed: %+v %v", rs, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestActionHarnessErrors(t *testing.T) {
	tb := &fakeTB{}
	msg := expectFatal(t, tb, func() { sdktest.NewAction(tb, sdk.NewAction(actionService)) })
	if !strings.Contains(msg, "missing command handler") {
		t.Fatalf("definition error: %q", msg)
	}
	tb = &fakeTB{}
	msg = expectFatal(t, tb, func() { sdktest.NewAction(tb, echoAction(), sdktest.WithState(&testpb.State{})) })
	if !strings.Contains(msg, "actions are stateless") {
		t.Fatalf("WithState: %q", msg)
	}
	tb = &fakeTB{}
	h := sdktest.NewAction(tb, echoAction())
	msg = expectFatal(t, tb, func() { _, _ = h.Unary("Unary", nil) })
	if !strings.Contains(msg, "nil input") {
		t.Fatalf("nil input: %q", msg)
	}
	tb = &fakeTB{}
	h = sdktest.NewAction(tb, echoAction())
	d := h.Open("Streamed")
	defer d.Close()
	d.CloseSend()
	msg = expectFatal(t, tb, func() { d.Send(&testpb.Request{}) })
	if !strings.Contains(msg, "Send after CloseSend") {
		t.Fatalf("send after close: %q", msg)
	}
}
