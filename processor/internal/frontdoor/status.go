package frontdoor

import (
	"context"
	"errors"

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
//   - ErrOutcomeUnknown → codes.DeadlineExceeded (may have happened; not retried by retry policies)
//   - ErrNotOwner, ErrUnavailable, ErrClosed → codes.Unavailable (never ran: safe to retry)
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
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, catalog.ErrNotOwner), errors.Is(err, catalog.ErrUnavailable), errors.Is(err, catalog.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
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
