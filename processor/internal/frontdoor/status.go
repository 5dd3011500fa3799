package frontdoor

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/processor/internal/catalog"
)

// ToStatus converts any error of the runtime into the gRPC status error a client receives. It is
// the one place that decides codes:
//
//   - nil → nil
//   - an error that already is a gRPC status (has GRPCStatus) → unchanged
//   - *CommandFailure → codes.Unknown with the description as message (Cloudstate behaviour)
//   - *SpecError, ErrInvalidSpec, ErrProtocolVersion → codes.FailedPrecondition
//   - ErrInvalidArgument → codes.InvalidArgument
//   - ErrUnknownService, ErrUnknownMethod, ErrUnknownEntity → codes.Unimplemented
//   - ErrOverloaded (a full bounded queue) → codes.ResourceExhausted
//   - ErrOutcomeUnknown → codes.DeadlineExceeded (may have happened; not retried by retry
//     policies), with an ErrorInfo detail of reason ReasonOutcomeUnknown
//   - ErrNotOwner, ErrUnavailable, ErrClosed → codes.Unavailable (never ran: safe to retry), with an
//     ErrorInfo detail of reason ReasonNotRun
//   - context.DeadlineExceeded → codes.DeadlineExceeded; context.Canceled → codes.Canceled
//   - a wrapped gRPC status (found with errors.As) → that status
//   - anything else → codes.Internal
//
// The message of a mapped error is err.Error(), so wrapping context reaches the client.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	var cf *catalog.CommandFailure
	if errors.As(err, &cf) {
		return status.Error(codes.Unknown, cf.Description)
	}
	switch {
	case errors.Is(err, catalog.ErrInvalidSpec), errors.Is(err, catalog.ErrProtocolVersion):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, catalog.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, catalog.ErrUnknownService), errors.Is(err, catalog.ErrUnknownMethod), errors.Is(err, catalog.ErrUnknownEntity):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, catalog.ErrOverloaded):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, catalog.ErrOutcomeUnknown):
		return withReason(codes.DeadlineExceeded, err.Error(), ReasonOutcomeUnknown)
	case errors.Is(err, catalog.ErrNotOwner), errors.Is(err, catalog.ErrUnavailable), errors.Is(err, catalog.ErrClosed):
		return withReason(codes.Unavailable, err.Error(), ReasonNotRun)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if st := se.GRPCStatus(); st != nil {
			return st.Err()
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// ErrorInfo reasons (google.rpc.ErrorInfo, domain ErrorDomain) that tell a client what happened to
// a command that did not succeed; docs/idempotency.md has the table.
const (
	// ErrorDomain is the domain of kstate's ErrorInfo details.
	ErrorDomain = "kstate.dev"
	// ReasonNotRun: the command did not run; retrying it is safe.
	ReasonNotRun = "NOT_RUN"
	// ReasonOutcomeUnknown: the command may or may not have been applied; retry it only with the
	// same idempotency key.
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
)

// withReason is a status with an ErrorInfo detail of reason.
func withReason(code codes.Code, msg, reason string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// HasReason reports whether err is a status carrying kstate's ErrorInfo detail of reason.
func HasReason(err error, reason string) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == ErrorDomain && ei.GetReason() == reason {
			return true
		}
	}
	return false
}
