package sdk

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// The Cloudstate protocol services, one per entity kind. They are the values of
// Entity.EntityType and of cloudstate.Entity.entity_type in discovery.
const (
	// EntityTypeEventSourced is the protocol service for event-sourced entities.
	EntityTypeEventSourced = "cloudstate.eventsourced.EventSourced"
	// EntityTypeValue is the protocol service for value (key-value) entities.
	EntityTypeValue = "cloudstate.valueentity.ValueEntity"
	// EntityTypeCRDT is the protocol service for CRDT entities.
	EntityTypeCRDT = "cloudstate.crdt.Crdt"
	// EntityTypeAction is the protocol service for stateless actions.
	EntityTypeAction = "cloudstate.action.ActionProtocol"
)

// DefaultSnapshotEvery is the snapshot interval of a new event-sourced entity, in events; it is
// Cloudstate's default.
const DefaultSnapshotEvery = 100

// Entity is an entity definition a Server can serve: one gRPC service from a .proto file, bound
// to handlers. The set of implementations is closed (the interface has an unexported method); each
// kind has a constructor: NewEventSourced for event-sourced entities (*EventSourcedEntity),
// NewValue for value entities (*ValueEntity), NewCRDT for CRDT entities (*CRDTEntity) and
// NewAction for stateless actions (*Action, which is an Entity in this sense although it has no
// state and no key).
type Entity interface {
	// ServiceName returns the full name of the gRPC service the entity implements,
	// e.g. "com.example.shoppingcart.ShoppingCart".
	ServiceName() string
	// EntityType returns the Cloudstate protocol service that serves this kind of entity, one of
	// the EntityType* constants.
	EntityType() string

	// compile validates the definition and returns an immutable copy for serving.
	compile() (entityModel, error)
}

// entityModel is a validated, immutable entity definition held by a Server.
type entityModel interface {
	// spec is the entity's discovery entry.
	spec() *cloudstatepb.Entity
	// files lists the files discovery sends: the service's file first, then the files of the
	// entity's state, event and snapshot types. Their imports are added by the caller.
	files() []protoreflect.FileDescriptor
}

// EventSourcedEntity is an event-sourced entity definition with state type S, a generated
// protobuf message pointer type such as *domainpb.Cart. Create one with NewEventSourced, configure
// it with the chainable methods, and add handlers with the package functions Command, Event and
// Snapshot (Go methods cannot have type parameters, so these are functions that infer them).
//
// A definition is validated when it is registered (Server.Register, sdktest.NewEventSourced);
// registration takes a copy, so changing a definition afterwards does not affect a running
// server. A definition must not be changed concurrently with its registration.
type EventSourcedEntity[S proto.Message] struct {
	serviceName   string
	stateType     protoreflect.MessageType
	initial       func(entityID string) S
	persistenceID string
	snapshotEvery int
	passivation   time.Duration
	commands      []esCommand
	events        []esEvent
	snapshots     []esSnapshot
	errs          []error
}

// esCommand is a command handler with its types erased.
type esCommand struct {
	method  string
	in, out protoreflect.MessageType
	call    func(c *commandCore, in proto.Message) (proto.Message, error)
}

// esEvent is an event handler with its types erased.
type esEvent struct {
	typ   protoreflect.MessageType
	apply func(state, event proto.Message) proto.Message
}

// esSnapshot is a snapshot restorer with its types erased.
type esSnapshot struct {
	typ     protoreflect.MessageType
	restore func(snapshot proto.Message) proto.Message
}

// NewEventSourced starts the definition of an event-sourced entity that implements the gRPC
// service serviceName (a full name, "package.Service"; the service's generated Go package must be
// linked into the program so its descriptor is in protoregistry.GlobalFiles).
//
// initial returns the state of an entity that has no events and no snapshot yet; it may be nil,
// which means an empty S. It must return a fresh message each time.
//
// Defaults: persistence id = the service's simple name ("ShoppingCart"), snapshot every
// DefaultSnapshotEvery events, no passivation timeout (the proxy's default applies).
func NewEventSourced[S proto.Message](serviceName string, initial func(entityID string) S) *EventSourcedEntity[S] {
	e := &EventSourcedEntity[S]{
		serviceName:   serviceName,
		initial:       initial,
		snapshotEvery: DefaultSnapshotEvery,
	}
	typ, err := messageType[S]()
	if err != nil {
		e.errs = append(e.errs, &DefinitionError{Service: serviceName, Err: fmt.Errorf("state type: %w", err)})
	}
	e.stateType = typ
	return e
}

// ServiceName returns the full name of the entity's gRPC service.
func (e *EventSourcedEntity[S]) ServiceName() string { return e.serviceName }

// EntityType returns EntityTypeEventSourced.
func (e *EventSourcedEntity[S]) EntityType() string { return EntityTypeEventSourced }

