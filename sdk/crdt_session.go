package sdk

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// CrdtSession is the user-function side of one cloudstate.crdt.Crdt/handle stream with the
// transport taken out. The gRPC server runs one per stream; sdktest runs one in memory; a
// runtime that hosts entities in process drives one directly. Its name follows the protocol
// messages it exchanges (CrdtStreamIn, CrdtStreamOut).
//
// # Inputs
//
// The proxy's messages, in stream order: init first (with the current state as a delta from the
// empty CRDT, or none for a new entity), then, in any order, commands (ids from 1, several may
// be in flight), deltas (a change of the replicated state made elsewhere, as the protocol
// delta from what the user function was last told), stream_cancelled (a client cancelled a
// streamed command) and delete (the entity was deleted). The session handles one input at a
// time, in the order given; it is safe for concurrent use (inputs are serialized).
//
// # Outputs
//
// CRDT streams are not request/response: an input causes zero or more outputs, which must be
// sent to the proxy in the order they are produced:
//   - init: none.
//   - command: exactly one CrdtReply for it first (command_id = the command's id), carrying
//     the client action (reply, forward or failure; none for a streamed command whose handler
//     returned no first element), side effects, and a state action when the command changed
//     the CRDT (update: the operation delta of all its changes, with its write consistency) or
//     deleted the entity (delete). streamed=true means the command stays open: later messages
//     for it follow as CrdtStreamedMessage until one has end_stream=true or the proxy cancels
//     it. After a reply with an update, one CrdtStreamedMessage per other open streamed command
//     whose OnChange produced something (a reply, a forward, side effects, end_stream, or a
//     failure, which always comes with end_stream=true), in ascending command id order.
//   - delta: the CrdtStreamedMessages of the open streamed commands' OnChange callbacks, as
//     after a command; possibly none.
//   - stream_cancelled: exactly one CrdtStreamCancelledResponse for that command id (also for
//     an id that is not, or no longer, open; it then carries nothing else), with the OnCancel
//     callback's side effects and state action; after one with an update, the other streams'
//     CrdtStreamedMessages, as after a command.
//   - delete: none. The session forgets the state and the open streams (the proxy ends their
//     client streams); later commands get a failure reply, later deltas are ignored, and a
//     later stream_cancelled gets an empty response.
//   - an input that breaks the protocol (anything before init, a second init, an unknown
//     service, a delta of another CRDT type than the entity's): a stream failure. The outputs
//     then end with a CrdtStreamOut.failure, the error is returned, and every later input gets
//     the same failure: the stream must be closed.
//
// Every output today is caused by an input, but a consumer should not count on a fixed
// number: drive the session either as a step function (Step, StepContext), or as a stream
// (Send, Recv, CloseSend) with Recv on its own goroutine, as over gRPC.
//
// # State the session assumes
//
// A Vote that init carries no delta for counts this node as its one voter (self_vote=false,
// votes_for=0, total_voters=1), so the proxy should count the node as a voter from the start
// (docs/crdt.md: cast false for a node when it starts hosting the entity). Changes the user
// function makes are sent as operation deltas, not states: GCounterDelta.increment,
// PNCounterDelta.change, GSetDelta.added, ORSetDelta{cleared, removed, added},
// LWWRegisterDelta{value, clock, custom_clock_value}, FlagDelta{value: true},
// ORMapDelta{cleared, removed, updated, added} (an added entry carries its value's operations
// since it was created) and VoteDelta.self_vote (votes_for and total_voters are 0).
type CrdtSession struct {
	srv *Server
	ctx context.Context

	stepMu   sync.Mutex // held while an input is handled
	log      hclog.Logger
	model    *crdtModel // nil until init
	entityID string
	state    crdtValue
	txn      *txn
	streams  map[int64]*crdtStream // open streamed commands by id
	deleted  bool
	err      error           // set by a stream failure; every later input returns it
	cmdCtx   context.Context // StepContext's, while it runs

	out struct {
		sync.Mutex
		queue  []*crdtpb.CrdtStreamOut
		closed bool  // CloseSend was called, or the stream failed
		err    error // the stream failure, returned by Recv once the queue is drained
	}
	ready chan struct{} // a token when the queue may have outputs
	done  chan struct{} // closed when out.closed is set
}

