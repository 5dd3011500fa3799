package sdktest

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	"github.com/kstatehq/kstate/sdk"
)

// WithState starts a value entity with a stored value, as a proxy does for an entity that has
// one; msg is normally of the entity's state type. Without it the entity starts with no stored
// value, from its initial state.
func WithState(msg proto.Message) Option { return func(c *config) { c.state = msg } }

// Value runs one value entity instance in memory, playing the proxy: it keeps the value the
// entity stores (Stored), activates the entity with it, and sends commands with ids from 1. It
// is not safe for concurrent use.
type Value[S proto.Message] struct {
	base
	srv      *sdk.Server
	ctx      context.Context
	service  string
	entityID string
	sess     *sdk.ValueSession
	nextID   int64
	stored   *anypb.Any // the stored value; nil when there is none
}

// ValueResult is what a successful value-entity command produced.
type ValueResult[S proto.Message] struct {
	// CommandID is the id the harness gave the command; ids start at 1 per harness.
	CommandID int64
	// Reply is the reply message, or nil when the command forwarded.
	Reply proto.Message
	// Forward is the forward, or nil when the command replied.
	Forward *Forward
	// SideEffects are the command's side effects, in order.
	SideEffects []SideEffect
	// Updated is the new value the command stored, or nil when it stored none.
	Updated S
	// Deleted reports that the command deleted the stored value.
	Deleted bool
}

// NewValue registers e the way sdk.Server.Register does (failing the test on a definition error)
// and activates the entity entityID: init with the WithState value, or with none.
func NewValue[S proto.Message](t TB, e *sdk.ValueEntity[S], entityID string, opts ...Option) *Value[S] {
	if t != nil {
		t.Helper()
	}
	cfg := config{ctx: context.Background()}
	for _, o := range opts {
		o(&cfg)
	}
	h := &Value[S]{base: base{t: t}, ctx: cfg.ctx, entityID: entityID}
	switch {
	case e == nil:
		h.fatalf("sdktest: nil entity")
		return h
	case cfg.snapshot != nil || len(cfg.events) > 0:
		h.fatalf("sdktest: WithSnapshot and WithEvents are for event-sourced entities; start a value entity from WithState")
		return h
	}
	h.service = e.ServiceName()
	h.srv = sdk.NewServer(sdk.WithLogger(cfg.log))
	if err := h.srv.Register(e); err != nil {
		h.fatalf("sdktest: %v", err)
		return h
	}
	if cfg.state != nil {
		a, err := anypb.New(cfg.state)
		if err != nil {
			h.fatalf("sdktest: WithState: %v", err)
			return h
		}
		h.stored = a
	}
	h.sess = h.activate()
	return h
}

// activate opens a new session with the stored value.
func (h *Value[S]) activate() *sdk.ValueSession {
	if h.t != nil {
		h.t.Helper()
	}
	sess := h.srv.NewValueSession(h.ctx)
	init := &valueentitypb.ValueEntityInit{ServiceName: h.service, EntityId: h.entityID, State: &valueentitypb.ValueEntityInitState{Value: h.stored}}
	if _, err := sess.Step(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{Init: init}}); err != nil {
		h.fatalf("sdktest: init %s %q: %v", h.service, h.entityID, err)
	}
	return sess
}