// PersistenceID sets the name under which the entity's events and snapshots are stored (kstate
// derives its Kafka topic names from it). Entities that share a persistence id share a journal,
// so keep it stable across deployments. Empty means the service's simple name.
func (e *EventSourcedEntity[S]) PersistenceID(id string) *EventSourcedEntity[S] {
	e.persistenceID = id
	return e
}

// SnapshotEvery makes the entity attach a snapshot of its state to the reply whose events take
// the entity's sequence number across a multiple of n. n <= 0 disables snapshots.
func (e *EventSourcedEntity[S]) SnapshotEvery(n int) *EventSourcedEntity[S] {
	e.snapshotEvery = max(n, 0)
	return e
}

// Passivation sets how long an entity may stay idle before the proxy passivates it (closes its
// stream and frees its state). d <= 0 leaves the choice to the proxy (Cloudstate: 30s). It is
// sent in discovery rounded down to milliseconds.
func (e *EventSourcedEntity[S]) Passivation(d time.Duration) *EventSourcedEntity[S] {
	e.passivation = max(d, 0)
	return e
}

// Command binds a command handler to method, a method of e's service by simple name ("AddItem").
// In and Out must be the method's input and output types; Register checks them.
//
// The handler runs once per command, one command at a time per entity. It reads the state with
// ctx.State(), emits events with ctx.Emit, and returns the reply. Its outcomes:
//   - (reply, nil): the events are persisted, then the client receives reply. A nil reply sends
//     an empty Out message.
//   - ctx.Forward was called and (nil, nil) is returned: the events are persisted and the
//     command is forwarded; the client receives the target's reply.
//   - a non-nil error: a command failure. The client receives a failure whose description is
//     err.Error() (use ctx.Fail for a formatted *CommandError). The command's events, side
//     effects and forward are dropped; the entity keeps the state it had before the command.
//   - a panic: a command failure as well, with a generic description; the panic and its stack
//     are logged, and the failure asks the proxy to restart the entity (Failure.restart=true)
//     because the handler may have corrupted state shared with it.
func Command[S, In, Out proto.Message](e *EventSourcedEntity[S], method string, handler func(ctx *CommandContext[S], in In) (Out, error)) {
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
	e.commands = append(e.commands, esCommand{
		method: method,
		in:     in,
		out:    out,
		call: func(c *commandCore, msg proto.Message) (proto.Message, error) {
			reply, err := handler(&CommandContext[S]{c: c}, msg.(In))
			if err != nil {
				return nil, err
			}
			return reply, nil
		},
	})
}

// Event binds the event handler for events of type E. An event handler is a pure function
// (S, E) → S: it returns the state after the event, and may modify and return s. It must not do
// IO, read clocks or depend on anything but its arguments, because the same events are replayed
// to rebuild the state whenever the entity is activated. The event it receives is its own copy
// (decoded from the journal on replay, cloned on Emit), so it may keep the event or parts of it
// in the state. Every event type an entity emits needs a handler.
func Event[S, E proto.Message](e *EventSourcedEntity[S], handler func(state S, event E) S) {
	typ, err := messageType[E]()
	switch {
	case err != nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Err: fmt.Errorf("event type: %w", err)})
		return
	case handler == nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Err: fmt.Errorf("%w: nil event handler for %s", ErrInvalidType, typ.Descriptor().FullName())})
		return
	}
	e.events = append(e.events, esEvent{
		typ:   typ,
		apply: func(state, event proto.Message) proto.Message { return handler(state.(S), event.(E)) },
	})
}

// Snapshot binds a snapshot handler that turns a stored snapshot of type P into the state. The
// SDK always writes the state S itself as the snapshot, and by default restores a snapshot of
// type S as is, so Snapshot is optional. Use it to migrate snapshots written with an older state
// type (P is the old type), or to normalise restored state (P = S).
func Snapshot[S, P proto.Message](e *EventSourcedEntity[S], restore func(snapshot P) S) {
	typ, err := messageType[P]()
	switch {
	case err != nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Err: fmt.Errorf("snapshot type: %w", err)})
		return
	case restore == nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Err: fmt.Errorf("%w: nil snapshot handler for %s", ErrInvalidType, typ.Descriptor().FullName())})
		return
	}
	e.snapshots = append(e.snapshots, esSnapshot{
		typ:     typ,
		restore: func(snapshot proto.Message) proto.Message { return restore(snapshot.(P)) },
	})
}

// compile implements Entity.
func (e *EventSourcedEntity[S]) compile() (entityModel, error) {
	m, err := e.model()
	if err != nil {
		return nil, err
	}
	return m, nil
}