// crdtStream is an open streamed command.
type crdtStream struct {
	id       int64
	name     string
	metadata *cloudstatepb.Metadata
	onChange func(*crdtCore) (proto.Message, error)
	onCancel func(*crdtCore) error
}

// NewCrdtSession returns a session for one CRDT entity stream served by s's registered
// entities. ctx is what the entity's handlers see as their context outside of StepContext
// (OnChange and OnCancel callbacks always see it), and ends a blocked Recv.
func (s *Server) NewCrdtSession(ctx context.Context) *CrdtSession {
	return &CrdtSession{
		srv:     s,
		ctx:     ctx,
		log:     s.log,
		streams: map[int64]*crdtStream{},
		ready:   make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// Step handles one message from the proxy and returns the messages to send back, in order
// (see the type's documentation for what each input produces). A non-nil error is a stream
// failure: the outputs then end with the failure message, and the stream must be closed.
func (s *CrdtSession) Step(in *crdtpb.CrdtStreamIn) ([]*crdtpb.CrdtStreamOut, error) {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	return s.step(in)
}

// StepContext is Step with ctx as the context the command handler sees (CRDTContext.Context)
// for this message: a runtime passes the command's own context, so a handler can honour the
// caller's deadline and cancellation. Callbacks (OnChange, OnCancel) see the session's context.
func (s *CrdtSession) StepContext(ctx context.Context, in *crdtpb.CrdtStreamIn) ([]*crdtpb.CrdtStreamOut, error) {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	s.cmdCtx = ctx
	defer func() { s.cmdCtx = nil }()
	return s.step(in)
}

// Send handles one message from the proxy, like Step, and queues its outputs for Recv, as
// sending on the client side of the gRPC stream does. It returns io.EOF after CloseSend or a
// stream failure (the failure itself is queued as the last output, and Recv then returns the
// error). Send and Recv may be called from different goroutines.
func (s *CrdtSession) Send(in *crdtpb.CrdtStreamIn) error { return s.send(nil, in) }

// SendContext is Send with ctx as the context the command handler sees, like StepContext.
func (s *CrdtSession) SendContext(ctx context.Context, in *crdtpb.CrdtStreamIn) error {
	return s.send(ctx, in)
}

// send is Send; a nil ctx means the session's context.
func (s *CrdtSession) send(ctx context.Context, in *crdtpb.CrdtStreamIn) error {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	s.out.Lock()
	closed := s.out.closed
	s.out.Unlock()
	if closed {
		return io.EOF
	}
	s.cmdCtx = ctx
	outs, err := s.step(in)
	s.cmdCtx = nil
	s.out.Lock()
	s.out.queue = append(s.out.queue, outs...)
	if err != nil {
		s.out.err = err
		s.closeLocked()
	}
	s.out.Unlock()
	s.signal()
	return nil
}

// Recv returns the next output queued by Send, waiting for one if there is none. Once the
// queue is empty it returns io.EOF after CloseSend, the stream failure's error after a
// failure, and the context's error when the session's context is done.
func (s *CrdtSession) Recv() (*crdtpb.CrdtStreamOut, error) {
	for {
		s.out.Lock()
		if len(s.out.queue) > 0 {
			out := s.out.queue[0]
			s.out.queue[0] = nil
			s.out.queue = s.out.queue[1:]
			more := len(s.out.queue) > 0
			s.out.Unlock()
			if more {
				s.signal() // another receiver may be waiting
			}
			return out, nil
		}
		closed, err := s.out.closed, s.out.err
		s.out.Unlock()
		switch {
		case err != nil:
			return nil, err
		case closed:
			return nil, io.EOF
		}
		select {
		case <-s.ready:
		case <-s.done:
		case <-s.ctx.Done():
			s.out.Lock()
			empty := len(s.out.queue) == 0
			s.out.Unlock()
			if empty {
				return nil, s.ctx.Err()
			}
		}
	}
}

// CloseSend ends the input side, as the proxy closing its side of the stream does: later Sends
// return io.EOF, and Recv returns io.EOF once the queued outputs are received.
func (s *CrdtSession) CloseSend() error {
	s.out.Lock()
	s.closeLocked()
	s.out.Unlock()
	return nil
}

func (s *CrdtSession) closeLocked() {
	if !s.out.closed {
		s.out.closed = true
		close(s.done)
	}
}

func (s *CrdtSession) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// EntityID returns the entity id from init, or "" before init.
func (s *CrdtSession) EntityID() string {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	return s.entityID
}

// ServiceName returns the entity's service from init, or "" before init.
func (s *CrdtSession) ServiceName() string {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	if s.model == nil {
		return ""
	}
	return string(s.model.desc.FullName())
}

// State returns the entity's CRDT as the user function sees it, or nil before init. It is the
// session's own: read it only while no input is being handled, and do not change it.
func (s *CrdtSession) State() CRDT {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	if s.state == nil {
		return nil
	}
	return s.state.(CRDT)
}

// StateDelta returns the user function's view of the CRDT as a protocol delta from the empty
// CRDT (what CrdtInit.delta would carry to start another session with the same view; a Vote's
// votes_for and total_voters included), or nil before init. Elements, keys and entries are
// ordered by identity, as crdtlog orders them.
func (s *CrdtSession) StateDelta() *crdtpb.CrdtDelta {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	if s.state == nil {
		return nil
	}
	return s.state.full()
}

// OpenStreams returns the ids of the open streamed commands, in ascending order.
func (s *CrdtSession) OpenStreams() []int64 {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	return slices.Sorted(maps.Keys(s.streams))
}

// Deleted reports whether the entity was deleted on this stream (by a command or by the proxy).
func (s *CrdtSession) Deleted() bool {
	s.stepMu.Lock()
	defer s.stepMu.Unlock()
	return s.deleted
}

// openStreams counts the open streamed commands of method; called by handlers, under stepMu.
func (s *CrdtSession) openStreams(method string) int {
	n := 0
	for _, st := range s.streams {
		if st.name == method {
			n++
		}
	}
	return n
}

func crdtStreamFailure(err error) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Failure{Failure: &cloudstatepb.Failure{Description: err.Error()}}}
}

