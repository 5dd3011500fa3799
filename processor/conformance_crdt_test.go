package processor

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

const (
	crdtService = "kstate.test.v1.CrdtTest"
	crdtPID     = "crdt-test"
)

func crdtEntities() []*cloudstatepb.Entity {
	return []*cloudstatepb.Entity{{EntityType: "cloudstate.crdt.Crdt", ServiceName: crdtService, PersistenceId: crdtPID}}
}

// callCrdt runs CrdtTest/Process asynchronously.
func callCrdt(cc *grpc.ClientConn, id string) chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := testpb.NewCrdtTestClient(cc).Process(ctx, &testpb.Request{Id: id})
		ch <- callResult{r, err}
	}()
	return ch
}

func expectCrdtInit(t *testing.T, cs *ufCrdtStream, id string) *crdtpb.CrdtInit {
	t.Helper()
	m := cs.recv(t)
	init := m.GetInit()
	if init == nil || init.GetServiceName() != crdtService || init.GetEntityId() != id {
		t.Fatalf("want init of %s, got %v", id, m)
	}
	return init
}

func expectCrdtCommand(t *testing.T, cs *ufCrdtStream, id int64, name string, streamed bool) {
	t.Helper()
	m := cs.recv(t)
	c := m.GetCommand()
	if c == nil || c.GetId() != id || c.GetName() != name || c.GetStreamed() != streamed {
		t.Fatalf("want command %d %s streamed=%v, got %v", id, name, streamed, m)
	}
}

func crdtReply(t *testing.T, id int64, msg string, action *crdtpb.CrdtStateAction, streamed bool) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Reply{Reply: &crdtpb.CrdtReply{
		CommandId:    id,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: anyOf(t, &testpb.Response{Message: msg})}}},
		StateAction:  action,
		Streamed:     streamed,
	}}}
}

func pnIncrement(n int64, wc crdtpb.CrdtWriteConsistency) *crdtpb.CrdtStateAction {
	return &crdtpb.CrdtStateAction{
		Action:           &crdtpb.CrdtStateAction_Update{Update: &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: &crdtpb.PNCounterDelta{Change: n}}}},
		WriteConsistency: wc,
	}
}

// expectPN reads the next message, which must be a PNCounter delta of change.
func expectPN(t *testing.T, cs *ufCrdtStream, change int64) {
	t.Helper()
	m := cs.recv(t)
	if d := m.GetDelta().GetPncounter(); d == nil || d.GetChange() != change {
		t.Fatalf("want a PNCounter delta of %d, got %v", change, m)
	}
}