// model validates e and returns its immutable, type-erased form.
func (e *EventSourcedEntity[S]) model() (*esModel, error) {
	errs := slices.Clone(e.errs)
	defErr := func(method string, err error) {
		errs = append(errs, &DefinitionError{Service: e.serviceName, Method: method, Err: err})
	}
	sd, err := findService(e.serviceName)
	if err != nil {
		defErr("", err)
		return nil, joinErrors(errs)
	}
	m := &esModel{
		desc:          sd,
		stateType:     e.stateType,
		persistenceID: e.persistenceID,
		snapshotEvery: int64(e.snapshotEvery),
		passivation:   e.passivation,
		commands:      make(map[protoreflect.Name]*esCommand, len(e.commands)),
		events:        make(map[protoreflect.FullName]*esEvent, len(e.events)),
		snapshots:     make(map[protoreflect.FullName]*esSnapshot, len(e.snapshots)),
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
			defErr(c.method, fmt.Errorf("%w (event-sourced entities serve unary methods only)", ErrStreamingMethod))
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
			defErr(string(md.Name()), fmt.Errorf("%w: add sdk.Command(entity, %q, func(*sdk.CommandContext[S], *%s) (*%s, error))",
				ErrMissingHandler, md.Name(), goTypeHint(md.Input()), goTypeHint(md.Output())))
		}
	}
	for i := range e.events {
		ev := &e.events[i]
		name := ev.typ.Descriptor().FullName()
		if m.events[name] != nil {
			defErr("", fmt.Errorf("%w: event handler for %s", ErrDuplicate, name))
		}
		m.events[name] = ev
	}
	for i := range e.snapshots {
		sn := &e.snapshots[i]
		name := sn.typ.Descriptor().FullName()
		if m.snapshots[name] != nil {
			defErr("", fmt.Errorf("%w: snapshot handler for %s", ErrDuplicate, name))
		}
		m.snapshots[name] = sn
	}
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return m, nil
}

// esModel is a validated event-sourced entity definition; it is never modified after compile.
type esModel struct {
	desc          protoreflect.ServiceDescriptor
	stateType     protoreflect.MessageType
	initial       func(entityID string) proto.Message // nil: an empty state
	persistenceID string
	snapshotEvery int64
	passivation   time.Duration
	commands      map[protoreflect.Name]*esCommand
	events        map[protoreflect.FullName]*esEvent
	snapshots     map[protoreflect.FullName]*esSnapshot
}

// spec implements entityModel.
func (m *esModel) spec() *cloudstatepb.Entity {
	return entitySpec(EntityTypeEventSourced, m.desc, m.persistenceID, m.passivation)
}

// files implements entityModel.
func (m *esModel) files() []protoreflect.FileDescriptor {
	fds := []protoreflect.FileDescriptor{m.desc.ParentFile(), m.stateType.Descriptor().ParentFile()}
	for _, name := range sortedKeys(m.events) {
		fds = append(fds, m.events[name].typ.Descriptor().ParentFile())
	}
	for _, name := range sortedKeys(m.snapshots) {
		fds = append(fds, m.snapshots[name].typ.Descriptor().ParentFile())
	}
	return fds
}

// findService looks a service up in protoregistry.GlobalFiles.
func findService(name string) (protoreflect.ServiceDescriptor, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty service name", ErrServiceNotFound)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not in protoregistry.GlobalFiles; use the full name (package.Service) and import the service's generated Go package", ErrServiceNotFound, name)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%w: %s is a %T, not a service", ErrServiceNotFound, name, d)
	}
	return sd, nil
}

// messageType returns the message type of the type parameter M, which must be a generated message
// pointer type.
func messageType[M proto.Message]() (typ protoreflect.MessageType, err error) {
	var zero M
	if any(zero) == nil {
		return nil, fmt.Errorf("%w: %v is an interface type; use a generated message pointer type such as *examplepb.Thing", ErrInvalidType, reflect.TypeFor[M]())
	}
	defer func() {
		if r := recover(); r != nil {
			typ, err = nil, fmt.Errorf("%w: %v has no static message type: %v", ErrInvalidType, reflect.TypeFor[M](), r)
		}
	}()
	typ = zero.ProtoReflect().Type()
	if typ == nil {
		return nil, fmt.Errorf("%w: %v has no static message type", ErrInvalidType, reflect.TypeFor[M]())
	}
	return typ, nil
}

func methodNames(sd protoreflect.ServiceDescriptor) string {
	names := make([]string, 0, sd.Methods().Len())
	for i := range sd.Methods().Len() {
		names = append(names, string(sd.Methods().Get(i).Name()))
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

// goTypeHint renders a message's Go type the way generated code names it, for error messages:
// the Go package name from go_package when set, else the proto package.
func goTypeHint(md protoreflect.MessageDescriptor) string {
	pkg := string(md.ParentFile().Package())
	if opts := md.ParentFile().Options(); opts != nil {
		if gp := goPackageOf(opts); gp != "" {
			pkg = gp
		}
	}
	name := strings.TrimPrefix(string(md.FullName()), string(md.ParentFile().Package())+".")
	return pkg + "." + strings.ReplaceAll(name, ".", "_")
}

func sortedKeys[V any](m map[protoreflect.FullName]V) []protoreflect.FullName {
	keys := make([]protoreflect.FullName, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