func crdtReplyOut(r *crdtpb.CrdtReply) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Reply{Reply: r}}
}

func crdtStreamedOut(m *crdtpb.CrdtStreamedMessage) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamedMessage{StreamedMessage: m}}
}

func crdtCancelledOut(r *crdtpb.CrdtStreamCancelledResponse) *crdtpb.CrdtStreamOut {
	return &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: r}}
}

// step handles one input; stepMu is held.
func (s *CrdtSession) step(in *crdtpb.CrdtStreamIn) ([]*crdtpb.CrdtStreamOut, error) {
	if s.err != nil {
		return []*crdtpb.CrdtStreamOut{crdtStreamFailure(s.err)}, s.err
	}
	var (
		outs []*crdtpb.CrdtStreamOut
		err  error
	)
	switch m := in.GetMessage().(type) {
	case *crdtpb.CrdtStreamIn_Init:
		if s.model != nil {
			err = fmt.Errorf("%w: a second init message on the stream of entity %q", ErrProtocol, s.entityID)
			break
		}
		err = s.init(m.Init)
	case *crdtpb.CrdtStreamIn_Command:
		if s.model == nil {
			err = fmt.Errorf("%w: the stream's first message must be init, got a command", ErrProtocol)
			break
		}
		outs = s.command(m.Command)
	case *crdtpb.CrdtStreamIn_Delta:
		if s.model == nil {
			err = fmt.Errorf("%w: the stream's first message must be init, got a delta", ErrProtocol)
			break
		}
		outs, err = s.delta(m.Delta)
	case *crdtpb.CrdtStreamIn_StreamCancelled:
		if s.model == nil {
			err = fmt.Errorf("%w: the stream's first message must be init, got stream_cancelled", ErrProtocol)
			break
		}
		outs = s.cancelled(m.StreamCancelled)
	case *crdtpb.CrdtStreamIn_Delete:
		if s.model == nil {
			err = fmt.Errorf("%w: the stream's first message must be init, got delete", ErrProtocol)
			break
		}
		s.log.Debug("entity deleted by the proxy")
		s.forget()
	default:
		err = fmt.Errorf("%w: a CrdtStreamIn message without content", ErrProtocol)
	}
	if err != nil {
		s.err = err
		s.log.Error("CRDT stream failed", "error", err)
		return append(outs, crdtStreamFailure(err)), err
	}
	return outs, nil
}

