package processor

import (
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/core"
	"github.com/kstatehq/kstate/processor/internal/frontdoor"
	"github.com/kstatehq/kstate/processor/internal/metrics"
)

// The node's metrics are defined in processor/internal/metrics; the runtime reports to them with
// one call at each place something happens. This file holds the small translations those calls
// need.

var _ frontdoor.Observer = dispatcher{}

// ObserveCall counts a call of the user's services at the public port (frontdoor.Observer).
func (d dispatcher) ObserveCall(protocol string, code codes.Code) {
	d.n.met.IngressRequest(protocol, code)
}

// partMetrics returns the metrics of the owner's partition.
func (o *owner) partMetrics() *metrics.Partition { return o.n.met.Partition(o.p) }

// commandCode is the gRPC code a command's result reaches its caller with.
func commandCode(err error) codes.Code {
	if err == nil || errors.Is(err, catalog.ErrNoReply) {
		return codes.OK
	}
	return status.Code(frontdoor.ToStatus(err))
}

// outcomeLabel names a transaction outcome for kstate_partition_transactions_total.
func outcomeLabel(o core.Outcome) string {
	switch o {
	case core.Committed:
		return metrics.OutcomeCommitted
	case core.Aborted:
		return metrics.OutcomeAborted
	case core.Fenced:
		return metrics.OutcomeFenced
	case core.StorageFailed:
		return metrics.OutcomeStorageFailed
	}
	return metrics.OutcomeIndefinite
}

// streamError counts an entity stream that ended with err if the user function caused it: it
// crashed the entity (a failure message or a protocol error), or its stream broke or could not
// be opened. A stream restarted because the command's write failed — the partition moved, the
// transaction was aborted or its outcome is unknown, a record was too large — is the runtime's
// doing, not the function's, and is not counted.
func (n *Node) streamError(service string, err error) {
	if userFunctionFault(err) {
		n.met.StreamError(service)
	}
}

// userFunctionFault reports whether an entity stream error (a driver's handle) is the user
// function's: every error a write (owner.persist) returns wraps one of these runtime errors, and
// no error of the stream itself does.
func userFunctionFault(err error) bool {
	if errors.Is(err, errCrashed) {
		return true
	}
	for _, runtime := range []error{catalog.ErrNotOwner, catalog.ErrUnavailable, catalog.ErrOutcomeUnknown, catalog.ErrInvalidArgument} {
		if errors.Is(err, runtime) {
			return false
		}
	}
	return true
}

// actionCallError counts a unary action call the user function failed; one the caller
// cancelled or let expire is not the function's fault.
func (n *Node) actionCallError(service string, err error) {
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded:
		return
	}
	n.met.StreamError(service)
}

// observeCommand counts a command of m's service that ended with err (an entity command on a
// partition of this node, or an action), unless it never ran because the partition is not
// served here: the router retries that one at the owner, which counts it.
func (n *Node) observeCommand(m *catalog.Method, err error, start time.Time) {
	if errors.Is(err, catalog.ErrNotOwner) {
		return
	}
	n.met.Command(m.Service.Name, commandCode(err), time.Since(start))
}
