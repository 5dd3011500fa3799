package sdk

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
)

// typeURLPrefix is the prefix of every type URL the SDK writes, and the one command payloads must
// carry.
const typeURLPrefix = "type.googleapis.com/"

// EventSourcedSession is the user-function side of one cloudstate.eventsourced.EventSourced/handle
// stream with the transport taken out: a step function from the proxy's messages to the user
// function's. The gRPC server runs one session per stream; sdktest runs one in memory; an
// embedding runtime may drive one directly.
//
// Feed Step the stream's messages in order: init, then the events after the init snapshot, then
// commands. A session is not safe for concurrent use; it handles one message at a time, which is
// what makes commands serial per entity.
type EventSourcedSession struct {
	srv      *Server
	ctx      context.Context
	log      hclog.Logger
	model    *esModel // nil until init
	entityID string
	state    proto.Message
	seq      int64
	err      error           // set by a stream failure; every later Step returns it
	cmdCtx   context.Context // StepContext's, while it runs
}

// NewEventSourcedSession returns a session for one entity stream served by s's registered
// entities. ctx is what CommandContext.Context returns to command handlers.
func (s *Server) NewEventSourcedSession(ctx context.Context) *EventSourcedSession {
	return &EventSourcedSession{srv: s, ctx: ctx, log: s.log}
}

// StepContext is Step with ctx as the context command handlers see (CommandContext.Context) for
// this message: the runtime passes the command's own context, so a handler can honour the
// caller's deadline and cancellation.
func (s *EventSourcedSession) StepContext(ctx context.Context, in *eventsourcedpb.EventSourcedStreamIn) (*eventsourcedpb.EventSourcedStreamOut, error) {
	s.cmdCtx = ctx
	defer func() { s.cmdCtx = nil }()
	return s.Step(in)
}

// Step handles one message from the proxy and returns the message to send back, if any:
//   - init and event: (nil, nil) when the state was restored or the event applied.
//   - command: a reply, which may carry a command failure in its client action; the error is nil.
//   - a message that breaks the protocol (anything before init, a second init, an unknown
//     service), or an event or snapshot the entity cannot apply: a stream failure. Step returns
//     an EventSourcedStreamOut carrying the Failure together with the error; the stream must then
//     end, and every later Step returns the same failure.
func (s *EventSourcedSession) Step(in *eventsourcedpb.EventSourcedStreamIn) (*eventsourcedpb.EventSourcedStreamOut, error) {
	if s.err != nil {
		return streamFailure(s.err), s.err
	}
	var err error
	switch m := in.GetMessage().(type) {
	case *eventsourcedpb.EventSourcedStreamIn_Init:
		if s.model != nil {
			err = fmt.Errorf("%w: a second init message on the stream of entity %q", ErrProtocol, s.entityID)
			break
		}
		err = s.init(m.Init)
	case *eventsourcedpb.EventSourcedStreamIn_Event:
		if s.model == nil {
			err = fmt.Errorf("%w: the stream's first message must be init, got an event", ErrProtocol)
			break
		}
		err = s.replay(m.Event)
	case *eventsourcedpb.EventSourcedStreamIn_Command:
		if s.model == nil {
			err = fmt.Errorf("%w: the stream's first message must be init, got a command", ErrProtocol)
			break
		}
		return &eventsourcedpb.EventSourcedStreamOut{
			Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: s.command(m.Command)},
		}, nil
	default:
		err = fmt.Errorf("%w: an EventSourcedStreamIn message without content", ErrProtocol)
	}
	if err != nil {
		s.err = err
		s.log.Error("event-sourced stream failed", "error", err)
		return streamFailure(err), err
	}
	return nil, nil
}

// EntityID returns the entity id from init, or "" before init.
func (s *EventSourcedSession) EntityID() string { return s.entityID }

// ServiceName returns the entity's service from init, or "" before init.
func (s *EventSourcedSession) ServiceName() string {
	if s.model == nil {
		return ""
	}
	return string(s.model.desc.FullName())
}

// State returns the entity's committed state: as restored and replayed, plus the events of every
// successful command. It is nil before init. The message is the session's own: do not modify it.
func (s *EventSourcedSession) State() proto.Message { return s.state }

// Sequence returns the sequence number of the entity's last event (0 without events).
func (s *EventSourcedSession) Sequence() int64 { return s.seq }

