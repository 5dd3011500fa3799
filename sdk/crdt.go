package sdk

import (
	"fmt"
	"reflect"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// CRDTEntity is a CRDT entity definition whose state is a CRDT of type C: *GCounter,
// *PNCounter, *GSet[E], *ORSet[E], *LWWRegister[T], *Flag, *ORMap[K, V] or *Vote. Every kstate
// node holds a replica of every CRDT entity; a command is served on the node it reaches, its
// changes are merged there and replicated to the other nodes, and changes made elsewhere
// arrive as deltas. Create one with NewCRDT, configure it with the chainable methods, and add
// a handler per method with CRDTCommand (unary methods) or CRDTStreamed (server-streaming
// methods).
//
// As with the other entity kinds, a definition is validated when it is registered
// (Server.Register, sdktest.NewCRDT), registration takes a copy, and a definition must not be
// changed concurrently with its registration.
type CRDTEntity[C CRDT] struct {
	serviceName   string
	persistenceID string
	passivation   time.Duration
	commands      []crdtCommand
	errs          []error
}

// crdtCommand is a CRDT entity's handler with its types erased.
type crdtCommand struct {
	method   string
	streamed bool // registered with CRDTStreamed
	in, out  protoreflect.MessageType
	call     func(c *crdtCore, in proto.Message) (proto.Message, error)
}

// NewCRDT starts the definition of a CRDT entity that implements the gRPC service serviceName
// (a full name, "package.Service", whose generated Go package is linked into the program),
// with state type C:
//
//	presence := sdk.NewCRDT[*sdk.Vote]("com.example.chat.Presence")
//	friends := sdk.NewCRDT[*sdk.ORSet[*chatpb.Friend]]("com.example.chat.Friends")
//	cart := sdk.NewCRDT[*sdk.ORMap[*cartpb.Product, *sdk.PNCounter]]("com.example.Cart")
//
// A new entity starts from the empty CRDT (a zero counter, an empty set or map, a register
// without a value, a disabled flag, a vote of one voter and no votes for). Element, key and
// register types are generated message pointer types, or *anypb.Any for messages of any type.
//
// Defaults: persistence id = the service's simple name ("Presence"), no passivation timeout
// (the proxy's default applies; an entity with open streamed commands is not passivated).
func NewCRDT[C CRDT](serviceName string) *CRDTEntity[C] {
	e := &CRDTEntity[C]{serviceName: serviceName}
	var zero C
	if any(zero) == nil {
		e.errs = append(e.errs, &DefinitionError{Service: serviceName, Err: fmt.Errorf(
			"%w: the CRDT type %v is an interface; use a concrete type such as *sdk.GCounter", ErrInvalidType, reflect.TypeFor[C]())})
	} else if err := zero.check(); err != nil {
		e.errs = append(e.errs, &DefinitionError{Service: serviceName, Err: fmt.Errorf("CRDT type %v: %w", reflect.TypeFor[C](), err)})
	}
	return e
}

// ServiceName returns the full name of the entity's gRPC service.
func (e *CRDTEntity[C]) ServiceName() string { return e.serviceName }

// EntityType returns EntityTypeCRDT.
func (e *CRDTEntity[C]) EntityType() string { return EntityTypeCRDT }

// PersistenceID sets the name under which the entity's replicated state is stored (kstate
// derives its Kafka topic names from it). Keep it stable across deployments. Empty means the
// service's simple name.
func (e *CRDTEntity[C]) PersistenceID(id string) *CRDTEntity[C] {
	e.persistenceID = id
	return e
}

// Passivation sets how long an entity may stay idle before the proxy passivates it. d <= 0
// leaves the choice to the proxy (Cloudstate: 30s). An entity with open streamed commands is
// not idle.
func (e *CRDTEntity[C]) Passivation(d time.Duration) *CRDTEntity[C] {
	e.passivation = max(d, 0)
	return e
}

// CRDTCommand binds a handler of a CRDT entity to a unary method of e's service (by simple
// name). In and Out must be the method's input and output types; Register checks them.
//
// Commands of one entity may be in flight together; the SDK runs their handlers one at a time,
// in the order they arrive. A handler reads and changes the CRDT through ctx.State(); the
// changes it makes are sent to the proxy with its reply as one operation delta, and the
// proxy merges them into the replicated state. Its outcomes:
//   - (reply, nil): the changes are applied, then the client receives reply. A nil reply sends
//     an empty Out message.
//   - ctx.Forward was called and (nil, nil) is returned: the changes are applied and the
//     command is forwarded; the client receives the target's reply.
//   - a non-nil error, or a failed change (such as a GCounter decrement): a command failure.
//     The client receives the error's text; the command's changes, side effects and forward are
//     dropped, and the CRDT is as it was before the command.
//   - a panic: a command failure with a generic description (the panic and its stack are
//     logged). The changes are dropped as for a failure, so the entity goes on.
//
// After a command that changed the CRDT, the OnChange callbacks of the entity's open streamed
// commands run (see CRDTStreamed).
func CRDTCommand[C CRDT, In, Out proto.Message](e *CRDTEntity[C], method string, handler func(ctx *CRDTContext[C], in In) (Out, error)) {
	in, errIn := messageType[In]()
	out, errOut := messageType[Out]()
	e.add(method, false, in, out, errIn, errOut, handler == nil, func(c *crdtCore, msg proto.Message) (proto.Message, error) {
		reply, err := handler(&CRDTContext[C]{c: c}, msg.(In))
		if err != nil {
			return nil, err
		}
		return reply, nil
	})
}

// CRDTStreamed binds a handler of a CRDT entity to a server-streaming method of e's service
// (rpc M(In) returns (stream Out)). In and Out must be the method's types; Register checks
// them.
//
// The handler runs once, when the call starts, like a CRDTCommand handler: it may change the
// CRDT, forward, ask for side effects, or fail. Its reply (if not nil) is the stream's first
// element; a nil reply sends none. If the call is streamed (ctx.Streamed(), which the proxy
// sets for a streaming call) and the handler registers ctx.OnChange or ctx.OnCancel, the
// stream stays open after the reply:
//   - OnChange runs after every later change of the CRDT, whether made by another command on
//     this node, by a cancel handler, or by another node (a delta from the proxy). It may
//     return a message (the next element of the stream), forward, ask for side effects, end the
//     stream (EndStream), or fail (which ends the stream with the failure). It must not change
//     the CRDT.
//   - OnCancel runs when the client cancels the call. It may change the CRDT (the change is
//     replicated like a command's; the OnChange callbacks of the other streams then run) and
//     ask for side effects.
//
// Without either callback the stream ends after the first reply.
func CRDTStreamed[C CRDT, In, Out proto.Message](e *CRDTEntity[C], method string, handler func(ctx *CRDTStreamContext[C, Out], in In) (Out, error)) {
	in, errIn := messageType[In]()
	out, errOut := messageType[Out]()
	e.add(method, true, in, out, errIn, errOut, handler == nil, func(c *crdtCore, msg proto.Message) (proto.Message, error) {
		reply, err := handler(&CRDTStreamContext[C, Out]{CRDTContext: CRDTContext[C]{c: c}}, msg.(In))
		if err != nil {
			return nil, err
		}
		return reply, nil
	})
}

func (e *CRDTEntity[C]) add(method string, streamed bool, in, out protoreflect.MessageType, errIn, errOut error, nilHandler bool,
	call func(c *crdtCore, in proto.Message) (proto.Message, error)) {
	switch {
	case errIn != nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Method: method, Err: fmt.Errorf("input type: %w", errIn)})
		return
	case errOut != nil:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Method: method, Err: fmt.Errorf("output type: %w", errOut)})
		return
	case nilHandler:
		e.errs = append(e.errs, &DefinitionError{Service: e.serviceName, Method: method, Err: fmt.Errorf("%w: nil command handler", ErrInvalidType)})
		return
	}
	e.commands = append(e.commands, crdtCommand{method: method, streamed: streamed, in: in, out: out, call: call})
}

