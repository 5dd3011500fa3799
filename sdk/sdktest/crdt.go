package sdktest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
)

// Node ids the CRDT harness uses: the entity runs on SelfNode; WithRemoteOps and Remote
// default to RemoteNode.
const (
	SelfNode   = "sdktest-self"
	RemoteNode = "sdktest-remote"
)

// WithRemoteOps gives a CRDT entity a replicated history before it starts: ops (protocol
// operation deltas, as a user function sends in CrdtStateAction.update) made at node, or at
// RemoteNode when node is "". The entity's init then carries the resulting state.
func WithRemoteOps(node string, ops ...*crdtpb.CrdtDelta) Option {
	return func(c *config) {
		if node == "" {
			node = RemoteNode
		}
		c.crdtOps = append(c.crdtOps, remoteOp{node: node, ops: ops})
	}
}

type remoteOp struct {
	node string
	ops  []*crdtpb.CrdtDelta
}

// CRDT runs one CRDT entity instance in memory, playing the proxy as a kstate node does: it
// keeps the entity's replicated state with kstate's own CRDT implementation (crdtlog), applies
// the operation delta of every command and cancel handler to it, sends the entity the changes
// other nodes make (Remote), and routes the streamed messages to their streams.
//
// After every step it checks that the entity's view of its CRDT is what kstate's replica says
// the user function should see (the view crdtlog expects after the entity's own operations and
// the deltas it was sent), and fails the test when they differ, so a test also checks that the
// SDK and the runtime agree.
//
// It is not safe for concurrent use.
type CRDT[C sdk.CRDT] struct {
	base
	srv      *sdk.Server
	ctx      context.Context
	service  string
	entityID string
	sess     *sdk.CrdtSession
	nextID   int64
	now      int64        // the clock LWWRegister operations see, in Unix milliseconds
	replica  crdtlog.CRDT // the replicated state at SelfNode
	known    crdtlog.CRDT // what the entity was told, as crdtlog sees it
	streams  map[int64]*CRDTStream
	deleted  bool
	lastWC   sdk.WriteConsistency
}

// CRDTResult is what a successful CRDT command, or the start of a streamed one, produced.
type CRDTResult struct {
	// CommandID is the id the harness gave the command; ids start at 1 per harness.
	CommandID int64
	// Reply is the reply message, or nil when the command forwarded (or, for a streamed
	// command, sent no first element).
	Reply proto.Message
	// Forward is the forward, or nil.
	Forward *Forward
	// SideEffects are the command's side effects, in order.
	SideEffects []SideEffect
	// Update is the operation delta of the command's changes, or nil when it changed nothing.
	Update *crdtpb.CrdtDelta
	// Deleted reports that the command deleted the entity.
	Deleted bool
	// WriteConsistency is the consistency the command asked for its update or delete;
	// WriteLocal when it sent neither.
	WriteConsistency sdk.WriteConsistency
}

// CRDTStream is a streamed command: its first reply and the messages the entity sent on it.
type CRDTStream struct {
	// First is the result of the handler's call: its first element (Reply), forward, side
	// effects and changes.
	First *CRDTResult
	// Open reports whether the entity kept the stream open after the first reply
	// (CrdtReply.streamed).
	Open bool

	msgs   []StreamMessage
	read   int
	ended  bool
	cancel func() *CancelResult
}

// StreamMessage is one message of a streamed command (CrdtStreamedMessage).
type StreamMessage struct {
	// Reply is the element sent to the client, or nil.
	Reply proto.Message
	// Forward is a forward, or nil.
	Forward *Forward
	// SideEffects are the message's side effects.
	SideEffects []SideEffect
	// Failure ends the stream with a failure, or is nil.
	Failure *Failure
	// EndStream reports that this is the stream's last message.
	EndStream bool
}

// CancelResult is what the entity answered to a stream cancellation.
type CancelResult struct {
	// SideEffects are the cancel handler's side effects.
	SideEffects []SideEffect
	// Update is the operation delta of the cancel handler's changes, or nil.
	Update *crdtpb.CrdtDelta
	// Deleted reports that the cancel handler deleted the entity.
	Deleted bool
	// WriteConsistency is the consistency the handler asked for.
	WriteConsistency sdk.WriteConsistency
}

// Messages returns every message received on the stream so far.
func (s *CRDTStream) Messages() []StreamMessage { return slices.Clone(s.msgs) }

