package sdk_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
)

func crdtInit(id string, d *crdtpb.CrdtDelta) *crdtpb.CrdtStreamIn {
	return &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Init{Init: &crdtpb.CrdtInit{ServiceName: crdtService, EntityId: id, Delta: d}}}
}

func crdtCommand(t *testing.T, id int64, name string, streamed bool, ops ...string) *crdtpb.CrdtStreamIn {
	t.Helper()
	return &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Command{Command: &cloudstatepb.Command{
		EntityId: "e1", Id: id, Name: name, Streamed: streamed,
		Payload: mustAny(t, &testpb.CrdtRequest{Id: "e1", Ops: ops}),
	}}}
}

func crdtDeltaIn(d *crdtpb.CrdtDelta) *crdtpb.CrdtStreamIn {
	return &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delta{Delta: d}}
}

func crdtCancelIn(id int64) *crdtpb.CrdtStreamIn {
	return &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_StreamCancelled{StreamCancelled: &cloudstatepb.StreamCancelled{EntityId: "e1", Id: id}}}
}

func stateReply(t *testing.T, state string) *cloudstatepb.ClientAction {
	t.Helper()
	return &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: mustAny(t, &testpb.CrdtResponse{State: state})}}}
}

func update(d *crdtpb.CrdtDelta) *crdtpb.CrdtStateAction {
	return &crdtpb.CrdtStateAction{Action: &crdtpb.CrdtStateAction_Update{Update: d}}
}

func replyOut(r *crdtpb.CrdtReply) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Reply{Reply: r}}
}

func crdtStreamedMsg(m *crdtpb.CrdtStreamedMessage) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamedMessage{StreamedMessage: m}}
}

func cancelledOut(r *crdtpb.CrdtStreamCancelledResponse) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: r}}
}

func wantOuts(t *testing.T, what string, got []*crdtpb.CrdtStreamOut, want ...*crdtpb.CrdtStreamOut) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d outputs, want %d:\n got %v\nwant %v", what, len(got), len(want), got, want)
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s: output %d\n got %v\nwant %v", what, i, got[i], want[i])
		}
	}
}

func newSession(t *testing.T, e sdk.Entity) *sdk.CrdtSession {
	t.Helper()
	srv := sdk.NewServer()
	if err := srv.Register(e); err != nil {
		t.Fatal(err)
	}
	return srv.NewCrdtSession(context.Background())
}

func mustStep(t *testing.T, s *sdk.CrdtSession, in *crdtpb.CrdtStreamIn) []*crdtpb.CrdtStreamOut {
	t.Helper()
	outs, err := s.Step(in)
	if err != nil {
		t.Fatalf("step %v: %v", in, err)
	}
	return outs
}

