package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// Action is a stateless action definition: a gRPC service whose methods are plain functions of
// their input, in any of the four gRPC shapes. The proxy serves an action call where it lands;
// there is no entity key, no state and no ordering between calls. Create one with NewAction and
// add a handler per method with ActionUnary, ActionStreamedIn, ActionStreamedOut or
// ActionStreamed, matching the method's shape in the .proto.
//
// As with entities, a definition is validated when it is registered (Server.Register,
// sdktest.NewAction), and registration takes a copy.
type Action struct {
	serviceName string
	methods     []actionMethod
	errs        []error
}

// actionShape is the gRPC shape of an action method.
type actionShape int

const (
	shapeUnary actionShape = iota
	shapeStreamedIn
	shapeStreamedOut
	shapeStreamed
)

// String names the shape as error messages do.
func (sh actionShape) String() string {
	switch sh {
	case shapeStreamedIn:
		return "streamed-in"
	case shapeStreamedOut:
		return "streamed-out"
	case shapeStreamed:
		return "duplex-streamed"
	}
	return "unary"
}

// register names the registration function for the shape, for error messages.
func (sh actionShape) register() string {
	switch sh {
	case shapeStreamedIn:
		return "sdk.ActionStreamedIn"
	case shapeStreamedOut:
		return "sdk.ActionStreamedOut"
	case shapeStreamed:
		return "sdk.ActionStreamed"
	}
	return "sdk.ActionUnary"
}

// hint renders the handler signature for a method of this shape.
func (sh actionShape) hint(in, out string) string {
	switch sh {
	case shapeStreamedIn:
		return fmt.Sprintf("func(*sdk.ActionContext, *sdk.ActionStream[*%s]) (*%s, error)", in, out)
	case shapeStreamedOut:
		return fmt.Sprintf("func(*sdk.ActionContext, *%s, func(*%s) error) error", in, out)
	case shapeStreamed:
		return fmt.Sprintf("func(*sdk.ActionContext, *sdk.ActionStream[*%s], func(*%s) error) error", in, out)
	}
	return fmt.Sprintf("func(*sdk.ActionContext, *%s) (*%s, error)", in, out)
}

func shapeOf(md protoreflect.MethodDescriptor) actionShape {
	switch {
	case md.IsStreamingClient() && md.IsStreamingServer():
		return shapeStreamed
	case md.IsStreamingClient():
		return shapeStreamedIn
	case md.IsStreamingServer():
		return shapeStreamedOut
	}
	return shapeUnary
}

// actionMethod is an action's handler with its types erased.
type actionMethod struct {
	method  string
	shape   actionShape
	in, out protoreflect.MessageType
	// call runs the handler: in is the input of unary and streamed-out methods, input the input
	// stream of streamed-in and duplex methods. Streamed-out and duplex handlers send through
	// c.send and return a nil reply.
	call func(c *actionCore, in proto.Message, input *actionInput) (proto.Message, error)
}

// NewAction starts the definition of an action that implements the gRPC service serviceName (a
// full name, "package.Service", whose generated Go package is linked into the program).
func NewAction(serviceName string) *Action {
	return &Action{serviceName: serviceName}
}

// ServiceName returns the full name of the action's gRPC service.
func (a *Action) ServiceName() string { return a.serviceName }

// EntityType returns EntityTypeAction.
func (a *Action) EntityType() string { return EntityTypeAction }

func (a *Action) add(method string, shape actionShape, in, out protoreflect.MessageType, errIn, errOut error, nilHandler bool,
	call func(c *actionCore, in proto.Message, input *actionInput) (proto.Message, error)) {
	switch {
	case errIn != nil:
		a.errs = append(a.errs, &DefinitionError{Service: a.serviceName, Method: method, Err: fmt.Errorf("input type: %w", errIn)})
	case errOut != nil:
		a.errs = append(a.errs, &DefinitionError{Service: a.serviceName, Method: method, Err: fmt.Errorf("output type: %w", errOut)})
	case nilHandler:
		a.errs = append(a.errs, &DefinitionError{Service: a.serviceName, Method: method, Err: fmt.Errorf("%w: nil action handler", ErrInvalidType)})
	default:
		a.methods = append(a.methods, actionMethod{method: method, shape: shape, in: in, out: out, call: call})
	}
}

