package sdk

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// CommandContext is what a command handler of an event-sourced entity with state type S may do.
// It is valid only during the handler call it was passed to, and must not be used from other
// goroutines.
type CommandContext[S proto.Message] struct {
	c *commandCore
}

// Context returns the context of the entity's stream: it is cancelled when the proxy closes the
// stream or the server stops. Pass it to calls the handler makes.
func (ctx *CommandContext[S]) Context() context.Context { return ctx.c.ctx }

// EntityID returns the id of the entity the command is for.
func (ctx *CommandContext[S]) EntityID() string { return ctx.c.entityID }

// CommandName returns the name of the method being handled, e.g. "AddItem".
func (ctx *CommandContext[S]) CommandName() string { return ctx.c.cmd.GetName() }

// CommandID returns the proxy's id of the command; ids start at 1 on each entity stream.
func (ctx *CommandContext[S]) CommandID() int64 { return ctx.c.cmd.GetId() }

// Metadata returns the command's metadata (for example HTTP or gRPC headers the proxy passes on).
func (ctx *CommandContext[S]) Metadata() Metadata {
	return Metadata{entries: ctx.c.cmd.GetMetadata().GetEntries()}
}

// State returns the entity's current state, including the effect of events emitted earlier in
// this command. It is a read-only view: change the state only by emitting events.
func (ctx *CommandContext[S]) State() S { return ctx.c.current().(S) }

// Sequence returns the entity's event sequence number, including events emitted earlier in this
// command: the sequence number of the last event, 0 for an entity without events.
func (ctx *CommandContext[S]) Sequence() int64 { return ctx.c.seq + int64(len(ctx.c.events)) }

// Emit records event and applies it at once, through its event handler, to a working copy of the
// state that State then returns. The events of a command are persisted, in order, before its
// reply is sent; if the command fails they are dropped along with the working copy.
//
// Emit returns an error wrapping ErrNoEventHandler when event's type has no event handler, or
// ErrNilMessage for a nil event. Such an error also makes the command fail, whatever the handler
// returns, so a command can never persist part of what it meant to.
func (ctx *CommandContext[S]) Emit(event proto.Message) error { return ctx.c.emit(event) }

// Forward makes the command's outcome a forward to method of service (full service name,
// simple method name) with msg as input: the client receives the target's reply. The handler
// should then return a nil reply (returning a reply as well is a command failure). Events emitted
// by the command are persisted before the forward happens.
//
// When service is in protoregistry.GlobalFiles, Forward checks that the method exists and takes
// msg's type, and returns an error wrapping ErrMethodNotFound or ErrTypeMismatch otherwise.
// Targets whose descriptors this program does not have are not checked. An error from Forward
// also makes the command fail. It returns nil on success, so a handler may end with
// `return nil, ctx.Forward(...)`.
func (ctx *CommandContext[S]) Forward(service, method string, msg proto.Message) error {
	return ctx.c.forwardTo(service, method, msg)
}

// SideEffect asks the proxy to send msg to method of service after the command's events are
// persisted. The proxy awaits a synchronous side effect before it sends the reply; it does not
// await an asynchronous one. The side effects of a failed command are dropped. Checks and errors
// are as for Forward.
func (ctx *CommandContext[S]) SideEffect(service, method string, msg proto.Message, synchronous bool) error {
	return ctx.c.sideEffect(service, method, msg, synchronous)
}

// Fail makes the command fail with a description formatted like fmt.Sprintf, and returns the
// *CommandError. The command fails even if the handler goes on to return a reply, so both
// `return nil, ctx.Fail(...)` and calling Fail then returning are correct.
func (ctx *CommandContext[S]) Fail(format string, args ...any) error {
	return ctx.c.fail(format, args...)
}

// Metadata is a read-only view of Cloudstate metadata: an ordered list of entries, each a key and
// a string or bytes value. Keys compare case-insensitively, as HTTP header names do. The zero
// value is empty metadata.
type Metadata struct {
	entries []*cloudstatepb.MetadataEntry
}

// Get returns the first string value of key, or "" if there is none.
func (m Metadata) Get(key string) string {
	v, _ := m.Lookup(key)
	return v
}

// Lookup returns the first string value of key and whether there is one.
func (m Metadata) Lookup(key string) (string, bool) {
	for _, e := range m.entries {
		if v, ok := e.GetValue().(*cloudstatepb.MetadataEntry_StringValue); ok && strings.EqualFold(e.GetKey(), key) {
			return v.StringValue, true
		}
	}
	return "", false
}

// Values returns every string value of key, in order.
func (m Metadata) Values(key string) []string {
	var vs []string
	for _, e := range m.entries {
		if v, ok := e.GetValue().(*cloudstatepb.MetadataEntry_StringValue); ok && strings.EqualFold(e.GetKey(), key) {
			vs = append(vs, v.StringValue)
		}
	}
	return vs
}