// Next returns the oldest message not yet returned by Next, and false when there is none.
func (s *CRDTStream) Next() (StreamMessage, bool) {
	if s.read >= len(s.msgs) {
		return StreamMessage{}, false
	}
	s.read++
	return s.msgs[s.read-1], true
}

// Ended reports whether the stream ended: it was not kept open, a message ended it, the client
// cancelled it, or the entity was deleted.
func (s *CRDTStream) Ended() bool { return s.ended }

// Cancel cancels the stream as its client would: the proxy sends stream_cancelled and the
// entity answers with its cancel handler's changes, which the harness replicates. It fails the
// test if the stream already ended.
func (s *CRDTStream) Cancel() *CancelResult { return s.cancel() }

// NewCRDT registers e the way sdk.Server.Register does (failing the test on a definition
// error) and activates the entity entityID: init with the state WithRemoteOps built, or with
// none. Like kstate, the harness counts the entity's node as a voter of a Vote from the start.
func NewCRDT[C sdk.CRDT](t TB, e *sdk.CRDTEntity[C], entityID string, opts ...Option) *CRDT[C] {
	if t != nil {
		t.Helper()
	}
	cfg := config{ctx: context.Background()}
	for _, o := range opts {
		o(&cfg)
	}
	h := &CRDT[C]{base: base{t: t}, ctx: cfg.ctx, entityID: entityID, now: 1_700_000_000_000, streams: map[int64]*CRDTStream{}}
	switch {
	case e == nil:
		h.fatalf("sdktest: nil entity")
		return h
	case cfg.snapshot != nil || len(cfg.events) > 0 || cfg.state != nil:
		h.fatalf("sdktest: WithSnapshot, WithEvents and WithState are for event-sourced and value entities; start a CRDT entity from WithRemoteOps")
		return h
	}
	h.service = e.ServiceName()
	h.srv = sdk.NewServer(sdk.WithLogger(cfg.log))
	if err := h.srv.Register(e); err != nil {
		h.fatalf("sdktest: %v", err)
		return h
	}
	// The CRDT's kind: what an empty session holds.
	probe := h.srv.NewCrdtSession(h.ctx)
	if _, err := probe.Step(h.initMsg(nil)); err != nil {
		h.fatalf("sdktest: init %s %q: %v", h.service, h.entityID, err)
		return h
	}
	replica, err := crdtlog.NewFromOp(probe.StateDelta())
	if err != nil {
		h.fatalf("sdktest: %v", err)
		return h
	}
	h.replica = replica
	if v, ok := replica.(*crdtlog.Vote); ok {
		if _, err := v.Cast(SelfNode, false); err != nil {
			h.fatalf("sdktest: %v", err)
			return h
		}
	}
	for _, r := range cfg.crdtOps {
		for _, op := range r.ops {
			if _, err := h.replica.Apply(r.node, op, h.tick()); err != nil {
				h.fatalf("sdktest: WithRemoteOps: %v", err)
				return h
			}
		}
	}
	h.activate()
	return h
}

func (h *CRDT[C]) tick() int64 {
	h.now++
	return h.now
}

func (h *CRDT[C]) initMsg(d *crdtpb.CrdtDelta) *crdtpb.CrdtStreamIn {
	return &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Init{Init: &crdtpb.CrdtInit{ServiceName: h.service, EntityId: h.entityID, Delta: d}}}
}

// activate opens a new session with the replica's state.
func (h *CRDT[C]) activate() {
	if h.t != nil {
		h.t.Helper()
	}
	h.sess = h.srv.NewCrdtSession(h.ctx)
	var d *crdtpb.CrdtDelta
	if !h.replica.Equal(crdtlog.New(h.replica.Kind())) {
		d = h.replica.InitDelta(SelfNode)
	}
	h.known = h.replica.Clone()
	h.known.ResetDelta()
	if _, err := h.sess.Step(h.initMsg(d)); err != nil {
		h.fatalf("sdktest: init %s %q: %v", h.service, h.entityID, err)
		return
	}
	h.check("init")
}

// check fails the test when the entity's view differs from what the replica says it knows.
func (h *CRDT[C]) check(after string) {
	if h.t != nil {
		h.t.Helper()
	}
	if h.deleted {
		return
	}
	got, want := h.sess.StateDelta(), h.known.InitDelta(SelfNode)
	if !proto.Equal(got, want) {
		h.fatalf("sdktest: after %s, the entity's view of its CRDT is\n  %v\nbut kstate's replica says it should be\n  %v", after, got, want)
	}
}