// compile implements Entity.
func (e *CRDTEntity[C]) compile() (entityModel, error) {
	errs := slices.Clone(e.errs)
	defErr := func(method string, err error) {
		errs = append(errs, &DefinitionError{Service: e.serviceName, Method: method, Err: err})
	}
	sd, err := findService(e.serviceName)
	if err != nil {
		defErr("", err)
		return nil, joinErrors(errs)
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	var zero C
	m := &crdtModel{
		desc:          sd,
		persistenceID: e.persistenceID,
		passivation:   e.passivation,
		kind:          zero.kind(),
		newState:      func() crdtValue { return zero.newEmpty() },
		types:         zero.messageTypes(),
		commands:      make(map[protoreflect.Name]*crdtCommand, len(e.commands)),
	}
	if m.persistenceID == "" {
		m.persistenceID = string(sd.Name())
	}
	for i := range e.commands {
		c := &e.commands[i]
		md := sd.Methods().ByName(protoreflect.Name(c.method))
		switch {
		case md == nil:
			defErr(c.method, fmt.Errorf("%w: the service's methods are %s", ErrMethodNotFound, methodNames(sd)))
			continue
		case md.IsStreamingClient():
			defErr(c.method, fmt.Errorf("%w (CRDT entities serve unary and server-streaming methods; serve client streams from an action)", ErrStreamingMethod))
		case md.IsStreamingServer() && !c.streamed:
			defErr(c.method, fmt.Errorf("%w: the method streams its replies; register it with sdk.CRDTStreamed", ErrStreamingMismatch))
		case !md.IsStreamingServer() && c.streamed:
			defErr(c.method, fmt.Errorf("%w: the method is unary; register it with sdk.CRDTCommand", ErrStreamingMismatch))
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
		if m.commands[md.Name()] != nil {
			continue
		}
		if md.IsStreamingServer() && !md.IsStreamingClient() {
			defErr(string(md.Name()), fmt.Errorf("%w: add sdk.CRDTStreamed(entity, %q, func(*sdk.CRDTStreamContext[C, *%s], *%s) (*%s, error))",
				ErrMissingHandler, md.Name(), goTypeHint(md.Output()), goTypeHint(md.Input()), goTypeHint(md.Output())))
			continue
		}
		defErr(string(md.Name()), fmt.Errorf("%w: add sdk.CRDTCommand(entity, %q, func(*sdk.CRDTContext[C], *%s) (*%s, error))",
			ErrMissingHandler, md.Name(), goTypeHint(md.Input()), goTypeHint(md.Output())))
	}
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return m, nil
}

// crdtModel is a validated CRDT entity definition; it is never modified after compile.
type crdtModel struct {
	desc          protoreflect.ServiceDescriptor
	persistenceID string
	passivation   time.Duration
	kind          crdtlog.Kind
	newState      func() crdtValue
	types         []protoreflect.MessageType
	commands      map[protoreflect.Name]*crdtCommand
}

// spec implements entityModel.
func (m *crdtModel) spec() *cloudstatepb.Entity {
	return entitySpec(EntityTypeCRDT, m.desc, m.persistenceID, m.passivation)
}

// files implements entityModel.
func (m *crdtModel) files() []protoreflect.FileDescriptor {
	fds := []protoreflect.FileDescriptor{m.desc.ParentFile()}
	for _, t := range m.types {
		fds = append(fds, t.Descriptor().ParentFile())
	}
	return fds
}

// WriteConsistency is how many replicas must have a command's change before the proxy replies
// (the protocol's CrdtWriteConsistency). kstate replies after the local merge for WriteLocal,
// and after the change is durably in Kafka for WriteMajority and WriteAll.
type WriteConsistency int

const (
	// WriteLocal replies once this node has the change (the default).
	WriteLocal WriteConsistency = iota
	// WriteMajority replies once a majority of the replicas can have it.
	WriteMajority
	// WriteAll replies once every replica can have it.
	WriteAll
)

func (w WriteConsistency) proto() crdtpb.CrdtWriteConsistency {
	switch w {
	case WriteMajority:
		return crdtpb.CrdtWriteConsistency_MAJORITY
	case WriteAll:
		return crdtpb.CrdtWriteConsistency_ALL
	}
	return crdtpb.CrdtWriteConsistency_LOCAL
}

// String names the consistency like the protocol does ("LOCAL", "MAJORITY", "ALL").
func (w WriteConsistency) String() string { return w.proto().String() }
