package sdk

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// ValueEntity is a value (key-value) entity definition with state type S, a generated protobuf
// message pointer type such as *domainpb.Cart. A value entity's state is stored whole: each
// command may replace it (ValueContext.Update) or delete it (ValueContext.Delete), and the proxy
// stores the new value before it replies. Create one with NewValue, configure it with the
// chainable methods, and add a command handler per method with ValueCommand.
//
// As with EventSourcedEntity, a definition is validated when it is registered (Server.Register,
// sdktest.NewValue), registration takes a copy, and a definition must not be changed
// concurrently with its registration.
type ValueEntity[S proto.Message] struct {
	serviceName   string
	stateType     protoreflect.MessageType
	initial       func(entityID string) S
	persistenceID string
	passivation   time.Duration
	commands      []valueCommand
	errs          []error
}

// valueCommand is a value entity's command handler with its types erased.
type valueCommand struct {
	method  string
	in, out protoreflect.MessageType
	call    func(c *valueCore, in proto.Message) (proto.Message, error)
}

// NewValue starts the definition of a value entity that implements the gRPC service serviceName
// (a full name, "package.Service", whose generated Go package is linked into the program).
//
// initial returns the state of an entity that has no stored value: a new entity, or one whose
// value was deleted. It may be nil, which means an empty S. It must return a fresh message each
// time.
//
// Defaults: persistence id = the service's simple name ("ShoppingCart"), no passivation timeout
// (the proxy's default applies).
func NewValue[S proto.Message](serviceName string, initial func(entityID string) S) *ValueEntity[S] {
	e := &ValueEntity[S]{serviceName: serviceName, initial: initial}
	typ, err := messageType[S]()
	if err != nil {
		e.errs = append(e.errs, &DefinitionError{Service: serviceName, Err: fmt.Errorf("state type: %w", err)})
	}
	e.stateType = typ
	return e
}

// ServiceName returns the full name of the entity's gRPC service.
func (e *ValueEntity[S]) ServiceName() string { return e.serviceName }

// EntityType returns EntityTypeValue.
func (e *ValueEntity[S]) EntityType() string { return EntityTypeValue }

// PersistenceID sets the name under which the entity's values are stored (kstate derives its
// Kafka topic name from it). Keep it stable across deployments. Empty means the service's simple
// name.
func (e *ValueEntity[S]) PersistenceID(id string) *ValueEntity[S] {
	e.persistenceID = id
	return e
}

// Passivation sets how long an entity may stay idle before the proxy passivates it (closes its
// stream and frees its state). d <= 0 leaves the choice to the proxy (Cloudstate: 30s). It is
// sent in discovery rounded down to milliseconds.
func (e *ValueEntity[S]) Passivation(d time.Duration) *ValueEntity[S] {
	e.passivation = max(d, 0)
	return e
}

// ValueCommand binds a command handler of a value entity to method, a method of e's service by
// simple name ("AddItem"). In and Out must be the method's input and output types; Register
// checks them. It is the value-entity counterpart of Command.
//
// The handler runs once per command, one command at a time per entity. It reads the state with
// ctx.State(), and changes it with ctx.Update or ctx.Delete. Its outcomes:
//   - (reply, nil): the state change, if the handler made one, is stored, then the client
//     receives reply. A nil reply sends an empty Out message.
//   - ctx.Forward was called and (nil, nil) is returned: the state change is stored and the
//     command is forwarded; the client receives the target's reply.
//   - a non-nil error: a command failure. The client receives a failure whose description is
//     err.Error() (use ctx.Fail for a formatted *CommandError). The command's state change, side
//     effects and forward are dropped; the entity keeps the state it had before the command.
//   - a panic: a command failure as well, with a generic description; the panic and its stack
//     are logged, and the failure asks the proxy to restart the entity (Failure.restart=true),
//     which then starts again from the stored value.
func ValueCommand[S, In, Out proto.Message](e *ValueEntity[S], method string, handler func(ctx *ValueContext[S], in In) (Out, error)) {
	in, errIn := messageType[In]()
	out, errOut := messageType[Out]()
	switch {
	case errIn != nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Method: method, Err: fmt.Errorf("input type: %w", errIn)})
		return
	case errOut != nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Method: method, Err: fmt.Errorf("output type: %w", errOut)})
		return
	case handler == nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Method: method, Err: fmt.Errorf("%w: nil command handler", ErrInvalidType)})
		return
	}
	e.commands = append(e.commands, valueCommand{
		method: method,
		in:     in,
		out:    out,
		call: func(c *valueCore, msg proto.Message) (proto.Message, error) {
			reply, err := handler(&ValueContext[S]{c: c}, msg.(In))
			if err != nil {
				return nil, err
			}
			return reply, nil
		},
	})
}