// step sends one input and routes its outputs: replies and cancel responses are returned,
// streamed messages go to their streams.
func (h *CRDT[C]) step(what string, in *crdtpb.CrdtStreamIn) []*crdtpb.CrdtStreamOut {
	if h.t != nil {
		h.t.Helper()
	}
	outs, err := h.sess.Step(in)
	if err != nil {
		h.fatalf("sdktest: %s: stream failure: %v", what, err)
		return nil
	}
	var direct []*crdtpb.CrdtStreamOut
	for _, out := range outs {
		m := out.GetStreamedMessage()
		if m == nil {
			direct = append(direct, out)
			continue
		}
		h.route(what, m)
	}
	return direct
}

func (h *CRDT[C]) route(what string, m *crdtpb.CrdtStreamedMessage) {
	if h.t != nil {
		h.t.Helper()
	}
	st := h.streams[m.GetCommandId()]
	if st == nil {
		h.fatalf("sdktest: %s: a streamed message for command %d, which has no open stream: %v", what, m.GetCommandId(), m)
		return
	}
	msg := StreamMessage{SideEffects: h.sideEffects(m.GetSideEffects()), EndStream: m.GetEndStream()}
	switch a := m.GetClientAction().GetAction().(type) {
	case *cloudstatepb.ClientAction_Reply:
		msg.Reply = h.decode(a.Reply.GetPayload())
	case *cloudstatepb.ClientAction_Forward:
		msg.Forward = h.forward(a.Forward)
	case *cloudstatepb.ClientAction_Failure:
		msg.Failure = &Failure{CommandID: m.GetCommandId(), Description: a.Failure.GetDescription(), Restart: a.Failure.GetRestart()}
		if !msg.EndStream {
			h.fatalf("sdktest: %s: a failure on stream %d without end_stream", what, m.GetCommandId())
		}
	}
	st.msgs = append(st.msgs, msg)
	if msg.EndStream {
		st.ended = true
		delete(h.streams, m.GetCommandId())
	}
}

// replicate applies an operation delta the entity sent, then sends it the correction when the
// replica differs from what it expects (a losing LWWRegister write).
func (h *CRDT[C]) replicate(what string, op *crdtpb.CrdtDelta) {
	if h.t != nil {
		h.t.Helper()
	}
	now := h.tick()
	known, err := crdtlog.Expected(h.known, SelfNode, op, now)
	if err != nil {
		h.fatalf("sdktest: %s: kstate rejects the entity's update %v: %v", what, op, err)
		return
	}
	if _, err := h.replica.Apply(SelfNode, op, now); err != nil {
		h.fatalf("sdktest: %s: kstate rejects the entity's update %v: %v", what, op, err)
		return
	}
	h.known = known
	h.check(what)
	h.sync(what)
}

// sync sends the entity what the replica has that it was not told.
func (h *CRDT[C]) sync(what string) {
	if h.t != nil {
		h.t.Helper()
	}
	d, err := crdtlog.ChangeDelta(h.known, h.replica, SelfNode)
	if err != nil {
		h.fatalf("sdktest: %s: %v", what, err)
		return
	}
	if d == nil {
		return
	}
	h.known = h.replica.Clone()
	h.known.ResetDelta()
	if outs := h.step(what, &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delta{Delta: d}}); len(outs) > 0 {
		h.fatalf("sdktest: %s: the entity answered a delta with %v", what, outs)
	}
	h.check(what)
}

func writeConsistency(w crdtpb.CrdtWriteConsistency) sdk.WriteConsistency {
	switch w {
	case crdtpb.CrdtWriteConsistency_MAJORITY:
		return sdk.WriteMajority
	case crdtpb.CrdtWriteConsistency_ALL:
		return sdk.WriteAll
	}
	return sdk.WriteLocal
}

// stateAction replicates a state action and reports it.
func (h *CRDT[C]) stateAction(what string, a *crdtpb.CrdtStateAction) (update *crdtpb.CrdtDelta, deleted bool) {
	if h.t != nil {
		h.t.Helper()
	}
	h.lastWC = writeConsistency(a.GetWriteConsistency())
	switch x := a.GetAction().(type) {
	case *crdtpb.CrdtStateAction_Update:
		h.replicate(what, x.Update)
		return x.Update, false
	case *crdtpb.CrdtStateAction_Delete:
		h.deleted = true
		h.closeStreams()
		return nil, true
	case nil:
		if a != nil {
			h.fatalf("sdktest: %s: an empty state action", what)
		}
	}
	return nil, false
}

func (h *CRDT[C]) closeStreams() {
	for id, st := range h.streams {
		st.ended = true
		delete(h.streams, id)
	}
}

