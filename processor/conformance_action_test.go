package processor

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

const actionService = "kstate.test.v1.ActionTest"

func actionReply(t *testing.T, msg string, effects ...*cloudstatepb.SideEffect) *actionpb.ActionResponse {
	return &actionpb.ActionResponse{
		Response:    &actionpb.ActionResponse_Reply{Reply: &cloudstatepb.Reply{Payload: anyOf(t, &testpb.Response{Message: msg})}},
		SideEffects: effects,
	}
}

func TestActionConformance(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, valueEntities(0)...)
	_, cc := testNode(t, brokers, kafkatest.Unique(t, "action"), uf.addr)
	client := testpb.NewActionTestClient(cc)
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return c
	}

	t.Run("unary reply with metadata", func(t *testing.T) {
		done := make(chan callResult, 1)
		go func() {
			r, err := client.Unary(ctx(), &testpb.Request{Id: "a", Payload: "hello"})
			done <- callResult{r, err}
		}()
		c := uf.nextAction(t, "unary")
		cmd := c.recv(t)
		var req testpb.Request
		if cmd.GetServiceName() != actionService || cmd.GetName() != "Unary" || cmd.GetPayload().UnmarshalTo(&req) != nil || req.GetPayload() != "hello" {
			t.Fatalf("action command %v", cmd)
		}
		c.out <- actionReply(t, "hi")
		if r := wait(t, done); r.err != nil || r.resp.GetMessage() != "hi" {
			t.Fatalf("%v %v", r.resp, r.err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("unary failure still runs side effects", func(t *testing.T) {
		done := make(chan callResult, 1)
		go func() {
			r, err := client.Unary(ctx(), &testpb.Request{Id: "b"})
			done <- callResult{r, err}
		}()
		c := uf.nextAction(t, "unary")
		c.recv(t)
		c.out <- &actionpb.ActionResponse{
			Response:    &actionpb.ActionResponse_Failure{Failure: &cloudstatepb.Failure{Description: "bad request"}},
			SideEffects: []*cloudstatepb.SideEffect{{ServiceName: esTwo, CommandName: "Call", Payload: anyOf(t, &testpb.Request{Id: "audit"}), Synchronous: true}},
		}
		two := uf.next(t)
		expectInit(t, two, esTwo, "audit")
		expectCommand(t, two, 1, "Call")
		two.send(replyOut(1, &testpb.Response{}, nil, nil))
		r := wait(t, done)
		if st := status.Convert(r.err); st.Code() != codes.Unknown || st.Message() != "bad request" {
			t.Fatalf("got %v, want UNKNOWN with the failure description", r.err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("unary forward answers with the target's reply", func(t *testing.T) {
		done := make(chan callResult, 1)
		go func() {
			r, err := client.Unary(ctx(), &testpb.Request{Id: "c"})
			done <- callResult{r, err}
		}()
		c := uf.nextAction(t, "unary")
		c.recv(t)
		c.out <- &actionpb.ActionResponse{Response: &actionpb.ActionResponse_Forward{Forward: &cloudstatepb.Forward{
			ServiceName: esTwo, CommandName: "Call", Payload: anyOf(t, &testpb.Request{Id: "fwd-target"}),
		}}}
		two := uf.next(t)
		expectInit(t, two, esTwo, "fwd-target")
		expectCommand(t, two, 1, "Call")
		two.send(replyOut(1, &testpb.Response{Message: "two says hi"}, nil, nil))
		if r := wait(t, done); r.err != nil || r.resp.GetMessage() != "two says hi" {
			t.Fatalf("%v %v", r.resp, r.err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("streamed in: the first message carries no payload", func(t *testing.T) {
		stream, err := client.StreamedIn(ctx())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"1", "2"} {
			if err := stream.Send(&testpb.Request{Id: "s", Payload: p}); err != nil {
				t.Fatal(err)
			}
		}
		c := uf.nextAction(t, "in")
		first := c.recv(t)
		if first.GetPayload() != nil || first.GetServiceName() != actionService || first.GetName() != "StreamedIn" {
			t.Fatalf("first streamed message %v: want service and name, no payload", first)
		}
		for _, want := range []string{"1", "2"} {
			var req testpb.Request
			if err := c.recv(t).GetPayload().UnmarshalTo(&req); err != nil || req.GetPayload() != want {
				t.Fatalf("streamed payload %v, want %s", req.GetPayload(), want)
			}
		}
		c.out <- actionReply(t, "sum")
		resp, err := stream.CloseAndRecv()
		if err != nil || resp.GetMessage() != "sum" {
			t.Fatalf("%v %v", resp, err)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("streamed out: a response without reply yields no element", func(t *testing.T) {
		stream, err := client.StreamedOut(ctx(), &testpb.Request{Id: "o", Payload: "go"})
		if err != nil {
			t.Fatal(err)
		}
		c := uf.nextAction(t, "out")
		var req testpb.Request
		if err := c.recv(t).GetPayload().UnmarshalTo(&req); err != nil || req.GetPayload() != "go" {
			t.Fatalf("streamed-out request %v", req.GetPayload())
		}
		c.out <- actionReply(t, "one")
		c.out <- &actionpb.ActionResponse{} // no reply: nothing for the client
		c.out <- actionReply(t, "two")
		close(c.out)
		var got []string
		for {
			r, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r.GetMessage())
		}
		if len(got) != 2 || got[0] != "one" || got[1] != "two" {
			t.Fatalf("streamed out %v, want [one two]", got)
		}
		uf.noMoreInteractions(t)
	})

	t.Run("duplex echo and failure", func(t *testing.T) {
		stream, err := client.Streamed(ctx())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.Request{Id: "d", Payload: "ping"}); err != nil {
			t.Fatal(err)
		}
		c := uf.nextAction(t, "duplex")
		if first := c.recv(t); first.GetPayload() != nil || first.GetName() != "Streamed" {
			t.Fatalf("first duplex message %v", first)
		}
		c.recv(t)
		c.out <- actionReply(t, "pong")
		if r, err := stream.Recv(); err != nil || r.GetMessage() != "pong" {
			t.Fatalf("%v %v", r, err)
		}
		c.out <- &actionpb.ActionResponse{Response: &actionpb.ActionResponse_Failure{Failure: &cloudstatepb.Failure{Description: "stream broke"}}}
		_, err = stream.Recv()
		if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "stream broke" {
			t.Fatalf("got %v", err)
		}
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Fatal("the user function's stream stayed open after the failure")
		}
		uf.noMoreInteractions(t)
	})

	t.Run("client cancels the request stream", func(t *testing.T) {
		cctx, cancel := context.WithCancel(context.Background())
		stream, err := client.Streamed(cctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testpb.Request{Id: "x", Payload: "1"}); err != nil {
			t.Fatal(err)
		}
		c := uf.nextAction(t, "duplex")
		c.recv(t)
		c.recv(t)
		cancel()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Fatal("cancelling the client did not cancel the user function's stream")
		}
		uf.noMoreInteractions(t)
	})
}