func (s *CrdtSession) init(in *crdtpb.CrdtInit) error {
	model, ok := s.srv.lookup(in.GetServiceName()).(*crdtModel)
	if !ok {
		return fmt.Errorf("%w: init for service %q, which no registered CRDT entity serves (registered: %s)",
			ErrServiceNotFound, in.GetServiceName(), strings.Join(s.srv.serviceNames(EntityTypeCRDT), ", "))
	}
	s.model = model
	s.entityID = in.GetEntityId()
	s.log = s.srv.log.With("service", in.GetServiceName(), "entity_id", s.entityID)
	s.txn = &txn{}
	s.reset()
	if d := in.GetDelta(); d.GetDelta() != nil {
		if err := s.state.applyDelta(d); err != nil {
			return fmt.Errorf("init: the entity's state: %w", err)
		}
	}
	return nil
}

// reset gives the session an empty CRDT.
func (s *CrdtSession) reset() {
	s.state = s.model.newState()
	s.txn.root = s.state
	s.state.attach(s.txn)
}

// forget deletes the entity on this stream.
func (s *CrdtSession) forget() {
	s.deleted = true
	clear(s.streams)
	s.reset()
}

func (s *CrdtSession) delta(d *crdtpb.CrdtDelta) ([]*crdtpb.CrdtStreamOut, error) {
	if s.deleted {
		s.log.Debug("ignoring a delta for a deleted entity")
		return nil, nil
	}
	if err := s.state.applyDelta(d); err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	return s.notify(), nil
}

// handlerCtx is the context of the command being stepped: StepContext's, else the session's.
func (s *CrdtSession) handlerCtx() context.Context {
	if s.cmdCtx != nil {
		return s.cmdCtx
	}
	return s.ctx
}

// stateAction takes the pending changes of a successful handler: a delete, an update with the
// changes' delta, or nothing. changed reports an update.
func (s *CrdtSession) stateAction(c *crdtCore) (action *crdtpb.CrdtStateAction, changed bool) {
	defer s.state.resetDelta()
	wc := c.consistency.proto()
	if c.deleted {
		return &crdtpb.CrdtStateAction{Action: &crdtpb.CrdtStateAction_Delete{Delete: &crdtpb.CrdtDelete{}}, WriteConsistency: wc}, false
	}
	if !s.state.hasDelta() {
		return nil, false
	}
	return &crdtpb.CrdtStateAction{Action: &crdtpb.CrdtStateAction_Update{Update: s.state.delta()}, WriteConsistency: wc}, true
}

