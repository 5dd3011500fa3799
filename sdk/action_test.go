package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/sdk"
)

const actionService = "kstate.test.v1.ActionTest"

// group interprets space-separated actions, as the TCK's action model does with its groups:
//
//	reply:X       reply Response{X}
//	noreply       an explicit response without a reply
//	forward:X     forward Request{X} to EventSourcedTwo/Call
//	effect:X      asynchronous side effect Request{X} to EventSourcedTwo/Call
//	synceffect:X  synchronous side effect
//	fail:X        return ctx.Fail(X)
//	failnext:X    ctx.Fail(X) and go on: the response (element) is a failure
//	error:X       return errors.New(X)
//	panic:X       panic(X)
//	meta:K        reply with the metadata value of K
//
// respond reports whether the group asked for a response element (reply, noreply or forward).
func group(ctx *sdk.ActionContext, actions string) (reply *testpb.Response, respond bool, err error) {
	for _, action := range strings.Fields(actions) {
		verb, arg, _ := strings.Cut(action, ":")
		switch verb {
		case "reply":
			reply, respond = &testpb.Response{Message: arg}, true
		case "noreply":
			respond = true
		case "forward":
			if err := ctx.Forward(twoService, "Call", &testpb.Request{Id: "x", Payload: arg}); err != nil {
				return nil, false, err
			}
			respond = true
		case "effect", "synceffect":
			if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Id: "x", Payload: arg}, verb == "synceffect"); err != nil {
				return nil, false, err
			}
		case "fail":
			return nil, false, ctx.Fail("%s", arg)
		case "failnext":
			_ = ctx.Fail("%s", arg)
			respond = true
		case "error":
			return nil, false, errors.New(arg)
		case "panic":
			panic(arg)
		case "meta":
			reply, respond = &testpb.Response{Message: ctx.Metadata().Get(arg)}, true
		}
	}
	return reply, respond, nil
}

// testAction serves ActionTest:
//   - Unary runs one group.
//   - StreamedIn runs a group per message and replies with the joined replies, if any.
//   - StreamedOut runs the groups of its input, separated by "|", and sends an element per group
//     that asks for a response.
//   - Streamed runs a group per message, likewise.
func testAction() *sdk.Action {
	a := sdk.NewAction(actionService)
	sdk.ActionUnary(a, "Unary", func(ctx *sdk.ActionContext, in *testpb.Request) (*testpb.Response, error) {
		reply, _, err := group(ctx, in.GetPayload())
		return reply, err
	})
	sdk.ActionStreamedIn(a, "StreamedIn", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		var replies []string
		for msg, err := range in.All() {
			if err != nil {
				return nil, err
			}
			reply, _, err := group(ctx, msg.GetPayload())
			if err != nil {
				return nil, err
			}
			if reply != nil {
				replies = append(replies, reply.GetMessage())
			}
		}
		if len(replies) == 0 {
			return nil, nil
		}
		return &testpb.Response{Message: strings.Join(replies, ",")}, nil
	})
	sdk.ActionStreamedOut(a, "StreamedOut", func(ctx *sdk.ActionContext, in *testpb.Request, send func(*testpb.Response) error) error {
		for g := range strings.SplitSeq(in.GetPayload(), "|") {
			reply, respond, err := group(ctx, g)
			if err != nil {
				return err
			}
			if respond {
				if err := send(reply); err != nil {
					return err
				}
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
			reply, respond, err := group(ctx, msg.GetPayload())
			if err != nil {
				return err
			}
			if respond {
				if err := send(reply); err != nil {
					return err
				}
			}
		}
	})
	return a
}