// Command sends a command to the entity and returns what it produced. A command failure is
// returned as a *Failure error (with a nil result); if the failure asks for a restart, the
// harness restarts the entity from its stored value first, as a proxy would. A reply that breaks
// the protocol, or a stream failure, fails the test.
func (h *Value[S]) Command(name string, in proto.Message, opts ...CommandOption) (*ValueResult[S], error) {
	if h.t != nil {
		h.t.Helper()
	}
	if in == nil {
		h.fatalf("sdktest: command %s: nil input message", name)
		return nil, errors.New("sdktest: nil input message")
	}
	payload, err := anypb.New(in)
	if err != nil {
		h.fatalf("sdktest: command %s: %v", name, err)
		return nil, err
	}
	h.nextID++
	cmd := &cloudstatepb.Command{EntityId: h.entityID, Id: h.nextID, Name: name, Payload: payload}
	for _, o := range opts {
		o(cmd)
	}
	out, err := h.sess.Step(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{Command: cmd}})
	if err != nil {
		h.fatalf("sdktest: command %s: stream failure: %v", name, err)
		return nil, err
	}
	reply := out.GetReply()
	if reply == nil {
		h.fatalf("sdktest: command %s: no reply, got %v", name, out)
		return nil, errors.New("sdktest: no reply")
	}
	if reply.GetCommandId() != cmd.GetId() {
		h.fatalf("sdktest: command %s: reply for command %d, want %d", name, reply.GetCommandId(), cmd.GetId())
	}
	if f := reply.GetClientAction().GetFailure(); f != nil {
		if reply.GetStateAction() != nil || len(reply.GetSideEffects()) > 0 {
			h.fatalf("sdktest: command %s: a failure reply carries a state action or side effects", name)
		}
		fail := &Failure{CommandID: f.GetCommandId(), Description: f.GetDescription(), Restart: f.GetRestart()}
		if fail.Restart {
			h.sess = h.activate()
		}
		return nil, fail
	}
	res := &ValueResult[S]{CommandID: cmd.GetId(), SideEffects: h.sideEffects(reply.GetSideEffects())}
	switch a := reply.GetClientAction().GetAction().(type) {
	case *cloudstatepb.ClientAction_Reply:
		res.Reply = h.decode(a.Reply.GetPayload())
	case *cloudstatepb.ClientAction_Forward:
		res.Forward = h.forward(a.Forward)
	default:
		h.fatalf("sdktest: command %s: reply without a client action", name)
	}
	switch a := reply.GetStateAction().GetAction().(type) {
	case *valueentitypb.ValueEntityAction_Update:
		v, ok := h.decode(a.Update.GetValue()).(S)
		if !ok {
			h.fatalf("sdktest: command %s: stored a %s, not the state type", name, a.Update.GetValue().GetTypeUrl())
		}
		h.stored, res.Updated = a.Update.GetValue(), v
	case *valueentitypb.ValueEntityAction_Delete:
		h.stored, res.Deleted = nil, true
	case nil:
		if reply.GetStateAction() != nil {
			h.fatalf("sdktest: command %s: an empty state action", name)
		}
	}
	return res, nil
}

// State returns a copy of the entity's current state: its stored value, or its initial state
// when it has none.
func (h *Value[S]) State() S {
	return proto.Clone(h.sess.State()).(S)
}

// Stored returns the value the proxy stores for the entity, decoded, and whether there is one
// (there is none for a new entity, or after a delete).
func (h *Value[S]) Stored() (S, bool) {
	var zero S
	if h.stored == nil {
		return zero, false
	}
	v, ok := h.decode(h.stored).(S)
	if !ok {
		h.fatalf("sdktest: the stored value is a %s, not the state type", h.stored.GetTypeUrl())
		return zero, false
	}
	return v, true
}

// Restart passivates the entity and activates it again from its stored value, as a proxy does.
// It fails the test unless the rebuilt state equals the state before the restart, which also
// checks that the initial state is a function of the entity id alone.
func (h *Value[S]) Restart() {
	if h.t != nil {
		h.t.Helper()
	}
	before := h.sess.State()
	h.sess = h.activate()
	if !proto.Equal(h.sess.State(), before) {
		h.fatalf("sdktest: restarting from the stored value gives\n  %v\nbut the entity's state was\n  %v", h.sess.State(), before)
	}
}

// base holds what every harness needs: the test, and decoding of the messages the user function
// sends.
type base struct {
	t TB
}

func (b *base) fatalf(format string, args ...any) {
	if b.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	b.t.Helper()
	b.t.Fatalf(format, args...)
}

func (b *base) decode(a *anypb.Any) proto.Message {
	if b.t != nil {
		b.t.Helper()
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		b.fatalf("sdktest: decode %s: %v", a.GetTypeUrl(), err)
	}
	return m
}

func (b *base) forward(f *cloudstatepb.Forward) *Forward {
	return &Forward{Service: f.GetServiceName(), Method: f.GetCommandName(), Message: b.decode(f.GetPayload())}
}

func (b *base) sideEffects(ses []*cloudstatepb.SideEffect) []SideEffect {
	var out []SideEffect
	for _, se := range ses {
		out = append(out, SideEffect{
			Service: se.GetServiceName(), Method: se.GetCommandName(), Message: b.decode(se.GetPayload()), Synchronous: se.GetSynchronous(),
		})
	}
	return out
}
