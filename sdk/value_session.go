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
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
)

// ValueSession is the user-function side of one cloudstate.valueentity.ValueEntity/handle stream
// with the transport taken out: a step function from the proxy's messages to the user
// function's. The gRPC server runs one session per stream; sdktest runs one in memory; an
// embedding runtime may drive one directly.
//
// Feed Step the stream's messages in order: init (with the stored value, if any), then commands.
// A session is not safe for concurrent use; it handles one message at a time, which is what makes
// commands serial per entity.
type ValueSession struct {
	srv      *Server
	ctx      context.Context
	log      hclog.Logger
	model    *valueModel // nil until init
	entityID string
	state    proto.Message
	err      error           // set by a stream failure; every later Step returns it
	cmdCtx   context.Context // StepContext's, while it runs
}

// NewValueSession returns a session for one value entity stream served by s's registered
// entities. ctx is what ValueContext.Context returns to command handlers.
func (s *Server) NewValueSession(ctx context.Context) *ValueSession {
	return &ValueSession{srv: s, ctx: ctx, log: s.log}
}

// StepContext is Step with ctx as the context command handlers see (CommandContext.Context) for
// this message: the runtime passes the command's own context, so a handler can honour the
// caller's deadline and cancellation.
func (s *ValueSession) StepContext(ctx context.Context, in *valueentitypb.ValueEntityStreamIn) (*valueentitypb.ValueEntityStreamOut, error) {
	s.cmdCtx = ctx
	defer func() { s.cmdCtx = nil }()
	return s.Step(in)
}

// Step handles one message from the proxy and returns the message to send back, if any:
//   - init: (nil, nil) when the state was restored. A missing init state or state value means
//     the entity has no stored value and starts from its initial state.
//   - command: a reply, which may carry a command failure in its client action; the error is nil.
//     The reply carries a state action only when the command changed the state.
//   - a message that breaks the protocol (a command before init, a second init, an unknown
//     service), or a stored value of another type than the state type: a stream failure. Step
//     returns a ValueEntityStreamOut carrying the Failure together with the error; the stream must
//     then end, and every later Step returns the same failure.
func (s *ValueSession) Step(in *valueentitypb.ValueEntityStreamIn) (*valueentitypb.ValueEntityStreamOut, error) {
	if s.err != nil {
		return valueStreamFailure(s.err), s.err
	}
	var err error
	switch m := in.GetMessage().(type) {
	case *valueentitypb.ValueEntityStreamIn_Init:
		if s.model != nil {
			err = fmt.Errorf("%w: a second init message on the stream of entity %q", ErrProtocol, s.entityID)
			break
		}
		err = s.init(m.Init)
	case *valueentitypb.ValueEntityStreamIn_Command:
		if s.model == nil {
			err = fmt.Errorf("%w: the stream's first message must be init, got a command", ErrProtocol)
			break
		}
		return &valueentitypb.ValueEntityStreamOut{
			Message: &valueentitypb.ValueEntityStreamOut_Reply{Reply: s.command(m.Command)},
		}, nil
	default:
		err = fmt.Errorf("%w: a ValueEntityStreamIn message without content", ErrProtocol)
	}
	if err != nil {
		s.err = err
		s.log.Error("value entity stream failed", "error", err)
		return valueStreamFailure(err), err
	}
	return nil, nil
}

// EntityID returns the entity id from init, or "" before init.
func (s *ValueSession) EntityID() string { return s.entityID }

// ServiceName returns the entity's service from init, or "" before init.
func (s *ValueSession) ServiceName() string {
	if s.model == nil {
		return ""
	}
	return string(s.model.desc.FullName())
}

// State returns the entity's committed state: the value from init (or the initial state), then
// the state after every successful command that changed it. It is nil before init. The message is
// the session's own: do not modify it.
func (s *ValueSession) State() proto.Message { return s.state }

func valueStreamFailure(err error) *valueentitypb.ValueEntityStreamOut {
	return &valueentitypb.ValueEntityStreamOut{
		Message: &valueentitypb.ValueEntityStreamOut_Failure{Failure: &cloudstatepb.Failure{Description: err.Error()}},
	}
}

func (s *ValueSession) init(in *valueentitypb.ValueEntityInit) error {
	model, ok := s.srv.lookup(in.GetServiceName()).(*valueModel)
	if !ok {
		return fmt.Errorf("%w: init for service %q, which no registered value entity serves (registered: %s)",
			ErrServiceNotFound, in.GetServiceName(), strings.Join(s.srv.serviceNames(EntityTypeValue), ", "))
	}
	s.model = model
	s.entityID = in.GetEntityId()
	s.log = s.srv.log.With("service", in.GetServiceName(), "entity_id", s.entityID)
	a := in.GetState().GetValue()
	if a == nil || (a.GetTypeUrl() == "" && len(a.GetValue()) == 0) {
		return guard(s.log, "initial state", func() { s.state = s.newInitial() })
	}
	if name, want := protoreflect.FullName(a.MessageName()), model.stateType.Descriptor().FullName(); name != want {
		return fmt.Errorf("%w: the stored value is a %q, the entity's state type is %s", ErrTypeMismatch, a.GetTypeUrl(), want)
	}
	st := model.stateType.New().Interface()
	if err := unmarshalAny(a, st); err != nil {
		return fmt.Errorf("restore stored value: %w", err)
	}
	s.state = st
	return nil
}

