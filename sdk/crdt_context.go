package sdk

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// crdtCore is the type-erased state of one CRDT handler call: a command handler, an OnChange
// callback or an OnCancel callback.
type crdtCore struct {
	effectsCore
	ctx      context.Context
	sess     *CrdtSession
	id       int64 // the command's id (for callbacks, the id of the streamed command)
	name     string
	metadata *cloudstatepb.Metadata
	streamed bool // the command is a streamed call (CRDTStreamContext.Streamed)

	// Command and cancel handlers.
	deleted     bool
	consistency WriteConsistency

	// Streamed command handlers.
	onChange func(*crdtCore) (proto.Message, error)
	onCancel func(*crdtCore) error

	// OnChange callbacks.
	ended bool
}

// CRDTContext is what a command handler of a CRDT entity with state type C may do. It is valid
// only during the handler call it was passed to, and must not be used from other goroutines.
type CRDTContext[C CRDT] struct {
	c *crdtCore
}

// Context returns the context of the command: StepContext's for an in-process session, else
// the entity stream's, which is cancelled when the proxy closes the stream or the server stops.
func (ctx *CRDTContext[C]) Context() context.Context { return ctx.c.ctx }

// EntityID returns the id of the entity the command is for.
func (ctx *CRDTContext[C]) EntityID() string { return ctx.c.sess.entityID }

// CommandName returns the name of the method being handled, e.g. "Add".
func (ctx *CRDTContext[C]) CommandName() string { return ctx.c.name }

// CommandID returns the proxy's id of the command; ids start at 1 on each entity stream.
func (ctx *CRDTContext[C]) CommandID() int64 { return ctx.c.id }

// Metadata returns the command's metadata (for example HTTP or gRPC headers the proxy passes on).
func (ctx *CRDTContext[C]) Metadata() Metadata { return Metadata{entries: ctx.c.metadata.GetEntries()} }

// State returns the entity's CRDT. The handler reads it and changes it through its methods;
// the changes are sent to the proxy with the reply, and dropped if the command fails. Every
// call returns the same CRDT.
func (ctx *CRDTContext[C]) State() C { return ctx.c.sess.state.(C) }

// Delete deletes the entity: when the command succeeds, the proxy deletes the CRDT on every
// node (the reply carries a delete state action instead of the command's changes) and closes
// the entity's stream. Later commands on the stream fail with ErrEntityDeleted.
func (ctx *CRDTContext[C]) Delete() { ctx.c.deleted = true }

// SetWriteConsistency sets how many replicas must have the command's change (or delete) before
// the proxy replies; the default is WriteLocal.
func (ctx *CRDTContext[C]) SetWriteConsistency(w WriteConsistency) { ctx.c.consistency = w }

// OpenStreams returns the number of open streamed commands of method (a simple method name) on
// this entity's stream, not counting the command being handled. With presence, for example, a
// node votes false when its last Connect stream is cancelled.
func (ctx *CRDTContext[C]) OpenStreams(method string) int { return ctx.c.sess.openStreams(method) }

// Forward makes the command's outcome a forward to method of service (full service name,
// simple method name) with msg as input: the client receives the target's reply. The handler
// should then return a nil reply. The command's changes are applied before the forward
// happens. Checks and errors are as for CommandContext.Forward.
func (ctx *CRDTContext[C]) Forward(service, method string, msg proto.Message) error {
	return ctx.c.forwardTo(service, method, msg)
}

// SideEffect asks the proxy to send msg to method of service after the command's changes are
// applied. The proxy awaits a synchronous side effect before it replies. The side effects of a
// failed command are dropped. Checks and errors are as for Forward.
func (ctx *CRDTContext[C]) SideEffect(service, method string, msg proto.Message, synchronous bool) error {
	return ctx.c.sideEffect(service, method, msg, synchronous)
}

// Fail makes the command fail with a description formatted like fmt.Sprintf, and returns the
// *CommandError. The command fails even if the handler goes on to return a reply.
func (ctx *CRDTContext[C]) Fail(format string, args ...any) error {
	return ctx.c.fail(format, args...)
}

// CRDTStreamContext is what the handler of a server-streaming method of a CRDT entity may do:
// everything a CRDTContext offers, plus the callbacks that keep the stream open. It is valid
// only during the handler call it was passed to.
type CRDTStreamContext[C CRDT, Out proto.Message] struct {
	CRDTContext[C]
}

// Streamed reports whether the call is streamed: only then do OnChange and OnCancel have an
// effect. The proxy streams every call of a server-streaming method.
func (ctx *CRDTStreamContext[C, Out]) Streamed() bool { return ctx.c.streamed }