// describe renders an ActionResponse: "reply:X", "forward:X", "failure:X" or "none", then
// " +E" for each asynchronous side effect and " +!E" for each synchronous one.
func describe(t *testing.T, r *actionpb.ActionResponse) string {
	t.Helper()
	var b strings.Builder
	switch x := r.GetResponse().(type) {
	case nil:
		b.WriteString("none")
	case *actionpb.ActionResponse_Reply:
		if want := "type.googleapis.com/kstate.test.v1.Response"; x.Reply.GetPayload().GetTypeUrl() != want {
			t.Fatalf("reply type %q, want %q", x.Reply.GetPayload().GetTypeUrl(), want)
		}
		b.WriteString("reply:" + decode(t, x.Reply.GetPayload()).(*testpb.Response).GetMessage())
	case *actionpb.ActionResponse_Forward:
		if x.Forward.GetServiceName() != twoService || x.Forward.GetCommandName() != "Call" {
			t.Fatalf("forward to %s/%s", x.Forward.GetServiceName(), x.Forward.GetCommandName())
		}
		b.WriteString("forward:" + decode(t, x.Forward.GetPayload()).(*testpb.Request).GetPayload())
	case *actionpb.ActionResponse_Failure:
		if x.Failure.GetCommandId() != 0 || x.Failure.GetRestart() {
			t.Fatalf("action failure %v", x.Failure)
		}
		b.WriteString("failure:" + x.Failure.GetDescription())
	}
	for _, se := range r.GetSideEffects() {
		if se.GetServiceName() != twoService || se.GetCommandName() != "Call" {
			t.Fatalf("side effect to %s/%s", se.GetServiceName(), se.GetCommandName())
		}
		b.WriteString(" +")
		if se.GetSynchronous() {
			b.WriteString("!")
		}
		b.WriteString(decode(t, se.GetPayload()).(*testpb.Request).GetPayload())
	}
	return b.String()
}

func actionCommand(t *testing.T, name, payload string) *actionpb.ActionCommand {
	t.Helper()
	return &actionpb.ActionCommand{ServiceName: actionService, Name: name, Payload: mustAny(t, &testpb.Request{Id: "x", Payload: payload})}
}

// header is the first message of a streamed-in or duplex call: no payload.
func header(name string, md ...*cloudstatepb.MetadataEntry) *actionpb.ActionCommand {
	h := &actionpb.ActionCommand{ServiceName: actionService, Name: name}
	if len(md) > 0 {
		h.Metadata = &cloudstatepb.Metadata{Entries: md}
	}
	return h
}

func element(t *testing.T, payload string) *actionpb.ActionCommand {
	t.Helper()
	return &actionpb.ActionCommand{Payload: mustAny(t, &testpb.Request{Id: "x", Payload: payload})}
}

func TestActionUnary(t *testing.T) {
	p := newProxy(t, testAction(), twoEntity())
	for payload, want := range map[string]string{
		// reply, no reply, forward, failure × {none, side effect, synchronous side effect, 3}
		"reply:a":                                "reply:a",
		"reply:a effect:s":                       "reply:a +s",
		"reply:a synceffect:s":                   "reply:a +!s",
		"effect:1 reply:a synceffect:2 effect:3": "reply:a +1 +!2 +3",
		"":                                       "none",
		"noreply effect:s":                       "none +s",
		"effect:1 synceffect:2 effect:3":         "none +1 +!2 +3",
		"forward:f":                              "forward:f",
		"forward:f synceffect:s":                 "forward:f +!s",
		"effect:1 forward:f effect:2 effect:3":   "forward:f +1 +2 +3",
		"fail:boom":                              "failure:boom",
		// An action's side effects run even when it fails; its forward does not.
		"effect:s fail:boom":                          "failure:boom +s",
		"forward:f effect:1 synceffect:2 error:plain": "failure:plain +1 +!2",
		"forward:f reply:r":                           "failure:action Unary both forwarded to kstate.test.v1.EventSourcedTwo/Call and replied: command already forwarded",
		"forward:f forward:g":                         "failure:forward to kstate.test.v1.EventSourcedTwo/Call: command already forwarded",
		"failnext:two effect:other reply:r":           "failure:two +other",
		"effect:s panic:kaboom":                       "failure:unexpected failure in action Unary; see the user function's log +s",
	} {
		resp, err := p.action.HandleUnary(context.Background(), actionCommand(t, "Unary", payload))
		if err != nil {
			t.Fatalf("%q: %v", payload, err)
		}
		if got := describe(t, resp); got != want {
			t.Errorf("%q: got %q, want %q", payload, got, want)
		}
	}
	if !strings.Contains(p.logs.String(), "kaboom") {
		t.Errorf("the panic is not logged:\n%s", p.logs)
	}
	// Metadata.
	cmd := actionCommand(t, "Unary", "meta:x-user")
	cmd.Metadata = &cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{{Key: "X-User", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "alice"}}}}
	resp, err := p.action.HandleUnary(context.Background(), cmd)
	if err != nil || describe(t, resp) != "reply:alice" {
		t.Fatalf("metadata: %v, %v", resp, err)
	}
	// A call without a payload gets an empty input.
	resp, err = p.action.HandleUnary(context.Background(), &actionpb.ActionCommand{ServiceName: actionService, Name: "Unary"})
	if err != nil || describe(t, resp) != "none" {
		t.Fatalf("no payload: %v, %v", resp, err)
	}
}