// command sends a command and returns its reply; the streamed messages it caused are routed.
func (h *CRDT[C]) command(name string, in proto.Message, streamed bool, opts []CommandOption) (*crdtpb.CrdtReply, int64, error) {
	if h.t != nil {
		h.t.Helper()
	}
	if in == nil {
		h.fatalf("sdktest: command %s: nil input message", name)
		return nil, 0, errors.New("sdktest: nil input message")
	}
	payload, err := anypb.New(in)
	if err != nil {
		h.fatalf("sdktest: command %s: %v", name, err)
		return nil, 0, err
	}
	h.nextID++
	cmd := &cloudstatepb.Command{EntityId: h.entityID, Id: h.nextID, Name: name, Payload: payload, Streamed: streamed}
	for _, o := range opts {
		o(cmd)
	}
	what := fmt.Sprintf("command %d (%s)", cmd.GetId(), name)
	outs := h.step(what, &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Command{Command: cmd}})
	if len(outs) != 1 || outs[0].GetReply() == nil {
		h.fatalf("sdktest: %s: want one reply, got %v", what, outs)
		return nil, 0, errors.New("sdktest: no reply")
	}
	reply := outs[0].GetReply()
	if reply.GetCommandId() != cmd.GetId() {
		h.fatalf("sdktest: %s: reply for command %d", what, reply.GetCommandId())
	}
	return reply, cmd.GetId(), nil
}

func (h *CRDT[C]) result(what string, id int64, reply *crdtpb.CrdtReply) (*CRDTResult, error) {
	if h.t != nil {
		h.t.Helper()
	}
	if f := reply.GetClientAction().GetFailure(); f != nil {
		if reply.GetStateAction() != nil || len(reply.GetSideEffects()) > 0 || reply.GetStreamed() {
			h.fatalf("sdktest: %s: a failure reply carries a state action, side effects or streamed", what)
		}
		h.check(what)
		return nil, &Failure{CommandID: f.GetCommandId(), Description: f.GetDescription(), Restart: f.GetRestart()}
	}
	res := &CRDTResult{CommandID: id, SideEffects: h.sideEffects(reply.GetSideEffects())}
	switch a := reply.GetClientAction().GetAction().(type) {
	case *cloudstatepb.ClientAction_Reply:
		res.Reply = h.decode(a.Reply.GetPayload())
	case *cloudstatepb.ClientAction_Forward:
		res.Forward = h.forward(a.Forward)
	}
	res.Update, res.Deleted = h.stateAction(what, reply.GetStateAction())
	res.WriteConsistency = h.lastWC
	h.check(what)
	return res, nil
}

// Command sends a command of a unary method to the entity and returns what it produced; the
// streamed messages it causes on open streams are added to them. A command failure is returned
// as a *Failure error (with a nil result). A reply that breaks the protocol, a stream failure,
// or a view that differs from kstate's replica fails the test.
func (h *CRDT[C]) Command(name string, in proto.Message, opts ...CommandOption) (*CRDTResult, error) {
	if h.t != nil {
		h.t.Helper()
	}
	reply, id, err := h.command(name, in, false, opts)
	if err != nil {
		return nil, err
	}
	if reply.GetClientAction() == nil {
		h.fatalf("sdktest: command %d (%s): reply without a client action", id, name)
	}
	if reply.GetStreamed() {
		h.fatalf("sdktest: command %d (%s): a reply to an unstreamed command has streamed=true", id, name)
	}
	return h.result(fmt.Sprintf("command %d (%s)", id, name), id, reply)
}

// Stream starts a streamed command of a server-streaming method, as a streaming client call
// does, and returns the stream. The handler's failure is returned as a *Failure error (with a
// nil stream).
func (h *CRDT[C]) Stream(name string, in proto.Message, opts ...CommandOption) (*CRDTStream, error) {
	if h.t != nil {
		h.t.Helper()
	}
	reply, id, err := h.command(name, in, true, opts)
	if err != nil {
		return nil, err
	}
	what := fmt.Sprintf("command %d (%s)", id, name)
	st := &CRDTStream{Open: reply.GetStreamed(), ended: !reply.GetStreamed()}
	st.cancel = func() *CancelResult { return h.cancel(id, st) }
	if st.Open {
		h.streams[id] = st
	}
	res, err := h.result(what, id, reply)
	if err != nil {
		delete(h.streams, id)
		return nil, err
	}
	st.First = res
	return st, nil
}