// ActionUnary binds the handler of a unary method (rpc M(In) returns (Out)) of a's service.
// In and Out must be the method's input and output types; Register checks them.
//
// The handler's outcomes, each with the side effects it asked for (ctx.SideEffect):
//   - (reply, nil): the client receives reply.
//   - (nil, nil): no reply; the client's call completes without a message (gRPC clients see an
//     empty Out).
//   - ctx.Forward was called and (nil, nil) is returned: the client receives the target's reply.
//   - a non-nil error, or ctx.Fail: a failure; the client receives err.Error() (gRPC status
//     UNKNOWN through the proxy). The forward is dropped, but the side effects are not: an
//     action's side effects run even when it fails, as in Cloudstate.
//   - a panic: a failure with a generic description; the panic and its stack are logged.
func ActionUnary[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, in In) (Out, error)) {
	in, errIn := messageType[In]()
	out, errOut := messageType[Out]()
	a.add(method, shapeUnary, in, out, errIn, errOut, handler == nil,
		func(c *actionCore, msg proto.Message, _ *actionInput) (proto.Message, error) {
			reply, err := handler(&ActionContext{c: c}, msg.(In))
			if err != nil {
				return nil, err
			}
			return reply, nil
		})
}

// ActionStreamedIn binds the handler of a streamed-in method (rpc M(stream In) returns (Out)).
// The handler reads the client's messages from in until Recv returns io.EOF, and returns one
// response, with the outcomes of ActionUnary. It may return before reading every message.
func ActionStreamedIn[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, in *ActionStream[In]) (Out, error)) {
	in, errIn := messageType[In]()
	out, errOut := messageType[Out]()
	a.add(method, shapeStreamedIn, in, out, errIn, errOut, handler == nil,
		func(c *actionCore, _ proto.Message, input *actionInput) (proto.Message, error) {
			reply, err := handler(&ActionContext{c: c}, &ActionStream[In]{in: input})
			if err != nil {
				return nil, err
			}
			return reply, nil
		})
}

// ActionStreamedOut binds the handler of a streamed-out method (rpc M(In) returns (stream Out)).
// The handler sends the response stream's elements with send, and returns when the stream is
// complete. Each element is one ActionResponse, made of send's argument and what the handler
// asked of ctx since the previous element:
//   - send(out): a reply element carrying out.
//   - ctx.Forward, then send(nil): a forward element; the client receives the target's reply.
//   - ctx.Fail, then send(any): a failure element. The stream goes on, as in Cloudstate (a proxy
//     ends the client's call at the first failure element).
//   - send(nil) alone: an element with no reply.
//
// Every element, a failure too, carries the side effects asked for (ctx.SideEffect) since the
// previous one. When the handler returns nil, whatever is still pending (a forward, a failure,
// side effects) goes out in a final element; when it returns an error, a final failure element
// carries the error's description and the pending side effects. A reply sent with a pending
// forward goes out as a failure element (ErrAlreadyForwarded).
//
// send returns an error only when the element could not be sent: the client went away (the
// handler should return), or the handler already returned (ErrStreamClosed). send and the context
// may be used from goroutines the handler starts, until the handler returns.
func ActionStreamedOut[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, in In, send func(Out) error) error) {
	in, errIn := messageType[In]()
	out, errOut := messageType[Out]()
	a.add(method, shapeStreamedOut, in, out, errIn, errOut, handler == nil,
		func(c *actionCore, msg proto.Message, _ *actionInput) (proto.Message, error) {
			return nil, handler(&ActionContext{c: c}, msg.(In), func(o Out) error { return c.send(o) })
		})
}

