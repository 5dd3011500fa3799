package sdk

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by the SDK wrap one of these, so callers can test with errors.Is.
var (
	// ErrServiceNotFound: no service of that full name is registered in protoregistry.GlobalFiles
	// (import the generated Go package of its .proto file), or no entity serves it.
	ErrServiceNotFound = errors.New("service not found")
	// ErrMethodNotFound: the service has no method of that name.
	ErrMethodNotFound = errors.New("method not found")
	// ErrTypeMismatch: a handler's message type differs from the one the .proto declares.
	ErrTypeMismatch = errors.New("message type mismatch")
	// ErrMissingHandler: a method of the service has no command (or action) handler.
	ErrMissingHandler = errors.New("missing command handler")
	// ErrDuplicate: a command, event or snapshot handler, or a service, is registered twice.
	ErrDuplicate = errors.New("registered twice")
	// ErrStreamingMethod: event-sourced and value entities serve unary methods only.
	ErrStreamingMethod = errors.New("streaming methods are not supported by this entity kind")
	// ErrInvalidType: a type parameter is not a concrete generated message type, or a handler is nil.
	ErrInvalidType = errors.New("invalid handler")
	// ErrNoEventHandler: an event has no event handler for its type, when emitted or replayed.
	ErrNoEventHandler = errors.New("no event handler for event type")
	// ErrUnknownSnapshot: a snapshot's type is neither the state type nor a type registered
	// with Snapshot.
	ErrUnknownSnapshot = errors.New("unknown snapshot type")
	// ErrNilMessage: a nil message was emitted, forwarded or sent as a side effect, or a handler
	// returned a nil state.
	ErrNilMessage = errors.New("nil message")
	// ErrAlreadyForwarded: Forward was called twice in one command, or a handler both forwarded
	// and returned a reply.
	ErrAlreadyForwarded = errors.New("command already forwarded")
	// ErrProtocol: the proxy broke Cloudstate protocol 0.2 (for example, a stream that does not
	// start with init). The stream fails.
	ErrProtocol = errors.New("cloudstate protocol violation")
	// ErrPanic: user code panicked. Wrapped with the panic value.
	ErrPanic = errors.New("panic in user code")
	// ErrStreamingMismatch: an action handler was registered with a function for another gRPC
	// shape than the method's (for example ActionUnary for a streamed-out method).
	ErrStreamingMismatch = errors.New("handler shape does not match the method")
	// ErrStreamClosed: an action's send function or context (Forward, SideEffect) was used after
	// the handler returned.
	ErrStreamClosed = errors.New("action already finished")
	// ErrIllegalChange: a change a CRDT cannot make, such as a negative GCounter increment or a
	// counter overflow. The handler that asked for it fails.
	ErrIllegalChange = errors.New("illegal CRDT change")
	// ErrReadOnly: a CRDT was changed where it may only be read: in an OnChange callback (which
	// then fails), or outside of any handler.
	ErrReadOnly = errors.New("CRDT is read-only here")
	// ErrEntityDeleted: a command reached a CRDT entity after it was deleted on this stream.
	ErrEntityDeleted = errors.New("entity deleted")
)

// DefinitionError reports a problem with an entity definition, found by Server.Register (or by
// sdktest, which registers the same way). It names the service, the method when the problem is
// about one method, and wraps one of the sentinel errors.
type DefinitionError struct {
	// Service is the full name of the entity's gRPC service.
	Service string
	// Method is the method's simple name, or empty.
	Method string
	// Err describes the problem and wraps a sentinel such as ErrTypeMismatch.
	Err error
}

// Error implements error.
func (e *DefinitionError) Error() string {
	if e.Method != "" {
		return fmt.Sprintf("sdk: entity %s, method %s: %v", e.Service, e.Method, e.Err)
	}
	return fmt.Sprintf("sdk: entity %s: %v", e.Service, e.Err)
}

// Unwrap returns the wrapped error.
func (e *DefinitionError) Unwrap() error { return e.Err }

// CommandError is a command failure: the client receives Description as the error message
// (gRPC status UNKNOWN through the proxy). CommandContext.Fail returns one. Any other non-nil
// error a command handler returns is a command failure too, with err.Error() as description.
type CommandError struct {
	// Description is the message the client sees.
	Description string
}

// Error implements error.
func (e *CommandError) Error() string { return e.Description }

// failureDescription is the text a client sees for a handler error.
func failureDescription(err error) string {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.Description
	}
	return err.Error()
}