// compile implements Entity.
func (e *ValueEntity[S]) compile() (entityModel, error) {
	errs := slices.Clone(e.errs)
	defErr := func(method string, err error) {
		errs = append(errs, &DefinitionError{Service: e.serviceName, Method: method, Err: err})
	}
	sd, err := findService(e.serviceName)
	if err != nil {
		defErr("", err)
		return nil, joinErrors(errs)
	}
	m := &valueModel{
		desc:          sd,
		stateType:     e.stateType,
		persistenceID: e.persistenceID,
		passivation:   e.passivation,
		commands:      make(map[protoreflect.Name]*valueCommand, len(e.commands)),
	}
	if m.persistenceID == "" {
		m.persistenceID = string(sd.Name())
	}
	if e.initial != nil {
		initial := e.initial
		m.initial = func(id string) proto.Message { return initial(id) }
	}
	for i := range e.commands {
		c := &e.commands[i]
		md := sd.Methods().ByName(protoreflect.Name(c.method))
		switch {
		case md == nil:
			defErr(c.method, fmt.Errorf("%w: the service's methods are %s", ErrMethodNotFound, methodNames(sd)))
			continue
		case md.IsStreamingClient() || md.IsStreamingServer():
			defErr(c.method, fmt.Errorf("%w (value entities serve unary methods only; serve streams from an action)", ErrStreamingMethod))
		case m.commands[md.Name()] != nil:
			defErr(c.method, fmt.Errorf("%w: command handler", ErrDuplicate))
		}
		if want, got := md.Input().FullName(), c.in.Descriptor().FullName(); want != got {
			defErr(c.method, fmt.Errorf("%w: the method's input type is %s, the handler takes %s", ErrTypeMismatch, want, got))
		}
		if want, got := md.Output().FullName(), c.out.Descriptor().FullName(); want != got {
			defErr(c.method, fmt.Errorf("%w: the method's output type is %s, the handler returns %s", ErrTypeMismatch, want, got))
		}
		m.commands[md.Name()] = c
	}
	for i := range sd.Methods().Len() {
		md := sd.Methods().Get(i)
		if m.commands[md.Name()] == nil {
			defErr(string(md.Name()), fmt.Errorf("%w: add sdk.ValueCommand(entity, %q, func(*sdk.ValueContext[S], *%s) (*%s, error))",
				ErrMissingHandler, md.Name(), goTypeHint(md.Input()), goTypeHint(md.Output())))
		}
	}
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return m, nil
}

// valueModel is a validated value entity definition; it is never modified after compile.
type valueModel struct {
	desc          protoreflect.ServiceDescriptor
	stateType     protoreflect.MessageType
	initial       func(entityID string) proto.Message // nil: an empty state
	persistenceID string
	passivation   time.Duration
	commands      map[protoreflect.Name]*valueCommand
}

// spec implements entityModel.
func (m *valueModel) spec() *cloudstatepb.Entity {
	return entitySpec(EntityTypeValue, m.desc, m.persistenceID, m.passivation)
}

// files implements entityModel.
func (m *valueModel) files() []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{m.desc.ParentFile(), m.stateType.Descriptor().ParentFile()}
}

// entitySpec returns a discovery entry.
func entitySpec(entityType string, desc protoreflect.ServiceDescriptor, persistenceID string, passivation time.Duration) *cloudstatepb.Entity {
	ent := &cloudstatepb.Entity{
		EntityType:    entityType,
		ServiceName:   string(desc.FullName()),
		PersistenceId: persistenceID,
	}
	if passivation > 0 {
		ent.PassivationStrategy = &cloudstatepb.EntityPassivationStrategy{
			Strategy: &cloudstatepb.EntityPassivationStrategy_Timeout{
				Timeout: &cloudstatepb.TimeoutPassivationStrategy{Timeout: passivation.Milliseconds()},
			},
		}
	}
	return ent
}

// ValueContext is what a command handler of a value entity with state type S may do. It is valid
// only during the handler call it was passed to, and must not be used from other goroutines.
type ValueContext[S proto.Message] struct {
	c *valueCore
}