func streamFailure(err error) *eventsourcedpb.EventSourcedStreamOut {
	return &eventsourcedpb.EventSourcedStreamOut{
		Message: &eventsourcedpb.EventSourcedStreamOut_Failure{Failure: &cloudstatepb.Failure{Description: err.Error()}},
	}
}

func (s *EventSourcedSession) init(in *eventsourcedpb.EventSourcedInit) error {
	model, ok := s.srv.lookup(in.GetServiceName()).(*esModel)
	if !ok {
		return fmt.Errorf("%w: init for service %q, which no registered event-sourced entity serves (registered: %s)",
			ErrServiceNotFound, in.GetServiceName(), strings.Join(s.srv.serviceNames(EntityTypeEventSourced), ", "))
	}
	s.model = model
	s.entityID = in.GetEntityId()
	s.log = s.srv.log.With("service", in.GetServiceName(), "entity_id", s.entityID)
	snap := in.GetSnapshot()
	if snap.GetSnapshot() == nil {
		st, err := s.initialState()
		if err != nil {
			return err
		}
		s.state = st
		s.seq = snap.GetSnapshotSequence()
		return nil
	}
	st, err := s.restore(snap.GetSnapshot())
	if err != nil {
		return fmt.Errorf("restore snapshot at sequence %d: %w", snap.GetSnapshotSequence(), err)
	}
	s.state = st
	s.seq = snap.GetSnapshotSequence()
	return nil
}

func (s *EventSourcedSession) initialState() (st proto.Message, err error) {
	if s.model.initial != nil {
		err = s.guard("initial state", func() { st = s.model.initial(s.entityID) })
		if err != nil {
			return nil, err
		}
	}
	if st == nil || !st.ProtoReflect().IsValid() {
		st = s.model.stateType.New().Interface()
	}
	return st, nil
}

func (s *EventSourcedSession) restore(a *anypb.Any) (st proto.Message, err error) {
	name := protoreflect.FullName(a.MessageName())
	if sn := s.model.snapshots[name]; sn != nil {
		msg := sn.typ.New().Interface()
		if err := unmarshalAny(a, msg); err != nil {
			return nil, err
		}
		if err := s.guard("snapshot handler for "+string(name), func() { st = sn.restore(msg) }); err != nil {
			return nil, err
		}
		if st == nil || !st.ProtoReflect().IsValid() {
			return nil, fmt.Errorf("snapshot handler for %s returned a nil state: %w", name, ErrNilMessage)
		}
		return st, nil
	}
	if name != s.model.stateType.Descriptor().FullName() {
		return nil, fmt.Errorf("%w: %q is neither the state type %s nor registered with sdk.Snapshot",
			ErrUnknownSnapshot, a.GetTypeUrl(), s.model.stateType.Descriptor().FullName())
	}
	msg := s.model.stateType.New().Interface()
	if err := unmarshalAny(a, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func (s *EventSourcedSession) replay(ev *eventsourcedpb.EventSourcedEvent) error {
	seq := ev.GetSequence()
	if seq == 0 {
		seq = s.seq + 1
	}
	a := ev.GetPayload()
	if a == nil {
		return fmt.Errorf("replay event %d: %w: no payload", seq, ErrProtocol)
	}
	name := protoreflect.FullName(a.MessageName())
	h := s.model.events[name]
	if h == nil {
		return fmt.Errorf("replay event %d: %w: %q", seq, ErrNoEventHandler, a.GetTypeUrl())
	}
	msg := h.typ.New().Interface()
	if err := unmarshalAny(a, msg); err != nil {
		return fmt.Errorf("replay event %d: %w", seq, err)
	}
	var next proto.Message
	if err := s.guard("event handler for "+string(name), func() { next = h.apply(s.state, msg) }); err != nil {
		return fmt.Errorf("replay event %d: %w", seq, err)
	}
	if next == nil || !next.ProtoReflect().IsValid() {
		return fmt.Errorf("replay event %d: event handler for %s returned a nil state: %w", seq, name, ErrNilMessage)
	}
	s.state = next
	s.seq = seq
	return nil
}

// guard runs user code, turning a panic into an error wrapping ErrPanic; the stack is logged.
func (s *EventSourcedSession) guard(what string, f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in "+what, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s: %w: %v", what, ErrPanic, r)
		}
	}()
	f()
	return nil
}