func TestActionCallErrors(t *testing.T) {
	p := newProxy(t, testAction(), valueEntity())
	for name, tc := range map[string]struct {
		cmd  *actionpb.ActionCommand
		want string
	}{
		"unknown service":  {&actionpb.ActionCommand{ServiceName: "kstate.test.v1.Nope", Name: "Unary"}, `unknown action service "kstate.test.v1.Nope" (registered: kstate.test.v1.ActionTest)`},
		"value entity":     {&actionpb.ActionCommand{ServiceName: valueService, Name: "Process"}, "unknown action service"},
		"unknown method":   {&actionpb.ActionCommand{ServiceName: actionService, Name: "Nope"}, `unknown command "Nope" for action kstate.test.v1.ActionTest (its methods are Unary, StreamedIn, StreamedOut, Streamed)`},
		"wrong shape":      {actionCommand(t, "StreamedOut", ""), "command StreamedOut of kstate.test.v1.ActionTest is streamed-out, but the proxy called it as unary"},
		"wrong input type": {&actionpb.ActionCommand{ServiceName: actionService, Name: "Unary", Payload: mustAny(t, &testpb.Response{})}, `expects a payload of type "type.googleapis.com/kstate.test.v1.Request"`},
		"bad payload": {&actionpb.ActionCommand{ServiceName: actionService, Name: "Unary", Payload: &anypb.Any{
			TypeUrl: "type.googleapis.com/kstate.test.v1.Request", Value: []byte{0xff},
		}}, "does not decode"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := p.action.HandleUnary(context.Background(), tc.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(t, resp); !strings.HasPrefix(got, "failure:") || !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want a failure %q", got, tc.want)
			}
		})
	}
}