// command handles one command: its reply, then what the other streams' OnChange callbacks send.
func (s *CrdtSession) command(cmd *cloudstatepb.Command) []*crdtpb.CrdtStreamOut {
	log := s.log.With("command", cmd.GetName(), "command_id", cmd.GetId())
	fail := func(description string) []*crdtpb.CrdtStreamOut {
		return []*crdtpb.CrdtStreamOut{crdtReplyOut(&crdtpb.CrdtReply{
			CommandId:    cmd.GetId(),
			ClientAction: failureAction(cmd.GetId(), description, false),
		})}
	}
	if s.deleted {
		return fail(fmt.Sprintf("entity %q of %s: %v", s.entityID, s.model.desc.FullName(), ErrEntityDeleted))
	}
	h := s.model.commands[protoreflect.Name(cmd.GetName())]
	if h == nil {
		log.Warn("unknown command")
		return fail(fmt.Sprintf("unknown command %q for service %s (its methods are %s)", cmd.GetName(), s.model.desc.FullName(), methodNames(s.model.desc)))
	}
	in, err := decodeInput(cmd.GetName(), cmd.GetPayload(), h.in)
	if err != nil {
		log.Warn("bad command payload", "error", err)
		return fail(err.Error())
	}

	c := &crdtCore{
		ctx: s.handlerCtx(), sess: s, id: cmd.GetId(), name: cmd.GetName(), metadata: cmd.GetMetadata(),
		streamed: h.streamed && cmd.GetStreamed(),
	}
	s.txn.begin(modeWritable)
	defer s.txn.end()
	var out proto.Message
	if perr := guard(log, "command handler", func() { out, err = h.call(c, in) }); perr != nil {
		// The CRDT can only be changed through its methods, and the changes are undone, so the
		// entity can go on: no restart.
		s.txn.rollback()
		return fail(fmt.Sprintf("unexpected failure in command %s of %s; see the user function's log", cmd.GetName(), s.model.desc.FullName()))
	}
	if err == nil {
		err = c.err
	}
	if err == nil {
		err = s.txn.err
	}
	hasReply := out != nil && out.ProtoReflect().IsValid()
	if err == nil && c.forward != nil && hasReply {
		err = fmt.Errorf("command %s both forwarded to %s/%s and returned a reply: %w",
			cmd.GetName(), c.forward.GetServiceName(), c.forward.GetCommandName(), ErrAlreadyForwarded)
	}
	var action *cloudstatepb.ClientAction
	if err == nil {
		switch {
		case c.forward != nil:
			action = &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: c.forward}}
		case hasReply || !h.streamed:
			if !hasReply {
				out = h.out.New().Interface()
			}
			payload, merr := marshalAny(out)
			if merr != nil {
				err = fmt.Errorf("command %s: the reply does not encode: %v", cmd.GetName(), merr)
				break
			}
			action = &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: payload}}}
		}
	}
	if err != nil {
		log.Debug("command failed", "error", err)
		s.txn.rollback()
		return fail(failureDescription(err))
	}

	reply := &crdtpb.CrdtReply{CommandId: cmd.GetId(), ClientAction: action, SideEffects: c.effects}
	var changed bool
	reply.StateAction, changed = s.stateAction(c)
	outs := []*crdtpb.CrdtStreamOut{crdtReplyOut(reply)}
	if c.deleted {
		s.forget()
		return outs
	}
	if changed {
		outs = append(outs, s.notify()...)
	}
	if c.streamed && (c.onChange != nil || c.onCancel != nil) {
		reply.Streamed = true
		s.streams[cmd.GetId()] = &crdtStream{
			id: cmd.GetId(), name: cmd.GetName(), metadata: cmd.GetMetadata(),
			onChange: c.onChange, onCancel: c.onCancel,
		}
	}
	return outs
}

// notify runs the OnChange callbacks of the open streams, in id order, and returns the
// messages they produce.
func (s *CrdtSession) notify() []*crdtpb.CrdtStreamOut {
	var outs []*crdtpb.CrdtStreamOut
	for _, id := range slices.Sorted(maps.Keys(s.streams)) {
		st := s.streams[id]
		if st.onChange == nil {
			continue
		}
		msg, end := s.change(st)
		if end {
			delete(s.streams, id)
		}
		if msg != nil {
			outs = append(outs, crdtStreamedOut(msg))
		}
	}
	return outs
}

