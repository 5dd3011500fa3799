package broker

import (
	"context"
	"errors"
	"net"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Unreachable reports whether err says Kafka could not be reached, or could not answer yet, so
// that the same call may succeed later: a failed dial (refused, unreachable network, a name that
// does not resolve yet), a connection the broker dropped, a request that timed out, or a
// retriable Kafka error (a coordinator or leader not available yet). An answer retrying cannot
// change — a topic that does not match kstate's layout, a persistence id of another app,
// authentication refused with a Kafka error — is not. A cancelled context is not either: the
// caller gave up.
func Unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, ErrTopicMismatch) || errors.Is(err, ErrClaimed) {
		return false
	}
	if ne, ok := errors.AsType[*net.OpError](err); ok && ne.Op == "dial" {
		return true
	}
	if _, ok := errors.AsType[*net.DNSError](err); ok {
		return true // e.g. a Kubernetes service name not published yet
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // a request's own timeout (the caller checks its context)
	}
	if ke, ok := errors.AsType[*kerr.Error](err); ok {
		return ke.Retriable
	}
	return kgo.IsRetryableBrokerErr(err)
}