// Context returns the context of the entity's stream: it is cancelled when the proxy closes the
// stream or the server stops. Pass it to calls the handler makes.
func (ctx *ValueContext[S]) Context() context.Context { return ctx.c.ctx }

// EntityID returns the id of the entity the command is for.
func (ctx *ValueContext[S]) EntityID() string { return ctx.c.entityID }

// CommandName returns the name of the method being handled, e.g. "AddItem".
func (ctx *ValueContext[S]) CommandName() string { return ctx.c.cmd.GetName() }

// CommandID returns the proxy's id of the command; ids start at 1 on each entity stream.
func (ctx *ValueContext[S]) CommandID() int64 { return ctx.c.cmd.GetId() }

// Metadata returns the command's metadata (for example HTTP or gRPC headers the proxy passes on).
func (ctx *ValueContext[S]) Metadata() Metadata {
	return Metadata{entries: ctx.c.cmd.GetMetadata().GetEntries()}
}

// State returns the entity's current state: the stored value, or the initial state when there
// is none (a new or deleted entity). Within a command it reflects Update and Delete calls made
// earlier in the command.
//
// The message is the command's own copy, so the handler may modify it, typically to pass it to
// Update; changes are kept only if Update is called and the command succeeds. Every call in one
// command returns the same message until the next Update or Delete.
func (ctx *ValueContext[S]) State() S { return ctx.c.current().(S) }

// Update replaces the entity's state with state, which State then returns. When the command
// succeeds, the proxy stores the last value passed to Update (as it is when the handler
// returns) before the reply is sent; if the command fails, nothing is stored. The entity keeps
// state as its in-memory value afterwards, so do not modify it after the handler returns.
//
// Update returns an error wrapping ErrNilMessage for a nil state; such an error also makes the
// command fail, whatever the handler returns. It returns nil otherwise, so a handler may end
// with `return reply, ctx.Update(s)`.
func (ctx *ValueContext[S]) Update(state S) error { return ctx.c.update(state) }

// Delete deletes the entity's state: when the command succeeds, the proxy deletes the stored
// value, and the entity starts again from the initial state. Within the command, State returns
// a fresh initial state after Delete, and a later Update replaces the delete.
func (ctx *ValueContext[S]) Delete() { ctx.c.delete() }

// Forward makes the command's outcome a forward to method of service (full service name,
// simple method name) with msg as input: the client receives the target's reply. The handler
// should then return a nil reply (returning a reply as well is a command failure). The
// command's state change is stored before the forward happens. Checks and errors are as for
// CommandContext.Forward.
func (ctx *ValueContext[S]) Forward(service, method string, msg proto.Message) error {
	return ctx.c.forwardTo(service, method, msg)
}

// SideEffect asks the proxy to send msg to method of service after the command's state change is
// stored. The proxy awaits a synchronous side effect before it sends the reply; it does not
// await an asynchronous one. The side effects of a failed command are dropped. Checks and errors
// are as for Forward.
func (ctx *ValueContext[S]) SideEffect(service, method string, msg proto.Message, synchronous bool) error {
	return ctx.c.sideEffect(service, method, msg, synchronous)
}

// Fail makes the command fail with a description formatted like fmt.Sprintf, and returns the
// *CommandError. The command fails even if the handler goes on to return a reply.
func (ctx *ValueContext[S]) Fail(format string, args ...any) error {
	return ctx.c.fail(format, args...)
}

// valueAction is what a command did to a value entity's state.
type valueAction int

const (
	valueKeep valueAction = iota
	valueUpdate
	valueDelete
)

// valueCore is the type-erased state of one value-entity command being handled.
type valueCore struct {
	effectsCore
	ctx      context.Context
	sess     *ValueSession
	entityID string
	cmd      *cloudstatepb.Command
	base     proto.Message // the committed state; never modified during a command
	work     proto.Message // what State returns: a copy of base, the Update value, or a fresh initial state
	action   valueAction
}

func (c *valueCore) current() proto.Message {
	if c.work == nil {
		if c.action == valueDelete {
			c.work = c.sess.newInitial()
		} else {
			c.work = proto.Clone(c.base)
		}
	}
	return c.work
}

func (c *valueCore) update(state proto.Message) error {
	if state == nil || !state.ProtoReflect().IsValid() {
		err := fmt.Errorf("update: %w", ErrNilMessage)
		c.setErr(err)
		return err
	}
	c.work, c.action = state, valueUpdate
	return nil
}

func (c *valueCore) delete() {
	c.work, c.action = nil, valueDelete
}