// newInitial returns a fresh initial state; it panics if the entity's initial function does.
func (s *ValueSession) newInitial() proto.Message {
	var st proto.Message
	if s.model.initial != nil {
		st = s.model.initial(s.entityID)
	}
	if st == nil || !st.ProtoReflect().IsValid() {
		st = s.model.stateType.New().Interface()
	}
	return st
}

// command handles one command and returns its reply. It changes the session's state only when the
// command succeeds.
func (s *ValueSession) command(cmd *cloudstatepb.Command) *valueentitypb.ValueEntityReply {
	log := s.log.With("command", cmd.GetName(), "command_id", cmd.GetId())
	fail := func(description string, restart bool) *valueentitypb.ValueEntityReply {
		return &valueentitypb.ValueEntityReply{
			CommandId:    cmd.GetId(),
			ClientAction: failureAction(cmd.GetId(), description, restart),
		}
	}
	h := s.model.commands[protoreflect.Name(cmd.GetName())]
	if h == nil {
		log.Warn("unknown command")
		return fail(fmt.Sprintf("unknown command %q for service %s (its methods are %s)", cmd.GetName(), s.model.desc.FullName(), methodNames(s.model.desc)), false)
	}
	in, err := decodeInput(cmd.GetName(), cmd.GetPayload(), h.in)
	if err != nil {
		log.Warn("bad command payload", "error", err)
		return fail(err.Error(), false)
	}

	c := &valueCore{ctx: s.handlerCtx(), sess: s, entityID: s.entityID, cmd: cmd, base: s.state}
	var out proto.Message
	if perr := guard(log, "command handler", func() { out, err = h.call(c, in) }); perr != nil {
		// The handler may have modified state it was only meant to read: ask the proxy to
		// restart the entity from its stored value.
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

	reply := &valueentitypb.ValueEntityReply{CommandId: cmd.GetId(), SideEffects: c.effects}
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
	next := s.state
	switch c.action {
	case valueUpdate:
		value, err := marshalAny(c.work)
		if err != nil {
			log.Warn("state does not encode", "error", err)
			return fail(fmt.Sprintf("command %s: the new state does not encode: %v", cmd.GetName(), err), false)
		}
		reply.StateAction = &valueentitypb.ValueEntityAction{Action: &valueentitypb.ValueEntityAction_Update{
			Update: &valueentitypb.ValueEntityUpdate{Value: value},
		}}
		next = c.work
	case valueDelete:
		if err := guard(log, "initial state", func() { next = s.newInitial() }); err != nil {
			return fail(fmt.Sprintf("unexpected failure in command %s of %s; see the user function's log", cmd.GetName(), s.model.desc.FullName()), true)
		}
		reply.StateAction = &valueentitypb.ValueEntityAction{Action: &valueentitypb.ValueEntityAction_Delete{
			Delete: &valueentitypb.ValueEntityDelete{},
		}}
	}
	s.state = next
	return reply
}

// failureAction returns a client action carrying a command failure.
func failureAction(commandID int64, description string, restart bool) *cloudstatepb.ClientAction {
	return &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{
		Failure: &cloudstatepb.Failure{CommandId: commandID, Description: description, Restart: restart},
	}}
}

// decodeInput decodes a command payload that must be of type typ; a nil payload is an empty
// message. The error describes a payload of another type, or one that does not decode, in words
// for the client.
func decodeInput(command string, p *anypb.Any, typ protoreflect.MessageType) (proto.Message, error) {
	in := typ.New().Interface()
	if p == nil {
		return in, nil
	}
	if want := typeURLPrefix + string(typ.Descriptor().FullName()); p.GetTypeUrl() != want {
		return nil, fmt.Errorf("command %s expects a payload of type %q, got %q: %w", command, want, p.GetTypeUrl(), ErrTypeMismatch)
	}
	if err := proto.Unmarshal(p.GetValue(), in); err != nil {
		return nil, fmt.Errorf("command %s: payload does not decode as %s: %v", command, typ.Descriptor().FullName(), err)
	}
	return in, nil
}

// guard runs user code, turning a panic into an error wrapping ErrPanic; the panic and its stack
// are logged.
func guard(log hclog.Logger, what string, f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic in "+what, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s: %w: %v", what, ErrPanic, r)
		}
	}()
	f()
	return nil
}

// handlerCtx is the context of the command being stepped: StepContext's, else the session's.
func (s *ValueSession) handlerCtx() context.Context {
	if s.cmdCtx != nil {
		return s.cmdCtx
	}
	return s.ctx
}