// streamedIn makes a streamed-in call with a header and the given element payloads.
func streamedIn(t *testing.T, p *proxy, first *actionpb.ActionCommand, payloads ...string) string {
	t.Helper()
	s, err := p.action.HandleStreamedIn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first != nil {
		if err := s.Send(first); err != nil {
			t.Fatal(err)
		}
	}
	for _, pl := range payloads {
		if err := s.Send(element(t, pl)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		t.Fatalf("streamed in %v: %v", payloads, err)
	}
	return describe(t, resp)
}

func TestActionStreamedIn(t *testing.T) {
	p := newProxy(t, testAction(), twoEntity())
	h := header("StreamedIn")
	for _, tc := range []struct {
		payloads []string
		want     string
	}{
		{[]string{"reply:a", "reply:b", "reply:c"}, "reply:a,b,c"},
		// Side effects accumulate over the messages.
		{[]string{"reply:a effect:1", "synceffect:2", "reply:b effect:3"}, "reply:a,b +1 +!2 +3"},
		{nil, "none"}, // no reply with no requests
		{[]string{"", ""}, "none"},
		{[]string{"effect:1", "effect:2"}, "none +1 +2"},
		{[]string{"", "forward:f"}, "forward:f"},
		{[]string{"effect:1", "forward:f effect:2"}, "forward:f +1 +2"},
		{[]string{"reply:a", "fail:boom", "reply:never"}, "failure:boom"},
		{[]string{"effect:1", "effect:2 fail:boom"}, "failure:boom +1 +2"},
		// Fail and go on: the side effects of later messages still count (TCK "failure with side
		// effects"), and a later reply does not undo the failure.
		{[]string{"failnext:two effect:a", "synceffect:b", "effect:c effect:d reply:r"}, "failure:two +a +!b +c +d"},
	} {
		if got := streamedIn(t, p, h, tc.payloads...); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.payloads, got, tc.want)
		}
	}
	// The first message names the command and carries the metadata; a payload in it (which the
	// protocol does not send) is the first input.
	hm := header("StreamedIn", &cloudstatepb.MetadataEntry{Key: "k", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "v"}})
	if got := streamedIn(t, p, hm, "meta:k"); got != "reply:v" {
		t.Errorf("metadata: %q", got)
	}
	withPayload := actionCommand(t, "StreamedIn", "reply:first")
	if got := streamedIn(t, p, withPayload, "reply:second"); got != "reply:first,second" {
		t.Errorf("payload in the first message: %q", got)
	}
	// A stream without its first message, and an element of the wrong type.
	if got := streamedIn(t, p, nil); !strings.Contains(got, "failure:cloudstate protocol violation: the stream ended before its first message") {
		t.Errorf("empty stream: %q", got)
	}
	s, err := p.action.HandleStreamedIn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(h)
	_ = s.Send(element(t, "effect:1"))
	_ = s.Send(&actionpb.ActionCommand{Payload: mustAny(t, &testpb.Response{})})
	resp, err := s.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if got := describe(t, resp); !strings.HasPrefix(got, "failure:command StreamedIn expects a payload of type") || !strings.HasSuffix(got, " +1") {
		t.Errorf("wrong element type: %q", got)
	}
}

// streamedOut makes a streamed-out call and returns its elements.
func streamedOut(t *testing.T, p *proxy, payload string) []string {
	t.Helper()
	s, err := p.action.HandleStreamedOut(context.Background(), actionCommand(t, "StreamedOut", payload))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("streamed out %q: %v", payload, err)
		}
		got = append(got, describe(t, resp))
	}
}