// OnChange registers f to run after every later change of the CRDT while the stream is open
// (a later call replaces f). f runs after a change by another command or cancel handler on
// this node (after that command's reply) and after a change the proxy sends from another node;
// it does not run for the change of the command that registers it. What f returns:
//   - (msg, nil) with a non-nil msg: msg is sent as the next element of the stream;
//   - (nil, nil): nothing is sent, unless f called EndStream, Forward or SideEffect;
//   - a non-nil error (or ctx.Fail, or a change of the CRDT, which OnChange may not make): the
//     stream ends with a failure.
//
// Registering a callback on a call that is not streamed has no effect.
func (ctx *CRDTStreamContext[C, Out]) OnChange(f func(ctx *CRDTChangeContext[C]) (Out, error)) {
	if f == nil {
		ctx.c.onChange = nil
		return
	}
	ctx.c.onChange = func(c *crdtCore) (proto.Message, error) {
		out, err := f(&CRDTChangeContext[C]{c: c})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// OnCancel registers f to run when the client cancels the stream (a later call replaces f).
// f may change the CRDT and ask for side effects; the change is replicated like a command's
// (the proxy receives it in the cancellation's response), and the OnChange callbacks of the
// other open streams then run. If f returns an error, or panics, its changes and side effects
// are dropped (and logged).
//
// Registering a callback on a call that is not streamed has no effect.
func (ctx *CRDTStreamContext[C, Out]) OnCancel(f func(ctx *CRDTCancelContext[C]) error) {
	if f == nil {
		ctx.c.onCancel = nil
		return
	}
	ctx.c.onCancel = func(c *crdtCore) error { return f(&CRDTCancelContext[C]{c: c}) }
}

// CRDTChangeContext is what an OnChange callback may do. It is valid only during the callback
// call it was passed to.
type CRDTChangeContext[C CRDT] struct {
	c *crdtCore
}

// Context returns the context of the entity's stream (for an in-process session, the context
// passed to NewCrdtSession).
func (ctx *CRDTChangeContext[C]) Context() context.Context { return ctx.c.ctx }

// EntityID returns the entity's id.
func (ctx *CRDTChangeContext[C]) EntityID() string { return ctx.c.sess.entityID }

// CommandName returns the name of the streamed command's method.
func (ctx *CRDTChangeContext[C]) CommandName() string { return ctx.c.name }

// CommandID returns the id of the streamed command.
func (ctx *CRDTChangeContext[C]) CommandID() int64 { return ctx.c.id }

// Metadata returns the streamed command's metadata.
func (ctx *CRDTChangeContext[C]) Metadata() Metadata {
	return Metadata{entries: ctx.c.metadata.GetEntries()}
}

// State returns the entity's CRDT, after the change. It is read-only here: a change fails with
// ErrReadOnly and ends the stream with a failure.
func (ctx *CRDTChangeContext[C]) State() C { return ctx.c.sess.state.(C) }

// EndStream ends the stream after this callback: the message it returns, if any, is the last.
func (ctx *CRDTChangeContext[C]) EndStream() { ctx.c.ended = true }

// OpenStreams returns the number of open streamed commands of method on this entity's stream,
// this one included.
func (ctx *CRDTChangeContext[C]) OpenStreams(method string) int {
	return ctx.c.sess.openStreams(method)
}

// Forward makes this element of the stream a forward to method of service with msg as input:
// the client receives the target's reply as the element. Checks and errors are as for
// CommandContext.Forward.
func (ctx *CRDTChangeContext[C]) Forward(service, method string, msg proto.Message) error {
	return ctx.c.forwardTo(service, method, msg)
}

// SideEffect asks the proxy to send msg to method of service along with this element of the
// stream. Checks and errors are as for CommandContext.Forward.
func (ctx *CRDTChangeContext[C]) SideEffect(service, method string, msg proto.Message, synchronous bool) error {
	return ctx.c.sideEffect(service, method, msg, synchronous)
}

// Fail ends the stream with a failure whose description is formatted like fmt.Sprintf, and
// returns the *CommandError.
func (ctx *CRDTChangeContext[C]) Fail(format string, args ...any) error {
	return ctx.c.fail(format, args...)
}

// CRDTCancelContext is what an OnCancel callback may do. It is valid only during the callback
// call it was passed to.
type CRDTCancelContext[C CRDT] struct {
	c *crdtCore
}

// Context returns the context of the entity's stream (for an in-process session, the context
// passed to NewCrdtSession).
func (ctx *CRDTCancelContext[C]) Context() context.Context { return ctx.c.ctx }

// EntityID returns the entity's id.
func (ctx *CRDTCancelContext[C]) EntityID() string { return ctx.c.sess.entityID }

// CommandName returns the name of the cancelled command's method.
func (ctx *CRDTCancelContext[C]) CommandName() string { return ctx.c.name }

// CommandID returns the id of the cancelled command.
func (ctx *CRDTCancelContext[C]) CommandID() int64 { return ctx.c.id }

// Metadata returns the cancelled command's metadata.
func (ctx *CRDTCancelContext[C]) Metadata() Metadata {
	return Metadata{entries: ctx.c.metadata.GetEntries()}
}

// State returns the entity's CRDT; the callback may change it like a command handler.
func (ctx *CRDTCancelContext[C]) State() C { return ctx.c.sess.state.(C) }

// Delete deletes the entity, like CRDTContext.Delete.
func (ctx *CRDTCancelContext[C]) Delete() { ctx.c.deleted = true }

// SetWriteConsistency sets the write consistency of the callback's change (default WriteLocal).
func (ctx *CRDTCancelContext[C]) SetWriteConsistency(w WriteConsistency) { ctx.c.consistency = w }

// OpenStreams returns the number of open streamed commands of method on this entity's stream;
// the cancelled one no longer counts.
func (ctx *CRDTCancelContext[C]) OpenStreams(method string) int {
	return ctx.c.sess.openStreams(method)
}

// SideEffect asks the proxy to send msg to method of service after the callback's change is
// applied. Checks and errors are as for CommandContext.Forward.
func (ctx *CRDTCancelContext[C]) SideEffect(service, method string, msg proto.Message, synchronous bool) error {
	return ctx.c.sideEffect(service, method, msg, synchronous)
}
