package processor

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/processor/internal/catalog"
)

// TestClassifyForward is the router's retry rule for every (transport status, peer trailer)
// pair: a retry elsewhere only when the command surely never ran.
func TestClassifyForward(t *testing.T) {
	dial := `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`
	notRun := metadata.Pairs(outcomeTrailer, outcomeNotRun)
	ran := metadata.Pairs(outcomeTrailer, outcomeRan)
	for _, tc := range []struct {
		name    string
		code    codes.Code
		msg     string
		trailer metadata.MD
		want    forwardOutcome
	}{
		{"dial failure", codes.Unavailable, dial, nil, forwardRetry},
		{"peer TLS handshake failure", codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate"`, nil, forwardRetry},
		{"peer refused our certificate", codes.Unavailable, `connection error: desc = "error reading server preface: remote error: tls: certificate required"`, nil, forwardRetry},
		{"peer: not the owner", codes.FailedPrecondition, notOwnerMsg + " 3 (node b)", notRun, forwardRetry},
		{"peer's UNAVAILABLE quoting a dial error", codes.Unavailable, dial, ran, forwardFinal},
		{"peer's UNAVAILABLE with connection refused inside", codes.Unavailable, "unavailable: commit: dial tcp: connection refused", ran, forwardFinal},
		{"peer's outcome unknown", codes.DeadlineExceeded, "outcome unknown", ran, forwardFinal},
		{"peer's command failure", codes.Unknown, "boom", ran, forwardFinal},
		{"not-owner text without the trailer", codes.FailedPrecondition, notOwnerMsg + " 3", nil, forwardFinal},
		{"connection reset after sending", codes.Unavailable, "error reading from server: EOF", nil, forwardUnknown},
		{"transport closing", codes.Unavailable, "transport is closing", nil, forwardUnknown},
		{"connection refused text without the dial prefix", codes.Unavailable, "unavailable: connection refused", nil, forwardUnknown},
		{"our deadline", codes.DeadlineExceeded, "context deadline exceeded", nil, forwardUnknown},
		{"our cancellation", codes.Canceled, "context canceled", nil, forwardUnknown},
		{"an old peer without trailers: invalid argument", codes.InvalidArgument, "bad", nil, forwardFinal},
	} {
		if got := classifyForward(status.Error(tc.code, tc.msg), tc.trailer); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestMayRetry is the router's retry rule over every kind of local error and forward outcome,
// with and without an idempotency key.
func TestMayRetry(t *testing.T) {
	dial := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)
	unknownFwd := fmt.Errorf("%w: forward to node b: transport is closing", catalog.ErrOutcomeUnknown)
	for _, tc := range []struct {
		name     string
		err      error
		neverRan bool
		plain    bool // without a key
		keyed    bool // with a key
	}{
		{"local: not the owner", catalog.ErrNotOwner, true, true, true},
		{"local: outcome unknown (indefinite commit)", fmt.Errorf("%w: commit: dial tcp: connection refused", catalog.ErrOutcomeUnknown), false, false, true},
		{"local: overloaded", catalog.ErrOverloaded, false, false, false},
		{"local: unavailable (aborted, never durable)", fmt.Errorf("%w: aborted", catalog.ErrUnavailable), false, false, false},
		{"local: invalid argument", catalog.ErrInvalidArgument, false, false, false},
		{"local: command failure", &catalog.CommandFailure{Description: "no"}, false, false, false},
		{"local: deadline", context.DeadlineExceeded, false, false, false},
		{"remote: dial failure", dial, true, true, true},
		{"remote: not the owner", fmt.Errorf("%w: %s", catalog.ErrNotOwner, notOwnerMsg), true, true, true},
		{"remote: broke after sending", unknownFwd, false, false, true},
		{"remote: the owner's UNAVAILABLE with connection refused inside", status.Error(codes.Unavailable, "unavailable: commit: dial tcp: connection refused"), false, false, false},
		{"remote: an owner's DEADLINE_EXCEEDED without the reason", status.Error(codes.DeadlineExceeded, "outcome unknown"), false, false, false},
		{"remote: the owner's outcome unknown (as tryOnce wraps it)", fmt.Errorf("%w (at node b)", catalog.ErrOutcomeUnknown), false, false, true},
	} {
		if got := mayRetry(tc.err, tc.neverRan, false); got != tc.plain {
			t.Errorf("%s, no key: %v, want %v", tc.name, got, tc.plain)
		}
		if got := mayRetry(tc.err, tc.neverRan, true); got != tc.keyed {
			t.Errorf("%s, keyed: %v, want %v", tc.name, got, tc.keyed)
		}
	}
}

func TestSameType(t *testing.T) {
	if !sameType("type.googleapis.com/a.B", "type.googleapis.com/a.B") || !sameType("example.com/x/a.B", "type.googleapis.com/a.B") || sameType("type.googleapis.com/a.C", "type.googleapis.com/a.B") {
		t.Fatal("sameType compares by message name")
	}
}