func TestActionStreamedOut(t *testing.T) {
	p := newProxy(t, testAction(), twoEntity())
	for _, tc := range []struct {
		payload string
		want    []string
	}{
		{"reply:a|reply:b effect:1|synceffect:2 reply:c", []string{"reply:a", "reply:b +1", "reply:c +!2"}},
		{"noreply|noreply effect:1", []string{"none", "none +1"}},
		{"forward:f|effect:1 forward:g effect:2", []string{"forward:f", "forward:g +1 +2"}},
		// Side effects after the last element go out in a final element.
		{"reply:a|effect:late", []string{"reply:a", "none +late"}},
		{"reply:a|forward:late", []string{"reply:a", "forward:late"}},
		{"", nil},
		// A failure ends the stream, with the pending side effects.
		{"reply:a|effect:1 fail:boom|reply:never", []string{"reply:a", "failure:boom +1"}},
		{"fail:boom", []string{"failure:boom"}},
		{"reply:a|effect:1 panic:kaboom", []string{"reply:a", "failure:unexpected failure in action StreamedOut; see the user function's log +1"}},
		{"forward:f reply:r", []string{"failure:action StreamedOut both forwarded to kstate.test.v1.EventSourcedTwo/Call and replied: command already forwarded"}},
		// Failure elements, as Cloudstate's TCK model sends them: the stream goes on.
		{"failnext:one|failnext:two effect:other|synceffect:another failnext:three|reply:four", []string{
			"failure:one", "failure:two +other", "failure:three +!another", "reply:four",
		}},
		{"forward:f reply:r|reply:after", []string{
			"failure:action StreamedOut both forwarded to kstate.test.v1.EventSourcedTwo/Call and replied: command already forwarded", "reply:after",
		}},
		// A failure still pending when the handler returns goes out last.
		{"reply:a|effect:1 failnext:late", []string{"reply:a", "failure:late +1"}},
	} {
		if got := streamedOut(t, p, tc.payload); strings.Join(got, "; ") != strings.Join(tc.want, "; ") {
			t.Errorf("%q:\n got %q\nwant %q", tc.payload, got, tc.want)
		}
	}
	// The wrong shape is an in-band failure, as for unary calls.
	s, err := p.action.HandleStreamedOut(context.Background(), actionCommand(t, "Unary", ""))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil || !strings.Contains(describe(t, resp), "is unary, but the proxy called it as streamed-out") {
		t.Fatalf("wrong shape: %v, %v", resp, err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the failure: %v", err)
	}
}

func TestActionStreamed(t *testing.T) {
	p := newProxy(t, testAction(), twoEntity())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := p.action.HandleStreamed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(header("Streamed")); err != nil {
		t.Fatal(err)
	}
	// Each message gets its element before the next one is sent: the stream is interactive.
	for _, step := range []struct{ in, want string }{
		{"reply:a", "reply:a"},
		{"noreply effect:1", "none +1"},
		{"effect:2", ""}, // no element: the side effect waits for the next one
		{"forward:f synceffect:3", "forward:f +2 +!3"},
		{"reply:b", "reply:b"},
	} {
		if err := s.Send(element(t, step.in)); err != nil {
			t.Fatal(err)
		}
		if step.want == "" {
			continue
		}
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := describe(t, resp); got != step.want {
			t.Fatalf("%q: got %q, want %q", step.in, got, step.want)
		}
	}
	// A failure element; the stream goes on.
	if err := s.Send(element(t, "effect:x failnext:soft")); err != nil {
		t.Fatal(err)
	}
	if resp, err := s.Recv(); err != nil || describe(t, resp) != "failure:soft +x" {
		t.Fatalf("failure element: %v, %v", resp, err)
	}
	// A returned error ends it.
	if err := s.Send(element(t, "effect:4 fail:boom")); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil || describe(t, resp) != "failure:boom +4" {
		t.Fatalf("failure element: %v, %v", resp, err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the failure: %v, want EOF", err)
	}

	// A stream with only its first message ends without elements; pending side effects are
	// flushed when the client closes.
	for _, tc := range []struct {
		payloads []string
		want     string
	}{{nil, ""}, {[]string{"effect:x"}, "none +x"}} {
		s, err = p.action.HandleStreamed(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(header("Streamed"))
		for _, pl := range tc.payloads {
			_ = s.Send(element(t, pl))
		}
		_ = s.CloseSend()
		var got []string
		for {
			resp, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, describe(t, resp))
		}
		if strings.Join(got, "; ") != tc.want {
			t.Errorf("%q: got %q, want %q", tc.payloads, got, tc.want)
		}
	}
}

func TestActionShutdownEndsOpenStreams(t *testing.T) {
	p := newProxy(t, testAction())
	s, err := p.action.HandleStreamed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(header("Streamed"))
	_ = s.Send(element(t, "reply:a"))
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	// The handler is blocked in Recv; shutting down must not wait for the client.
	p.stop()
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("open stream after shutdown: %v, want UNAVAILABLE", err)
	}
}

func TestActionClientCancels(t *testing.T) {
	handlerDone := make(chan error, 1)
	a := sdk.NewAction(actionService)
	sdk.ActionUnary(a, "Unary", func(*sdk.ActionContext, *testpb.Request) (*testpb.Response, error) { return nil, nil })
	sdk.ActionStreamedIn(a, "StreamedIn", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		return nil, nil
	})
	sdk.ActionStreamedOut(a, "StreamedOut", func(ctx *sdk.ActionContext, _ *testpb.Request, send func(*testpb.Response) error) error {
		if err := send(&testpb.Response{Message: "first"}); err != nil {
			return err
		}
		<-ctx.Context().Done()
		handlerDone <- ctx.Context().Err()
		return ctx.Context().Err()
	})
	sdk.ActionStreamed(a, "Streamed", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request], func(*testpb.Response) error) error {
		return nil
	})
	p := newProxy(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := p.action.HandleStreamedOut(ctx, actionCommand(t, "StreamedOut", ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-handlerDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context: %v", err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestActionConcurrentSends(t *testing.T) {
	const senders, each = 4, 25
	a := sdk.NewAction(actionService)
	sdk.ActionUnary(a, "Unary", func(*sdk.ActionContext, *testpb.Request) (*testpb.Response, error) { return nil, nil })
	sdk.ActionStreamedIn(a, "StreamedIn", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		return nil, nil
	})
	sdk.ActionStreamedOut(a, "StreamedOut", func(ctx *sdk.ActionContext, _ *testpb.Request, send func(*testpb.Response) error) error {
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for g := range senders {
			wg.Go(func() {
				for i := range each {
					if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Payload: fmt.Sprint(g)}, false); err != nil {
						errs <- err
						return
					}
					if err := send(&testpb.Response{Message: fmt.Sprintf("%d-%d", g, i)}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	})
	var leaked func(*testpb.Response) error
	var leakedCtx *sdk.ActionContext
	sdk.ActionStreamed(a, "Streamed", func(ctx *sdk.ActionContext, _ *sdk.ActionStream[*testpb.Request], send func(*testpb.Response) error) error {
		leaked, leakedCtx = send, ctx
		return nil
	})
	p := newProxy(t, a, twoEntity())
	s, err := p.action.HandleStreamedOut(context.Background(), actionCommand(t, "StreamedOut", ""))
	if err != nil {
		t.Fatal(err)
	}
	replies, effects := map[string]bool{}, 0
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		replies[decode(t, resp.GetReply().GetPayload()).(*testpb.Response).GetMessage()] = true
		effects += len(resp.GetSideEffects())
	}
	if len(replies) != senders*each || effects != senders*each {
		t.Fatalf("%d distinct replies and %d side effects, want %d of each", len(replies), effects, senders*each)
	}

	// A send after the handler returned fails.
	srv := sdk.NewServer()
	if err := srv.Register(a); err != nil {
		t.Fatal(err)
	}
	recv := func() func() (*actionpb.ActionCommand, error) {
		msgs := []*actionpb.ActionCommand{header("Streamed")}
		return func() (*actionpb.ActionCommand, error) {
			if len(msgs) == 0 {
				return nil, io.EOF
			}
			m := msgs[0]
			msgs = msgs[1:]
			return m, nil
		}
	}()
	if err := srv.HandleActionStreamed(context.Background(), recv, func(*actionpb.ActionResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := leaked(&testpb.Response{}); !errors.Is(err, sdk.ErrStreamClosed) {
		t.Fatalf("send after return: %v, want ErrStreamClosed", err)
	}
	if err := leakedCtx.SideEffect(twoService, "Call", &testpb.Request{}, false); !errors.Is(err, sdk.ErrStreamClosed) {
		t.Fatalf("side effect after return: %v, want ErrStreamClosed", err)
	}
	if err := leakedCtx.Forward(twoService, "Call", &testpb.Request{}); !errors.Is(err, sdk.ErrStreamClosed) {
		t.Fatalf("forward after return: %v, want ErrStreamClosed", err)
	}
}

func TestActionTransportErrors(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.Register(testAction(), twoEntity()); err != nil {
		t.Fatal(err)
	}
	broken := errors.New("connection reset")
	// A failing send ends the call with its error, once the handler returns.
	sends := 0
	err := srv.HandleActionStreamedOut(context.Background(), actionCommand(t, "StreamedOut", "reply:a|reply:b|reply:c"), func(*actionpb.ActionResponse) error {
		sends++
		return broken
	})
	if !errors.Is(err, broken) || sends != 1 {
		t.Fatalf("broken send: %v after %d sends", err, sends)
	}
	// A failing recv too.
	calls := 0
	recv := func() (*actionpb.ActionCommand, error) {
		calls++
		if calls == 1 {
			return header("StreamedIn"), nil
		}
		return nil, broken
	}
	if resp, err := srv.HandleActionStreamedIn(context.Background(), recv); !errors.Is(err, broken) || resp != nil {
		t.Fatalf("broken recv: %v, %v", resp, err)
	}
	// An error before the first message.
	if err := srv.HandleActionStreamed(context.Background(), func() (*actionpb.ActionCommand, error) { return nil, broken }, nil); !errors.Is(err, broken) {
		t.Fatalf("broken first recv: %v", err)
	}
}

func TestActionRegisterValidation(t *testing.T) {
	unary := func(*sdk.ActionContext, *testpb.Request) (*testpb.Response, error) { return nil, nil }
	in := func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		return nil, nil
	}
	out := func(*sdk.ActionContext, *testpb.Request, func(*testpb.Response) error) error { return nil }
	duplex := func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request], func(*testpb.Response) error) error {
		return nil
	}

	missing := sdk.NewAction(actionService)
	wrongShapes := sdk.NewAction(actionService)
	sdk.ActionUnary(wrongShapes, "StreamedOut", unary)
	sdk.ActionStreamedIn(wrongShapes, "Streamed", in)
	sdk.ActionStreamedOut(wrongShapes, "Unary", out)
	sdk.ActionStreamed(wrongShapes, "StreamedIn", duplex)
	wrongTypes := sdk.NewAction(actionService)
	sdk.ActionUnary(wrongTypes, "Unary", func(*sdk.ActionContext, *testpb.Keyless) (*testpb.State, error) { return nil, nil })
	sdk.ActionStreamedIn(wrongTypes, "StreamedIn", in)
	sdk.ActionStreamedOut(wrongTypes, "StreamedOut", out)
	sdk.ActionStreamed(wrongTypes, "Streamed", duplex)
	dup := testAction()
	sdk.ActionUnary(dup, "Unary", unary)
	sdk.ActionUnary(dup, "Nope", unary)
	invalid := sdk.NewAction(actionService)
	sdk.ActionUnary[*testpb.Request, *testpb.Response](invalid, "Unary", nil)
	sdk.ActionStreamedOut(invalid, "StreamedOut", func(*sdk.ActionContext, proto.Message, func(*testpb.Response) error) error { return nil })

	for name, tc := range map[string]struct {
		action *sdk.Action
		is     error
		want   []string
	}{
		"unknown service": {sdk.NewAction("kstate.test.v1.Nope"), sdk.ErrServiceNotFound, []string{"kstate.test.v1.Nope"}},
		"missing handlers": {missing, sdk.ErrMissingHandler, []string{
			`sdk.ActionUnary(action, "Unary", func(*sdk.ActionContext, *testpb.Request) (*testpb.Response, error))`,
			`sdk.ActionStreamedIn(action, "StreamedIn", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error))`,
			`sdk.ActionStreamedOut(action, "StreamedOut", func(*sdk.ActionContext, *testpb.Request, func(*testpb.Response) error) error)`,
			`sdk.ActionStreamed(action, "Streamed", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request], func(*testpb.Response) error) error)`,
		}},
		"wrong shapes": {wrongShapes, sdk.ErrStreamingMismatch, []string{
			"method StreamedOut: handler shape does not match the method: the method is streamed-out, the handler is unary; register it with sdk.ActionStreamedOut",
			"the method is duplex-streamed, the handler is streamed-in; register it with sdk.ActionStreamed",
			"the method is unary, the handler is streamed-out; register it with sdk.ActionUnary",
			"the method is streamed-in, the handler is duplex-streamed; register it with sdk.ActionStreamedIn",
		}},
		"wrong types": {wrongTypes, sdk.ErrTypeMismatch, []string{
			"input type is kstate.test.v1.Request, the handler takes kstate.test.v1.Keyless",
			"output type is kstate.test.v1.Response, the handler returns kstate.test.v1.State",
		}},
		"duplicate":      {dup, sdk.ErrDuplicate, []string{"method Unary", "action handler"}},
		"unknown method": {dup, sdk.ErrMethodNotFound, []string{"method Nope"}},
		"invalid":        {invalid, sdk.ErrInvalidType, []string{"nil action handler", "input type", "interface type"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := sdk.NewServer().Register(tc.action)
			if err == nil {
				t.Fatal("Register succeeded")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			var de *sdk.DefinitionError
			if !errors.As(err, &de) || de.Service == "" {
				t.Errorf("error %v is not a *DefinitionError naming the service", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDiscoveryAllKinds(t *testing.T) {
	p := newProxy(t, testEntity(), valueEntity(), testAction())
	spec, err := p.discovery.Discover(context.Background(), &cloudstatepb.ProxyInfo{ProtocolMinorVersion: 2,
		SupportedEntityTypes: []string{sdk.EntityTypeAction, sdk.EntityTypeValue, sdk.EntityTypeEventSourced, sdk.EntityTypeCRDT}})
	if err != nil {
		t.Fatal(err)
	}
	passivation := func(ms int64) *cloudstatepb.EntityPassivationStrategy {
		return &cloudstatepb.EntityPassivationStrategy{Strategy: &cloudstatepb.EntityPassivationStrategy_Timeout{
			Timeout: &cloudstatepb.TimeoutPassivationStrategy{Timeout: ms},
		}}
	}
	want := []*cloudstatepb.Entity{
		{EntityType: "cloudstate.eventsourced.EventSourced", ServiceName: testService, PersistenceId: "test-entity", PassivationStrategy: passivation(30000)},
		{EntityType: "cloudstate.valueentity.ValueEntity", ServiceName: valueService, PersistenceId: "value-test", PassivationStrategy: passivation(100)},
		{EntityType: "cloudstate.action.ActionProtocol", ServiceName: actionService},
	}
	if len(spec.GetEntities()) != len(want) {
		t.Fatalf("entities %v", spec.GetEntities())
	}
	for i := range want {
		if !proto.Equal(spec.GetEntities()[i], want[i]) {
			t.Errorf("entity %d: %v, want %v", i, spec.GetEntities()[i], want[i])
		}
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{valueService, actionService, "kstate.test.v1.State"} {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err != nil {
			t.Errorf("%s is not in the descriptor set", name)
		}
	}
	// A default value entity takes the service's simple name as persistence id.
	def := sdk.NewValue[*testpb.State](valueService, nil)
	sdk.ValueCommand(def, "Process", func(*sdk.ValueContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })
	spec, err = newProxy(t, def).discovery.Discover(context.Background(), &cloudstatepb.ProxyInfo{ProtocolMinorVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	if ents := spec.GetEntities(); len(ents) != 1 || ents[0].GetPersistenceId() != "ValueTest" || ents[0].GetPassivationStrategy() != nil {
		t.Fatalf("default value entity: %v", ents)
	}
	if def.EntityType() != sdk.EntityTypeValue || def.ServiceName() != valueService ||
		testAction().EntityType() != sdk.EntityTypeAction || testAction().ServiceName() != actionService {
		t.Fatal("entity type or service name")
	}
}