// The exact messages of TCK scenarios: a streamed command, local and replicated changes, a
// cancellation with a cancel update, write consistency.
func TestCrdtSessionProtocol(t *testing.T) {
	s := newSession(t, pncounterEntity())
	wantOuts(t, "init", mustStep(t, s, crdtInit("e1", pncounterOp(5))))
	if s.EntityID() != "e1" || s.ServiceName() != crdtService || !proto.Equal(s.StateDelta(), pncounterOp(5)) {
		t.Fatalf("after init: %q %q %v", s.EntityID(), s.ServiceName(), s.StateDelta())
	}

	wantOuts(t, "streamed command", mustStep(t, s, crdtCommand(t, 1, "Watch", true, "oncancel:dec:42")),
		replyOut(&crdtpb.CrdtReply{CommandId: 1, ClientAction: stateReply(t, "5"), Streamed: true}))

	wantOuts(t, "local change", mustStep(t, s, crdtCommand(t, 2, "Process", false, "inc:10", "consistency:majority")),
		replyOut(&crdtpb.CrdtReply{CommandId: 2, ClientAction: stateReply(t, "15"),
			StateAction: &crdtpb.CrdtStateAction{Action: &crdtpb.CrdtStateAction_Update{Update: pncounterOp(10)}, WriteConsistency: crdtpb.CrdtWriteConsistency_MAJORITY}}),
		crdtStreamedMsg(&crdtpb.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, "15")}))

	wantOuts(t, "remote change", mustStep(t, s, crdtDeltaIn(pncounterOp(-3))),
		crdtStreamedMsg(&crdtpb.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, "12")}))

	wantOuts(t, "read-only command", mustStep(t, s, crdtCommand(t, 3, "Process", false)),
		replyOut(&crdtpb.CrdtReply{CommandId: 3, ClientAction: stateReply(t, "12")}))

	wantOuts(t, "cancel", mustStep(t, s, crdtCancelIn(1)),
		cancelledOut(&crdtpb.CrdtStreamCancelledResponse{CommandId: 1, StateAction: update(pncounterOp(-42))}))
	wantOuts(t, "cancel again", mustStep(t, s, crdtCancelIn(1)),
		cancelledOut(&crdtpb.CrdtStreamCancelledResponse{CommandId: 1}))
	wantOuts(t, "remote change without streams", mustStep(t, s, crdtDeltaIn(pncounterOp(1))))
	if !proto.Equal(s.StateDelta(), pncounterOp(-29)) || len(s.OpenStreams()) != 0 {
		t.Fatalf("state %v, streams %v", s.StateDelta(), s.OpenStreams())
	}

	wantOuts(t, "delete", mustStep(t, s, crdtCommand(t, 4, "Process", false, "delete", "consistency:all")),
		replyOut(&crdtpb.CrdtReply{CommandId: 4, ClientAction: stateReply(t, "-29"), StateAction: &crdtpb.CrdtStateAction{
			Action: &crdtpb.CrdtStateAction_Delete{Delete: &crdtpb.CrdtDelete{}}, WriteConsistency: crdtpb.CrdtWriteConsistency_ALL}}))
	if !s.Deleted() {
		t.Fatal("not deleted")
	}
	outs := mustStep(t, s, crdtCommand(t, 5, "Process", false))
	if f := outs[0].GetReply().GetClientAction().GetFailure(); len(outs) != 1 || f == nil || f.GetCommandId() != 5 {
		t.Fatalf("command after delete: %v", outs)
	}
	wantOuts(t, "delta after delete", mustStep(t, s, crdtDeltaIn(pncounterOp(1))))
}

// The proxy's delete ends the streams silently; an init carries a Vote's counts.
func TestCrdtSessionProxyDeleteAndVoteInit(t *testing.T) {
	s := newSession(t, voteEntity())
	mustStep(t, s, crdtInit("e1", voteState(true, 2, 3)))
	wantOuts(t, "connect", mustStep(t, s, crdtCommand(t, 1, "Watch", true, "empty", "vote:false", "oncancel:vote:false")),
		replyOut(&crdtpb.CrdtReply{CommandId: 1, StateAction: update(voteOp(false)), Streamed: true}))
	if !proto.Equal(s.StateDelta(), voteState(false, 1, 3)) {
		t.Fatalf("vote %v", s.StateDelta())
	}
	wantOuts(t, "delete", mustStep(t, s, &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delete{Delete: &crdtpb.CrdtDelete{}}}))
	wantOuts(t, "cancel after delete", mustStep(t, s, crdtCancelIn(1)),
		cancelledOut(&crdtpb.CrdtStreamCancelledResponse{CommandId: 1}))
}