// command handles one command and returns its reply. It changes the session's state only when the
// command succeeds.
func (s *EventSourcedSession) command(cmd *cloudstatepb.Command) *eventsourcedpb.EventSourcedReply {
	log := s.log.With("command", cmd.GetName(), "command_id", cmd.GetId())
	fail := func(description string, restart bool) *eventsourcedpb.EventSourcedReply {
		return &eventsourcedpb.EventSourcedReply{
			CommandId: cmd.GetId(),
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{
				Failure: &cloudstatepb.Failure{CommandId: cmd.GetId(), Description: description, Restart: restart},
			}},
		}
	}
	h := s.model.commands[protoreflect.Name(cmd.GetName())]
	if h == nil {
		log.Warn("unknown command")
		return fail(fmt.Sprintf("unknown command %q for service %s (its methods are %s)", cmd.GetName(), s.model.desc.FullName(), methodNames(s.model.desc)), false)
	}
	in := h.in.New().Interface()
	if p := cmd.GetPayload(); p != nil {
		if want := typeURLPrefix + string(h.in.Descriptor().FullName()); p.GetTypeUrl() != want {
			log.Warn("command payload has the wrong type", "type_url", p.GetTypeUrl(), "want", want)
			return fail(fmt.Sprintf("command %s expects a payload of type %q, got %q", cmd.GetName(), want, p.GetTypeUrl()), false)
		}
		if err := proto.Unmarshal(p.GetValue(), in); err != nil {
			log.Warn("command payload does not decode", "error", err)
			return fail(fmt.Sprintf("command %s: payload does not decode as %s: %v", cmd.GetName(), h.in.Descriptor().FullName(), err), false)
		}
	}

	c := &commandCore{ctx: s.handlerCtx(), model: s.model, entityID: s.entityID, cmd: cmd, seq: s.seq, base: s.state}
	out, panicked, err := s.invoke(h, c, in, log)
	if panicked {
		// The handler may have modified state it was only meant to read, or left the working
		// copy half-updated: ask the proxy to restart the entity from its journal.
		return fail(fmt.Sprintf("unexpected failure in command %s of %s; see the user function's log", cmd.GetName(), s.model.desc.FullName()), true)
	}
	if err == nil {
		err = c.err
	}
	if err == nil && c.forward != nil && out != nil && out.ProtoReflect().IsValid() {
		err = fmt.Errorf("command %s both forwarded to %s/%s and returned a reply: %w",
			cmd.GetName(), c.forward.GetServiceName(), c.forward.GetCommandName(), ErrAlreadyForwarded)
	}
	if err != nil {
		log.Debug("command failed", "error", err)
		return fail(failureDescription(err), false)
	}

	reply := &eventsourcedpb.EventSourcedReply{CommandId: cmd.GetId(), SideEffects: c.effects, Events: c.events}
	if c.forward != nil {
		reply.ClientAction = &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: c.forward}}
	} else {
		if out == nil || !out.ProtoReflect().IsValid() {
			out = h.out.New().Interface()
		}
		payload, err := marshalAny(out)
		if err != nil {
			log.Warn("reply does not encode", "error", err)
			return fail(fmt.Sprintf("command %s: the reply does not encode: %v", cmd.GetName(), err), false)
		}
		reply.ClientAction = &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: payload}}}
	}
	next, seq := s.state, s.seq
	if len(c.events) > 0 {
		next, seq = c.work, s.seq+int64(len(c.events))
		if n := s.model.snapshotEvery; n > 0 && seq/n > s.seq/n {
			snap, err := marshalAny(next)
			if err != nil {
				log.Warn("snapshot does not encode", "error", err)
				return fail(fmt.Sprintf("command %s: the state does not encode as a snapshot: %v", cmd.GetName(), err), false)
			}
			reply.Snapshot = snap
		}
	}
	s.state, s.seq = next, seq
	return reply
}

// invoke runs a command handler, recovering a panic.
func (s *EventSourcedSession) invoke(h *esCommand, c *commandCore, in proto.Message, log hclog.Logger) (out proto.Message, panicked bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("command handler panicked; the entity will be restarted", "panic", r, "stack", string(debug.Stack()))
			out, panicked, err = nil, true, fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	out, err = h.call(c, in)
	return out, false, err
}

// marshalAny packs m into an Any with a type.googleapis.com URL, deterministically.
func marshalAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

// unmarshalAny decodes a into m, whose type must be a's.
func unmarshalAny(a *anypb.Any, m proto.Message) error {
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	return nil
}

// handlerCtx is the context of the command being stepped: StepContext's, else the session's.
func (s *EventSourcedSession) handlerCtx() context.Context {
	if s.cmdCtx != nil {
		return s.cmdCtx
	}
	return s.ctx
}