// ActionStreamed binds the handler of a duplex-streamed method (rpc M(stream In) returns (stream
// Out)). The handler reads the client's messages from in, as for ActionStreamedIn, and sends the
// response stream's elements with send, as for ActionStreamedOut; it may do both from different
// goroutines. An input message that is not an In (see ActionStream.Recv) makes the next element
// a failure.
func ActionStreamed[In, Out proto.Message](a *Action, method string, handler func(ctx *ActionContext, in *ActionStream[In], send func(Out) error) error) {
	in, errIn := messageType[In]()
	out, errOut := messageType[Out]()
	a.add(method, shapeStreamed, in, out, errIn, errOut, handler == nil,
		func(c *actionCore, _ proto.Message, input *actionInput) (proto.Message, error) {
			return nil, handler(&ActionContext{c: c}, &ActionStream[In]{in: input}, func(o Out) error { return c.send(o) })
		})
}

// compile implements Entity.
func (a *Action) compile() (entityModel, error) {
	errs := slices.Clone(a.errs)
	defErr := func(method string, err error) {
		errs = append(errs, &DefinitionError{Service: a.serviceName, Method: method, Err: err})
	}
	sd, err := findService(a.serviceName)
	if err != nil {
		defErr("", err)
		return nil, joinErrors(errs)
	}
	m := &actionModel{desc: sd, methods: make(map[protoreflect.Name]*actionMethod, len(a.methods))}
	for i := range a.methods {
		h := &a.methods[i]
		md := sd.Methods().ByName(protoreflect.Name(h.method))
		if md == nil {
			defErr(h.method, fmt.Errorf("%w: the service's methods are %s", ErrMethodNotFound, methodNames(sd)))
			continue
		}
		if shape := shapeOf(md); shape != h.shape {
			defErr(h.method, fmt.Errorf("%w: the method is %s, the handler is %s; register it with %s", ErrStreamingMismatch, shape, h.shape, shape.register()))
		}
		if m.methods[md.Name()] != nil {
			defErr(h.method, fmt.Errorf("%w: action handler", ErrDuplicate))
		}
		if want, got := md.Input().FullName(), h.in.Descriptor().FullName(); want != got {
			defErr(h.method, fmt.Errorf("%w: the method's input type is %s, the handler takes %s", ErrTypeMismatch, want, got))
		}
		if want, got := md.Output().FullName(), h.out.Descriptor().FullName(); want != got {
			defErr(h.method, fmt.Errorf("%w: the method's output type is %s, the handler returns %s", ErrTypeMismatch, want, got))
		}
		m.methods[md.Name()] = h
	}
	for i := range sd.Methods().Len() {
		md := sd.Methods().Get(i)
		if m.methods[md.Name()] == nil {
			shape := shapeOf(md)
			defErr(string(md.Name()), fmt.Errorf("%w: add %s(action, %q, %s)", ErrMissingHandler, shape.register(), md.Name(),
				shape.hint(goTypeHint(md.Input()), goTypeHint(md.Output()))))
		}
	}
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return m, nil
}

// actionModel is a validated action definition; it is never modified after compile.
type actionModel struct {
	desc    protoreflect.ServiceDescriptor
	methods map[protoreflect.Name]*actionMethod
}

// spec implements entityModel. Actions have no persistence id and are never passivated.
func (m *actionModel) spec() *cloudstatepb.Entity {
	return entitySpec(EntityTypeAction, m.desc, "", 0)
}

// files implements entityModel.
func (m *actionModel) files() []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{m.desc.ParentFile()}
}

// ActionContext is what an action handler may do. It is valid until the handler returns (after
// that, Forward and SideEffect return an error wrapping ErrStreamClosed), and, unlike the entity
// contexts, it is safe for concurrent use by goroutines the handler starts.
type ActionContext struct {
	c *actionCore
}

// Context returns the call's context: it is cancelled when the client goes away or the server
// shuts down. Pass it to calls the handler makes.
func (ctx *ActionContext) Context() context.Context { return ctx.c.ctx }