func TestCrdtSessionStreamFailures(t *testing.T) {
	cases := []struct {
		name string
		ins  func(t *testing.T) []*crdtpb.CrdtStreamIn
		code error
	}{
		{"command before init", func(t *testing.T) []*crdtpb.CrdtStreamIn {
			return []*crdtpb.CrdtStreamIn{crdtCommand(t, 1, "Process", false)}
		}, sdk.ErrProtocol},
		{"second init", func(*testing.T) []*crdtpb.CrdtStreamIn {
			return []*crdtpb.CrdtStreamIn{crdtInit("e1", nil), crdtInit("e1", nil)}
		}, sdk.ErrProtocol},
		{"unknown service", func(*testing.T) []*crdtpb.CrdtStreamIn {
			return []*crdtpb.CrdtStreamIn{{Message: &crdtpb.CrdtStreamIn_Init{Init: &crdtpb.CrdtInit{ServiceName: "nope.Nope"}}}}
		}, sdk.ErrServiceNotFound},
		{"init of another type", func(*testing.T) []*crdtpb.CrdtStreamIn {
			return []*crdtpb.CrdtStreamIn{crdtInit("e1", flagOp())}
		}, sdk.ErrTypeMismatch},
		{"delta of another type", func(*testing.T) []*crdtpb.CrdtStreamIn {
			return []*crdtpb.CrdtStreamIn{crdtInit("e1", nil), crdtDeltaIn(gcounterOp(1))}
		}, sdk.ErrTypeMismatch},
		{"element of another type", func(t *testing.T) []*crdtpb.CrdtStreamIn {
			bad := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{Added: []*anypb.Any{mustAny(t, &testpb.Event{})}}}}
			return []*crdtpb.CrdtStreamIn{crdtInit("e1", nil), crdtDeltaIn(bad)}
		}, sdk.ErrTypeMismatch},
		{"empty message", func(*testing.T) []*crdtpb.CrdtStreamIn {
			return []*crdtpb.CrdtStreamIn{crdtInit("e1", nil), {}}
		}, sdk.ErrProtocol},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSession(t, orsetEntity())
			ins := c.ins(t)
			for _, in := range ins[:len(ins)-1] {
				mustStep(t, s, in)
			}
			outs, err := s.Step(ins[len(ins)-1])
			if !errors.Is(err, c.code) || len(outs) != 1 || outs[0].GetFailure() == nil {
				t.Fatalf("outs %v err %v, want a failure wrapping %v", outs, err, c.code)
			}
			// Every later input gets the same failure.
			outs, err2 := s.Step(crdtCommand(t, 9, "Process", false))
			if !errors.Is(err2, c.code) || len(outs) != 1 || outs[0].GetFailure() == nil {
				t.Fatalf("after the failure: %v %v", outs, err2)
			}
		})
	}
}

func TestCrdtSessionCommandFailures(t *testing.T) {
	s := newSession(t, gcounterEntity())
	mustStep(t, s, crdtInit("e1", nil))
	for _, c := range []struct {
		in   *crdtpb.CrdtStreamIn
		desc string
	}{
		{crdtCommand(t, 1, "Nope", false), `unknown command "Nope"`},
		{&crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Command{Command: &cloudstatepb.Command{Id: 2, Name: "Process", Payload: mustAny(t, &testpb.Event{})}}}, "expects a payload of type"},
		{crdtCommand(t, 3, "Process", false, "inc:-1"), "cannot be decremented"},
		{crdtCommand(t, 4, "Process", false, "inc:5", "panic:boom"), "unexpected failure in command Process"},
	} {
		outs := mustStep(t, s, c.in)
		f := outs[0].GetReply().GetClientAction().GetFailure()
		if len(outs) != 1 || f == nil || f.GetRestart() || !strings.Contains(f.GetDescription(), c.desc) || outs[0].GetReply().GetStateAction() != nil {
			t.Fatalf("%v: %v, want a failure %q", c.in, outs, c.desc)
		}
	}
	if !proto.Equal(s.StateDelta(), gcounterOp(0)) {
		t.Fatalf("state after failures %v", s.StateDelta())
	}
}

// Send/Recv: many goroutines send commands of one entity at once (as concurrent requests do);
// every command gets exactly one reply, and every change one streamed message.
func TestCrdtSessionSendRecvConcurrent(t *testing.T) {
	s := newSession(t, gcounterEntity())
	if err := s.Send(crdtInit("e1", nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(crdtCommand(t, 1, "Watch", true)); err != nil {
		t.Fatal(err)
	}
	const senders, each = 8, 25
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				id := int64(2 + g*each + i)
				if err := s.SendContext(context.Background(), crdtCommand(t, id, "Process", false, "inc:1")); err != nil {
					t.Errorf("send %d: %v", id, err)
				}
			}
		})
	}
	replies, streamed := map[int64]int{}, 0
	deadline := time.After(30 * time.Second)
	for len(replies) < senders*each+1 || streamed < senders*each {
		select {
		case <-deadline:
			t.Fatalf("timed out: %d replies, %d streamed", len(replies), streamed)
		default:
		}
		out, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case out.GetReply() != nil:
			replies[out.GetReply().GetCommandId()]++
		case out.GetStreamedMessage().GetCommandId() == 1:
			streamed++
		default:
			t.Fatalf("unexpected %v", out)
		}
	}
	wg.Wait()
	for id, n := range replies {
		if n != 1 {
			t.Fatalf("command %d: %d replies", id, n)
		}
	}
	if !proto.Equal(s.StateDelta(), gcounterOp(senders*each)) {
		t.Fatalf("state %v", s.StateDelta())
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend: %v", err)
	}
	if err := s.Send(crdtCommand(t, 999, "Process", false)); !errors.Is(err, io.EOF) {
		t.Fatalf("Send after CloseSend: %v", err)
	}
}