// change runs one stream's OnChange callback; end reports that the stream ended.
func (s *CrdtSession) change(st *crdtStream) (msg *crdtpb.CrdtStreamedMessage, end bool) {
	log := s.log.With("command", st.name, "command_id", st.id)
	c := &crdtCore{ctx: s.ctx, sess: s, id: st.id, name: st.name, metadata: st.metadata, streamed: true}
	failed := func(description string) (*crdtpb.CrdtStreamedMessage, bool) {
		return &crdtpb.CrdtStreamedMessage{CommandId: st.id, ClientAction: failureAction(st.id, description, false), EndStream: true}, true
	}
	s.txn.begin(modeReadOnly)
	defer s.txn.end()
	var (
		out proto.Message
		err error
	)
	if perr := guard(log, "OnChange callback", func() { out, err = st.onChange(c) }); perr != nil {
		return failed(fmt.Sprintf("unexpected failure in the stream of command %s of %s; see the user function's log", st.name, s.model.desc.FullName()))
	}
	if err == nil {
		err = c.err
	}
	if err == nil {
		err = s.txn.err
	}
	hasReply := out != nil && out.ProtoReflect().IsValid()
	if err == nil && c.forward != nil && hasReply {
		err = fmt.Errorf("the stream of command %s both forwarded to %s/%s and returned a message: %w",
			st.name, c.forward.GetServiceName(), c.forward.GetCommandName(), ErrAlreadyForwarded)
	}
	var action *cloudstatepb.ClientAction
	if err == nil {
		switch {
		case c.forward != nil:
			action = &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: c.forward}}
		case hasReply:
			payload, merr := marshalAny(out)
			if merr != nil {
				err = fmt.Errorf("the stream of command %s: the message does not encode: %v", st.name, merr)
				break
			}
			action = &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: payload}}}
		}
	}
	if err != nil {
		log.Debug("stream failed", "error", err)
		return failed(failureDescription(err))
	}
	if action == nil && !c.ended && len(c.effects) == 0 {
		return nil, false
	}
	return &crdtpb.CrdtStreamedMessage{CommandId: st.id, ClientAction: action, SideEffects: c.effects, EndStream: c.ended}, c.ended
}

// cancelled handles a stream cancellation: its response, then what the other streams send.
func (s *CrdtSession) cancelled(sc *cloudstatepb.StreamCancelled) []*crdtpb.CrdtStreamOut {
	resp := &crdtpb.CrdtStreamCancelledResponse{CommandId: sc.GetId()}
	outs := []*crdtpb.CrdtStreamOut{crdtCancelledOut(resp)}
	st := s.streams[sc.GetId()]
	delete(s.streams, sc.GetId())
	if st == nil || st.onCancel == nil {
		return outs
	}
	log := s.log.With("command", st.name, "command_id", st.id)
	c := &crdtCore{ctx: s.ctx, sess: s, id: st.id, name: st.name, metadata: st.metadata, streamed: true}
	s.txn.begin(modeWritable)
	defer s.txn.end()
	var err error
	if perr := guard(log, "OnCancel callback", func() { err = st.onCancel(c) }); perr != nil {
		s.txn.rollback()
		return outs
	}
	if err == nil {
		err = c.err
	}
	if err == nil {
		err = s.txn.err
	}
	if err != nil {
		log.Warn("OnCancel callback failed; its changes and side effects are dropped", "error", err)
		s.txn.rollback()
		return outs
	}
	resp.SideEffects = c.effects
	var changed bool
	resp.StateAction, changed = s.stateAction(c)
	if c.deleted {
		s.forget()
		return outs
	}
	if changed {
		outs = append(outs, s.notify()...)
	}
	return outs
}