// TestCrdtEntityConformance runs a PNCounter entity on two nodes of one app: state changes served
// where they land, replicated to the other node's active entity as deltas; a streamed command fed
// by remote changes and cancelled by its client; state in init after a restart of every node.
func TestCrdtEntityConformance(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, crdtEntities()...)
	app := kafkatest.Unique(t, "crdt")
	cfgA := testConfig(t, brokers, app, uf.addr)
	nA, err := startNode(t, cfgA)
	if err != nil {
		t.Fatal(err)
	}
	ccA := dial(t, nA.Addr())
	waitServing(t, ccA)
	_, ccB := testNode(t, brokers, app, uf.addr)

	// Node A: the first command of a new entity; init carries no state.
	ch := callCrdt(ccA, "pn-1")
	a := uf.nextCrdt(t)
	if init := expectCrdtInit(t, a, "pn-1"); init.GetDelta() != nil {
		t.Fatalf("a new entity's init has state: %v", init.GetDelta())
	}
	expectCrdtCommand(t, a, 1, "Process", false)
	a.send(crdtReply(t, 1, "plus 5", pnIncrement(5, crdtpb.CrdtWriteConsistency_MAJORITY), false))
	if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "plus 5" {
		t.Fatalf("%v %v", r.resp, r.err)
	}

	// Node B activates the entity with a streamed command: init carries A's change once B's
	// replica has it (or B pushes it as a delta right after).
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := testpb.NewCrdtTestClient(ccB).Watch(wctx, &testpb.Request{Id: "pn-1"})
	if err != nil {
		t.Fatal(err)
	}
	b := uf.nextCrdt(t)
	// B's replica gets A's change in its own time: in init, or pushed as a delta before or after
	// the command. sum is the counter as B's user function knows it.
	sum := expectCrdtInit(t, b, "pn-1").GetDelta().GetPncounter().GetChange()
	for sawCommand := false; !sawCommand; {
		m := b.recv(t)
		switch {
		case m.GetDelta().GetPncounter() != nil:
			sum += m.GetDelta().GetPncounter().GetChange()
		case m.GetCommand().GetName() == "Watch" && m.GetCommand().GetStreamed() && m.GetCommand().GetId() == 1:
			sawCommand = true
		default:
			t.Fatalf("want the streamed Watch command or a PNCounter delta, got %v", m)
		}
	}
	b.send(crdtReply(t, 1, "watching", nil, true))
	if r, err := watch.Recv(); err != nil || r.GetMessage() != "watching" {
		t.Fatalf("first streamed message: %v %v", r, err)
	}

	// A changes the counter again: B's entity gets the change as a delta, and its streamed
	// command sends the client a message.
	ch = callCrdt(ccA, "pn-1")
	expectCrdtCommand(t, a, 2, "Process", false)
	a.send(crdtReply(t, 2, "plus 2", pnIncrement(2, crdtpb.CrdtWriteConsistency_LOCAL), false))
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	for sum != 7 {
		m := b.recv(t)
		if m.GetDelta().GetPncounter() == nil {
			t.Fatalf("want PNCounter deltas up to 7, got %v (at %d)", m, sum)
		}
		sum += m.GetDelta().GetPncounter().GetChange()
	}
	b.send(&crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamedMessage{StreamedMessage: &crdtpb.CrdtStreamedMessage{
		CommandId:    1,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: anyOf(t, &testpb.Response{Message: "now 7"})}}},
	}}})
	if r, err := watch.Recv(); err != nil || r.GetMessage() != "now 7" {
		t.Fatalf("streamed change: %v %v", r, err)
	}

	// The client cancels: B's entity is told, and the change its cancel handler makes (-1)
	// reaches A.
	wcancel()
	m := b.recv(t)
	if sc := m.GetStreamCancelled(); sc == nil || sc.GetId() != 1 || sc.GetEntityId() != "pn-1" {
		t.Fatalf("want stream_cancelled for command 1, got %v", m)
	}
	b.send(&crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: &crdtpb.CrdtStreamCancelledResponse{
		CommandId: 1, StateAction: pnIncrement(-1, crdtpb.CrdtWriteConsistency_LOCAL),
	}}})
	expectPN(t, a, -1)

	// A command failure changes nothing and the entity serves on.
	ch = callCrdt(ccA, "pn-1")
	expectCrdtCommand(t, a, 3, "Process", false)
	a.send(&crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Reply{Reply: &crdtpb.CrdtReply{
		CommandId:    3,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{CommandId: 3, Description: "no"}}},
		StateAction:  pnIncrement(100, crdtpb.CrdtWriteConsistency_LOCAL),
	}}})
	if r := wait(t, ch); status.Convert(r.err).Message() != "no" {
		t.Fatalf("failure: %v", r.err)
	}
	uf.noMoreInteractions(t)

	// An illegal change (a GCounter delta on a PNCounter) is a protocol error.
	ch = callCrdt(ccA, "pn-1")
	expectCrdtCommand(t, a, 4, "Process", false)
	a.send(crdtReply(t, 4, "bad", &crdtpb.CrdtStateAction{Action: &crdtpb.CrdtStateAction_Update{Update: &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: 1}}}}}, false))
	if r := wait(t, ch); status.Code(r.err) != codes.Internal {
		t.Fatalf("illegal change: %v, want INTERNAL", r.err)
	}
	a.waitClosed(t, 5*time.Second)

	// Every node stops; a node started again on A's store serves the state: 5 + 2 - 1.
	_ = ccB.Close()
	_ = ccA.Close()
	for _, n := range []*Node{nA} {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cfgA2 := cfgA
	cfgA2.ListenAddr = "127.0.0.1:0"
	nA2, err := startNode(t, cfgA2)
	if err != nil {
		t.Fatal(err)
	}
	ccA2 := dial(t, nA2.Addr())
	waitServing(t, ccA2)
	ch = callCrdt(ccA2, "pn-1")
	a2 := uf.nextCrdt(t)
	if init := expectCrdtInit(t, a2, "pn-1"); init.GetDelta().GetPncounter().GetChange() != 6 {
		t.Fatalf("after a restart: init %v, want the counter at 6", init.GetDelta())
	}
	expectCrdtCommand(t, a2, 1, "Process", false)
	a2.send(crdtReply(t, 1, "back", nil, false))
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// recvVote reads messages until a Vote delta arrives and returns it (within the stream's
// receive bound).
func recvVote(t *testing.T, cs *ufCrdtStream) *crdtpb.VoteDelta {
	t.Helper()
	m := cs.recv(t)
	v := m.GetDelta().GetVote()
	if v == nil {
		t.Fatalf("want a Vote delta, got %v", m)
	}
	return v
}

// Presence across nodes (the TCK's connection tracking): a user connected through node A — a
// streamed command whose entity votes true — is seen online by a monitor on node B; when A
// leaves the app, B removes A's vote and its monitor sees the user offline.
func TestCrdtVotePresenceAcrossNodes(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, crdtEntities()...)
	app := kafkatest.Unique(t, "presence")
	nA, ccA := testNode(t, brokers, app, uf.addr)
	_, ccB := testNode(t, brokers, app, uf.addr)

	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	connect, err := testpb.NewCrdtTestClient(ccA).Watch(cctx, &testpb.Request{Id: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	a := uf.nextCrdt(t)
	expectCrdtInit(t, a, "alice")
	expectCrdtCommand(t, a, 1, "Watch", true)
	a.send(&crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Reply{Reply: &crdtpb.CrdtReply{
		CommandId: 1,
		Streamed:  true,
		StateAction: &crdtpb.CrdtStateAction{
			Action:           &crdtpb.CrdtStateAction_Update{Update: &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: true}}}},
			WriteConsistency: crdtpb.CrdtWriteConsistency_MAJORITY,
		},
	}}})
	_ = connect

	// The monitor on B: online once B's replica has A's vote (in init, or pushed after).
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	if _, err := testpb.NewCrdtTestClient(ccB).Watch(mctx, &testpb.Request{Id: "alice"}); err != nil {
		t.Fatal(err)
	}
	b := uf.nextCrdt(t)
	// A's vote reaches B's replica in its own time: in init, or pushed before or after the
	// monitor's command.
	online := expectCrdtInit(t, b, "alice").GetDelta().GetVote()
	sawCommand := false
	for !sawCommand || online == nil {
		m := b.recv(t)
		switch {
		case m.GetDelta().GetVote() != nil:
			online = m.GetDelta().GetVote()
		case m.GetCommand().GetName() == "Watch":
			sawCommand = true
		default:
			t.Fatalf("want the monitor's command or A's vote, got %v", m)
		}
	}
	// B counts itself as a voter (voting false) when its replica already had a Vote.
	if online.GetVotesFor() != 1 || online.GetTotalVoters() < 1 || online.GetTotalVoters() > 2 || online.GetSelfVote() {
		t.Fatalf("B sees %v, want A voting true", online)
	}
	b.send(crdtReply(t, 1, "online", nil, true))

	// A leaves the app: B removes its vote within a sweep, and its entity is told.
	start := time.Now()
	ccancel()
	if sc := a.recv(t).GetStreamCancelled(); sc == nil {
		t.Fatal("A's entity was not told the connection was cancelled")
	}
	// A's user function answers the cancel without a change: the vote stays true, so only A's
	// departure can make B see alice offline.
	a.send(&crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: &crdtpb.CrdtStreamCancelledResponse{CommandId: 1}}})
	if err := nA.Close(); err != nil {
		t.Fatal(err)
	}
	off := recvVote(t, b)
	for off.GetVotesFor() != 0 { // B's own initial vote may arrive first
		off = recvVote(t, b)
	}
	if off.GetTotalVoters() > 1 {
		t.Fatalf("after A left, B sees %v, want at most B as a voter", off)
	}
	t.Logf("A's vote removed on B %v after A left", time.Since(start).Round(time.Millisecond))
	_ = ccA
}