func TestCrdtSessionRecvEnds(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.Register(gcounterEntity()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := srv.NewCrdtSession(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after cancel: %v", err)
	}

	// A stream failure: the failure message, then the error.
	s = srv.NewCrdtSession(context.Background())
	if err := s.Send(crdtCommand(t, 1, "Process", false)); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Recv(); err != nil || out.GetFailure() == nil {
		t.Fatalf("failure message: %v %v", out, err)
	}
	if _, err := s.Recv(); !errors.Is(err, sdk.ErrProtocol) {
		t.Fatalf("after the failure: %v", err)
	}
	if err := s.Send(crdtInit("e1", nil)); !errors.Is(err, io.EOF) {
		t.Fatalf("Send after a failure: %v", err)
	}
}

// The standalone server over gRPC, driven as kstate drives Crdt.handle: discovery, init with a
// delta, several commands in flight, a remote delta, a cancellation.
func TestCrdtOverGRPC(t *testing.T) {
	p := newProxy(t, voteEntity(), twoEntity())
	spec, err := p.discovery.Discover(context.Background(), &cloudstatepb.ProxyInfo{ProtocolMajorVersion: 0, ProtocolMinorVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	var found *cloudstatepb.Entity
	for _, e := range spec.GetEntities() {
		if e.GetServiceName() == crdtService {
			found = e
		}
	}
	if found == nil || found.GetEntityType() != sdk.EntityTypeCRDT || found.GetPersistenceId() != "CrdtSdkTest" {
		t.Fatalf("discovery: %v", spec.GetEntities())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := crdtpb.NewCrdtClient(p.conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(in *crdtpb.CrdtStreamIn) {
		t.Helper()
		if err := stream.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *crdtpb.CrdtStreamOut {
		t.Helper()
		out, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	send(crdtInit("e1", voteState(false, 1, 2)))
	// Three commands in flight before any reply is read.
	send(crdtCommand(t, 1, "Watch", true))
	send(crdtCommand(t, 2, "Watch", true, "empty", "nochange", "vote:true", "oncancel:vote:false"))
	send(crdtCommand(t, 3, "Process", false))
	for _, want := range []*crdtpb.CrdtStreamOut{
		replyOut(&crdtpb.CrdtReply{CommandId: 1, ClientAction: stateReply(t, "self=false for=1 voters=2"), Streamed: true}),
		replyOut(&crdtpb.CrdtReply{CommandId: 2, StateAction: update(voteOp(true)), Streamed: true}),
		crdtStreamedMsg(&crdtpb.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, "self=true for=2 voters=2")}),
		replyOut(&crdtpb.CrdtReply{CommandId: 3, ClientAction: stateReply(t, "self=true for=2 voters=2")}),
	} {
		if got := recv(); !proto.Equal(got, want) {
			t.Fatalf("got %v\nwant %v", got, want)
		}
	}
	// Another node's client disconnects.
	send(crdtDeltaIn(voteState(true, 1, 2)))
	if got, want := recv(), crdtStreamedMsg(&crdtpb.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, "self=true for=1 voters=2")}); !proto.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// This node's client disconnects.
	send(crdtCancelIn(2))
	for _, want := range []*crdtpb.CrdtStreamOut{
		cancelledOut(&crdtpb.CrdtStreamCancelledResponse{CommandId: 2, StateAction: update(voteOp(false))}),
		crdtStreamedMsg(&crdtpb.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, "self=false for=0 voters=2")}),
	} {
		if got := recv(); !proto.Equal(got, want) {
			t.Fatalf("got %v\nwant %v", got, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v", err)
	}

	// A protocol error fails the stream with FAILED_PRECONDITION after a failure message.
	bad, err := crdtpb.NewCrdtClient(p.conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Send(crdtCommand(t, 1, "Process", false)); err != nil {
		t.Fatal(err)
	}
	if out, err := bad.Recv(); err != nil || out.GetFailure() == nil {
		t.Fatalf("failure message: %v %v", out, err)
	}
	if _, err := bad.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stream end: %v", err)
	}
}