func (h *CRDT[C]) cancel(id int64, st *CRDTStream) *CancelResult {
	if h.t != nil {
		h.t.Helper()
	}
	what := fmt.Sprintf("cancellation of stream %d", id)
	if st.ended {
		h.fatalf("sdktest: %s: the stream already ended", what)
		return nil
	}
	delete(h.streams, id)
	st.ended = true
	outs := h.step(what, &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_StreamCancelled{
		StreamCancelled: &cloudstatepb.StreamCancelled{EntityId: h.entityID, Id: id},
	}})
	if len(outs) != 1 || outs[0].GetStreamCancelledResponse() == nil {
		h.fatalf("sdktest: %s: want one stream cancelled response, got %v", what, outs)
		return nil
	}
	resp := outs[0].GetStreamCancelledResponse()
	if resp.GetCommandId() != id {
		h.fatalf("sdktest: %s: response for command %d", what, resp.GetCommandId())
	}
	res := &CancelResult{SideEffects: h.sideEffects(resp.GetSideEffects())}
	res.Update, res.Deleted = h.stateAction(what, resp.GetStateAction())
	res.WriteConsistency = h.lastWC
	h.check(what)
	return res
}

// Remote makes a change at another node, as if a user function there had sent op (a protocol
// operation delta): the harness merges it into its replica and sends the entity the resulting
// change, as kstate does with deltas it receives from the other nodes; the OnChange callbacks'
// messages go to their streams. An empty node means RemoteNode. For a Vote, op's self_vote is
// that node's vote.
func (h *CRDT[C]) Remote(node string, op *crdtpb.CrdtDelta) {
	if h.t != nil {
		h.t.Helper()
	}
	if node == "" {
		node = RemoteNode
	}
	if node == SelfNode {
		h.fatalf("sdktest: Remote: %q is the entity's own node", node)
		return
	}
	if h.deleted {
		h.fatalf("sdktest: Remote: the entity was deleted")
		return
	}
	if _, err := h.replica.Apply(node, op, h.tick()); err != nil {
		h.fatalf("sdktest: Remote %s: %v", node, err)
		return
	}
	h.sync("a change at " + node)
}

// RemoveNode removes node's vote from a Vote entity, as kstate does when a node leaves the
// application, and sends the entity the change.
func (h *CRDT[C]) RemoveNode(node string) {
	if h.t != nil {
		h.t.Helper()
	}
	v, ok := h.replica.(*crdtlog.Vote)
	if !ok {
		h.fatalf("sdktest: RemoveNode: the entity's CRDT is a %s, not a Vote", h.replica.Kind())
		return
	}
	v.Remove(node)
	h.sync("removal of node " + node)
}

// Delete deletes the entity as the proxy does when another node deleted it: the entity is told,
// and its open streams end.
func (h *CRDT[C]) Delete() {
	if h.t != nil {
		h.t.Helper()
	}
	if outs := h.step("delete", &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delete{Delete: &crdtpb.CrdtDelete{}}}); len(outs) > 0 {
		h.fatalf("sdktest: delete: the entity answered with %v", outs)
	}
	h.deleted = true
	h.closeStreams()
}

// Deleted reports whether the entity was deleted, by one of its commands or by Delete.
func (h *CRDT[C]) Deleted() bool { return h.deleted }

// Restart passivates the entity and activates it again with the replicated state, as kstate
// does, and fails the test unless the entity's view is the replica's. A deleted entity starts
// again empty. It fails the test when streams are open: kstate does not passivate an entity
// with open streams.
func (h *CRDT[C]) Restart() {
	if h.t != nil {
		h.t.Helper()
	}
	if len(h.streams) > 0 {
		h.fatalf("sdktest: Restart: streams %v are open", slices.Sorted(maps.Keys(h.streams)))
		return
	}
	if h.deleted {
		h.deleted = false
		h.replica = crdtlog.New(h.replica.Kind())
		if v, ok := h.replica.(*crdtlog.Vote); ok {
			_, _ = v.Cast(SelfNode, false)
		}
	}
	h.activate()
}

// State returns the entity's CRDT as the entity sees it. It is the entity's own: read it, do
// not change it.
func (h *CRDT[C]) State() C { return h.sess.State().(C) }

// Replica returns a copy of the replicated state, as kstate's node holds it.
func (h *CRDT[C]) Replica() crdtlog.CRDT { return h.replica.Clone() }

// OpenStreams returns the ids of the streams the entity keeps open.
func (h *CRDT[C]) OpenStreams() []int64 { return h.sess.OpenStreams() }
