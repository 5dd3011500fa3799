package catalog

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kstatehq/kstate/processor/internal/core"
)

// Sentinel errors of the entity runtime. Wrap them with fmt.Errorf("...: %w", Err…) to add context;
// the front door's ToStatus maps each to the gRPC code a client sees.
var (
	// ErrOverloaded means a bounded queue is full; the command never ran and the client should back
	// off (RESOURCE_EXHAUSTED).
	ErrOverloaded = core.ErrOverloaded

	// ErrNotOwner means this node does not own the entity's partition (any more); the command never
	// ran here. Clients and the router retry against the current owner. Maps to codes.Unavailable.
	ErrNotOwner = core.ErrNotOwner

	// ErrOutcomeUnknown means the command's transaction may or may not have committed (a timeout
	// or a broken connection during the commit). Retrying it blindly may apply it twice; retry with
	// the same idempotency key, or read the entity first. Maps to codes.DeadlineExceeded, which
	// standard retry policies do not retry.
	ErrOutcomeUnknown = errors.New("outcome unknown: the command may or may not have been applied; retry only with the same idempotency key, or read the entity's state first")

	// ErrUnavailable means the command could not be served now but may succeed when retried, for
	// example while a partition restores or after an indefinite transaction outcome.
	// Maps to codes.Unavailable.
	ErrUnavailable = errors.New("unavailable")

	// ErrUnknownService means no entity of the app serves the named gRPC service.
	// Maps to codes.Unimplemented.
	ErrUnknownService = errors.New("unknown service")

	// ErrUnknownMethod means the service exists but has no such method. Maps to codes.Unimplemented.
	ErrUnknownMethod = errors.New("unknown method")

	// ErrUnknownEntity means a command, forward or side effect names an entity type (service) the
	// runtime does not serve. Maps to codes.Unimplemented.
	ErrUnknownEntity = errors.New("unknown entity")

	// ErrInvalidArgument means the request itself is wrong: a malformed payload, an empty or
	// oversized entity key. Maps to codes.InvalidArgument.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrClosed means the component has been shut down. Maps to codes.Unavailable.
	ErrClosed = errors.New("closed")

	// ErrNoReply is returned by a Dispatcher when the user function chose not to reply (Cloudstate's
	// empty client action). On a unary method the ingress then ends the call without a response
	// message, exactly as Cloudstate did; the client's library reports the missing message.
	ErrNoReply = errors.New("no reply")

	// ErrInvalidSpec is what every *SpecError unwraps to. Maps to codes.FailedPrecondition.
	ErrInvalidSpec = errors.New("invalid entity spec")

	// ErrProtocolVersion means the user function speaks a Cloudstate protocol version this proxy
	// does not. Maps to codes.FailedPrecondition.
	ErrProtocolVersion = errors.New("unsupported protocol version")
)

// CommandFailure is a command failure reported by the user function (Cloudstate's
// ClientAction.failure, or Failure in an action response). It is a terminal answer for the client,
// not a crash: Cloudstate mapped it to gRPC UNKNOWN (HTTP 500) with the description as message.
type CommandFailure struct {
	// Description is the user function's message, passed to the client verbatim.
	Description string
	// Restart asks the runtime to close, reopen and replay the entity without persisting the reply's
	// effects.
	Restart bool
}

// Error returns the failure's description.
func (f *CommandFailure) Error() string {
	return f.Description
}

// SpecProblem is one problem found in an entity spec.
type SpecProblem struct {
	// Service is the full service name the problem is about, or "" for the spec as a whole.
	Service string
	// Method is the method name the problem is about, or "" for the whole service.
	Method string
	// Problem says what is wrong and how to fix it.
	Problem string
}

// String renders the problem as "service.Method: problem".
func (p SpecProblem) String() string {
	switch {
	case p.Service == "":
		return p.Problem
	case p.Method == "":
		return p.Service + ": " + p.Problem
	default:
		return p.Service + "/" + p.Method + ": " + p.Problem
	}
}

// SpecError lists every problem found in a user function's EntitySpec, so that one round of fixes
// can address all of them. It unwraps to ErrInvalidSpec.
type SpecError struct {
	// Problems holds one entry per problem, in spec order.
	Problems []SpecProblem
}

// Error lists the problems, one per line after a summary line.
func (e *SpecError) Error() string {
	var b strings.Builder
	n := len(e.Problems)
	if n == 1 {
		b.WriteString("invalid entity spec: ")
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "invalid entity spec (%d problems):", n)
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap returns ErrInvalidSpec.
func (e *SpecError) Unwrap() error { return ErrInvalidSpec }

// add appends a problem.
func (e *SpecError) add(service, method, format string, args ...any) {
	e.Problems = append(e.Problems, SpecProblem{Service: service, Method: method, Problem: fmt.Sprintf(format, args...)})
}

// errOrNil returns e when it holds problems, otherwise nil.
func (e *SpecError) errOrNil() error {
	if e == nil || len(e.Problems) == 0 {
		return nil
	}
	return e
}