// CommandName returns the name of the method being handled, e.g. "AddItem".
func (ctx *ActionContext) CommandName() string { return ctx.c.header.GetName() }

// Metadata returns the call's metadata (for example HTTP or gRPC headers the proxy passes on);
// for streamed-in and duplex calls, the metadata of the stream's first message.
func (ctx *ActionContext) Metadata() Metadata {
	return Metadata{entries: ctx.c.header.GetMetadata().GetEntries()}
}

// Forward makes the next response a forward to method of service (full service name, simple
// method name) with msg as input: the client receives the target's reply. For unary and
// streamed-in handlers the next response is the only one: return a nil reply. For streamed-out
// and duplex handlers it is the next element: call send(nil), or return. Forwarding twice in one
// response, or replying as well, makes the response a failure (ErrAlreadyForwarded). Checks and
// errors are as for CommandContext.Forward; an error also makes the response a failure.
func (ctx *ActionContext) Forward(service, method string, msg proto.Message) error {
	ctx.c.mu.Lock()
	defer ctx.c.mu.Unlock()
	if ctx.c.done {
		return fmt.Errorf("forward to %s/%s: %w", service, method, ErrStreamClosed)
	}
	return ctx.c.forwardTo(service, method, msg)
}

// SideEffect asks the proxy to send msg to method of service when it receives the next response
// (for streamed-out and duplex handlers, the next element). The proxy awaits a synchronous side
// effect before it passes the response on; it does not await an asynchronous one. Unlike an
// entity's, an action's side effects are kept when the action fails. Checks and errors are as
// for Forward.
func (ctx *ActionContext) SideEffect(service, method string, msg proto.Message, synchronous bool) error {
	ctx.c.mu.Lock()
	defer ctx.c.mu.Unlock()
	if ctx.c.done {
		return fmt.Errorf("side effect to %s/%s: %w", service, method, ErrStreamClosed)
	}
	return ctx.c.sideEffect(service, method, msg, synchronous)
}

// Fail makes the next response a failure with a description formatted like fmt.Sprintf, and
// returns the *CommandError. For unary and streamed-in handlers the next response is the only
// one: the action fails even if the handler goes on to return a reply. For streamed-out and
// duplex handlers it is the next element, whatever the handler sends; return the error instead to
// end the stream with it.
func (ctx *ActionContext) Fail(format string, args ...any) error {
	ctx.c.mu.Lock()
	defer ctx.c.mu.Unlock()
	return ctx.c.fail(format, args...)
}

// ActionStream is the client's message stream of a streamed-in or duplex action call. Recv must
// not be called from two goroutines at once.
type ActionStream[In proto.Message] struct {
	in *actionInput
}

// Recv returns the next message. At the end of the stream it returns io.EOF. Other errors mean
// the call is broken (the client went away: the error is the context's or the transport's) or
// the message is not of type In (an error wrapping ErrTypeMismatch, which also makes the next
// response a failure, as ActionContext.Fail does). After an error, every Recv returns it again.
func (s *ActionStream[In]) Recv() (In, error) {
	var zero In
	m, err := s.in.next()
	if err != nil {
		return zero, err
	}
	return m.(In), nil
}

// All iterates over the remaining messages. The iteration ends after the last message; if the
// stream ends with an error other than io.EOF, All yields it once, with a zero message, as its
// last pair.
func (s *ActionStream[In]) All() iter.Seq2[In, error] {
	return func(yield func(In, error) bool) {
		for {
			m, err := s.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if !yield(m, err) || err != nil {
				return
			}
		}
	}
}

// actionInput is the type-erased input stream of a streamed-in or duplex call.
type actionInput struct {
	c        *actionCore
	typ      protoreflect.MessageType
	recv     func() (*actionpb.ActionCommand, error)
	first    *anypb.Any // a payload carried by the stream's first message, delivered first
	err      error      // sticky: io.EOF, a transport error or a decode error
	brokenBy error      // the transport or context error that broke the stream, if any
}

