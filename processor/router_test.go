package processor

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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

func TestSameType(t *testing.T) {
	if !sameType("type.googleapis.com/a.B", "type.googleapis.com/a.B") || !sameType("example.com/x/a.B", "type.googleapis.com/a.B") || sameType("type.googleapis.com/a.C", "type.googleapis.com/a.B") {
		t.Fatal("sameType compares by message name")
	}
}