// A partition owner's checkpoint writes the full states to the .crdt-state topic with the delta
// offset they cover; a node with an empty store loads them and reads the deltas only from there.
func TestCrdtCheckpointBootstrapsANewNode(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, crdtEntities()...)
	app := kafkatest.Unique(t, "crdtckpt")
	nA, ccA := testNode(t, brokers, app, uf.addr)
	ch := callCrdt(ccA, "gc-1")
	a := uf.nextCrdt(t)
	expectCrdtInit(t, a, "gc-1")
	expectCrdtCommand(t, a, 1, "Process", false)
	a.send(crdtReply(t, 1, "ok", &crdtpb.CrdtStateAction{
		Action:           &crdtpb.CrdtStateAction_Update{Update: &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: 3}}}},
		WriteConsistency: crdtpb.CrdtWriteConsistency_ALL,
	}, false))
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	p := broker.Partition([]byte("gc-1"), nA.cfg.Broker.Partitions)
	topic := nA.cfg.Broker.CrdtTopic(crdtPID)
	// A's follower has read its own delta back (polled, bounded), then A checkpoints.
	deadline := time.Now().Add(10 * time.Second)
	for {
		nA.crdt.mu.Lock()
		next := nA.crdt.next[topic][p]
		nA.crdt.mu.Unlock()
		if next > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A never read its own delta back")
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}
	if nA.localOwner(p) == nil {
		t.Fatalf("A does not own partition %d", p)
	}
	if err := nA.crdt.checkpoint(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	nA.crdt.mu.Lock()
	covered := nA.crdt.next[topic][p]
	nA.crdt.mu.Unlock()

	// A new node, empty store: it starts the deltas at the checkpoint and has the state.
	nC, ccC := testNode(t, brokers, app, uf.addr)
	from, err := nC.crdt.bootstrap(context.Background(), p, crdtPID)
	if err != nil || from != covered {
		t.Fatalf("bootstrap: deltas from %d (%v), want the checkpoint's %d", from, err, covered)
	}
	ch = callCrdt(ccC, "gc-1")
	c := uf.nextCrdt(t)
	if init := expectCrdtInit(t, c, "gc-1"); init.GetDelta().GetGcounter().GetIncrement() != 3 {
		t.Fatalf("new node's init: %v, want the counter at 3", init.GetDelta())
	}
	expectCrdtCommand(t, c, 1, "Process", false)
	c.send(crdtReply(t, 1, "ok", nil, false))
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
}