func (in *actionInput) next() (proto.Message, error) {
	if in.err != nil {
		return nil, in.err
	}
	var payload *anypb.Any
	if in.first != nil {
		payload, in.first = in.first, nil
	} else {
		cmd, err := in.recv()
		switch {
		case errors.Is(err, io.EOF):
			in.err = io.EOF
			return nil, io.EOF
		case err != nil:
			in.err, in.brokenBy = err, err
			return nil, err
		}
		payload = cmd.GetPayload()
	}
	msg, err := decodeInput(in.c.header.GetName(), payload, in.typ)
	if err != nil {
		in.err = err
		in.c.mu.Lock()
		in.c.setErr(err)
		in.c.mu.Unlock()
		return nil, err
	}
	return msg, nil
}

// actionCore is the type-erased state of one action call being handled.
type actionCore struct {
	ctx    context.Context
	log    hclog.Logger
	method *actionMethod
	header *actionpb.ActionCommand // the call's (first) message: service, method, metadata

	mu          sync.Mutex // guards the fields below: handlers may use the context from several goroutines
	effectsCore            // the forward and side effects of the next response, and the first failure
	// transport sends a stream element; nil for unary and streamed-in calls. Guarded by mu.
	transport func(*actionpb.ActionResponse) error
	sendErr   error // the transport's error after a failed send; guarded by mu
	done      bool  // the handler returned; guarded by mu
}

// build returns the next response from the handler's reply and the pending forward and side
// effects, and clears them. The caller holds mu.
func (c *actionCore) build(out proto.Message) (*actionpb.ActionResponse, error) {
	valid := out != nil && out.ProtoReflect().IsValid()
	if c.forward != nil && valid {
		return nil, fmt.Errorf("action %s both forwarded to %s/%s and replied: %w",
			c.header.GetName(), c.forward.GetServiceName(), c.forward.GetCommandName(), ErrAlreadyForwarded)
	}
	resp := &actionpb.ActionResponse{SideEffects: c.effects}
	switch {
	case c.forward != nil:
		resp.Response = &actionpb.ActionResponse_Forward{Forward: c.forward}
	case valid:
		payload, err := marshalAny(out)
		if err != nil {
			return nil, fmt.Errorf("action %s: the reply does not encode: %w", c.header.GetName(), err)
		}
		resp.Response = &actionpb.ActionResponse_Reply{Reply: &cloudstatepb.Reply{Payload: payload}}
	}
	c.forward, c.effects = nil, nil
	return resp, nil
}

// failure returns a failure response carrying the pending side effects, and clears them. The
// caller holds mu.
func (c *actionCore) failure(err error) *actionpb.ActionResponse {
	c.log.Debug("action failed", "error", err)
	resp := &actionpb.ActionResponse{
		Response:    &actionpb.ActionResponse_Failure{Failure: &cloudstatepb.Failure{Description: failureDescription(err)}},
		SideEffects: c.effects,
	}
	c.forward, c.effects = nil, nil
	return resp
}

// next returns the next response from the handler's reply and what is pending: a failure if one
// was recorded (or the reply clashes with a forward, or does not encode), else the forward, the
// reply or no response, with the pending side effects. It clears what was pending. The caller
// holds mu.
func (c *actionCore) next(out proto.Message) *actionpb.ActionResponse {
	err := c.err
	if err == nil {
		resp, berr := c.build(out)
		if berr == nil {
			return resp
		}
		c.log.Warn("action response is a failure", "error", berr)
		err = berr
	}
	c.err = nil
	return c.failure(err)
}

// send sends one element of a streamed-out or duplex call.
func (c *actionCore) send(out proto.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.done:
		return fmt.Errorf("action %s: send: %w", c.header.GetName(), ErrStreamClosed)
	case c.sendErr != nil:
		return c.sendErr
	}
	if err := c.transport(c.next(out)); err != nil {
		c.sendErr = err
		return err
	}
	return nil
}