// Bytes returns the first bytes value of key and whether there is one. The slice must not be
// modified.
func (m Metadata) Bytes(key string) ([]byte, bool) {
	for _, e := range m.entries {
		if v, ok := e.GetValue().(*cloudstatepb.MetadataEntry_BytesValue); ok && strings.EqualFold(e.GetKey(), key) {
			return v.BytesValue, true
		}
	}
	return nil, false
}

// Keys returns the keys of all entries, in order, with repeats.
func (m Metadata) Keys() []string {
	keys := make([]string, len(m.entries))
	for i, e := range m.entries {
		keys[i] = e.GetKey()
	}
	return keys
}

// Len returns the number of entries.
func (m Metadata) Len() int { return len(m.entries) }

// effectsCore holds what every kind of handler may ask for besides its reply: a forward, side
// effects, and the first error that makes the command fail. The entity and action cores embed it.
type effectsCore struct {
	forward *cloudstatepb.Forward
	effects []*cloudstatepb.SideEffect
	err     error // the first error that makes the command fail
}

// commandCore is the type-erased state of one command being handled.
type commandCore struct {
	effectsCore
	ctx      context.Context
	model    *esModel
	entityID string
	cmd      *cloudstatepb.Command
	seq      int64         // the entity's sequence before the command
	base     proto.Message // the committed state; never modified during a command
	work     proto.Message // the working copy, created by the first Emit
	events   []*anypb.Any
}

func (c *commandCore) current() proto.Message {
	if c.work != nil {
		return c.work
	}
	return c.base
}

func (c *effectsCore) setErr(err error) {
	if c.err == nil {
		c.err = err
	}
}

func (c *commandCore) emit(event proto.Message) error {
	if event == nil || !event.ProtoReflect().IsValid() {
		err := fmt.Errorf("emit: %w", ErrNilMessage)
		c.setErr(err)
		return err
	}
	name := event.ProtoReflect().Descriptor().FullName()
	h := c.model.events[name]
	if h == nil {
		err := fmt.Errorf("emit %s: %w (register one with sdk.Event)", name, ErrNoEventHandler)
		c.setErr(err)
		return err
	}
	payload, err := marshalAny(event)
	if err != nil {
		err = fmt.Errorf("emit %s: %w", name, err)
		c.setErr(err)
		return err
	}
	if c.work == nil {
		c.work = proto.Clone(c.base)
	}
	// The handler gets a copy, so that what it keeps in the state is exactly what replay will
	// give it, whatever the caller does with event afterwards.
	next := h.apply(c.work, proto.Clone(event))
	if next == nil || !next.ProtoReflect().IsValid() {
		err := fmt.Errorf("event handler for %s returned a nil state: %w", name, ErrNilMessage)
		c.setErr(err)
		return err
	}
	c.work = next
	c.events = append(c.events, payload)
	return nil
}

// fail records a *CommandError with a formatted description and returns it.
func (c *effectsCore) fail(format string, args ...any) error {
	err := &CommandError{Description: fmt.Sprintf(format, args...)}
	c.setErr(err)
	return err
}

func (c *effectsCore) forwardTo(service, method string, msg proto.Message) error {
	if c.forward != nil {
		err := fmt.Errorf("forward to %s/%s: %w", service, method, ErrAlreadyForwarded)
		c.setErr(err)
		return err
	}
	payload, err := target(service, method, msg)
	if err != nil {
		err = fmt.Errorf("forward: %w", err)
		c.setErr(err)
		return err
	}
	c.forward = &cloudstatepb.Forward{ServiceName: service, CommandName: method, Payload: payload}
	return nil
}

func (c *effectsCore) sideEffect(service, method string, msg proto.Message, synchronous bool) error {
	payload, err := target(service, method, msg)
	if err != nil {
		err = fmt.Errorf("side effect: %w", err)
		c.setErr(err)
		return err
	}
	c.effects = append(c.effects, &cloudstatepb.SideEffect{
		ServiceName: service,
		CommandName: method,
		Payload:     payload,
		Synchronous: synchronous,
	})
	return nil
}

// target checks a forward or side-effect target as far as this program knows it and returns the
// message as an Any.
func target(service, method string, msg proto.Message) (*anypb.Any, error) {
	if msg == nil || !msg.ProtoReflect().IsValid() {
		return nil, fmt.Errorf("%s/%s: %w", service, method, ErrNilMessage)
	}
	if service == "" || method == "" {
		return nil, fmt.Errorf("%w: empty service or method name (%q, %q)", ErrMethodNotFound, service, method)
	}
	if sd, err := findService(service); err == nil {
		md := sd.Methods().ByName(protoreflect.Name(method))
		if md == nil {
			return nil, fmt.Errorf("%s/%s: %w: the service's methods are %s", service, method, ErrMethodNotFound, methodNames(sd))
		}
		if want, got := md.Input().FullName(), msg.ProtoReflect().Descriptor().FullName(); want != got {
			return nil, fmt.Errorf("%s/%s: %w: the method's input type is %s, got %s", service, method, ErrTypeMismatch, want, got)
		}
	}
	return marshalAny(msg)
}
