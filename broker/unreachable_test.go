package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

func TestUnreachable(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"dial", fmt.Errorf("ensure topics: metadata: unable to dial: %w", dial), true},
		{"dns", fmt.Errorf("x: %w", &net.DNSError{Err: "no such host", Name: "kafka-0", IsNotFound: true}), true},
		{"request timeout", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), false},
		{"coordinator not available", fmt.Errorf("x: %w", kerr.CoordinatorNotAvailable), true},
		{"topic authorization", fmt.Errorf("x: %w", kerr.TopicAuthorizationFailed), false},
		{"mismatch", &TopicMismatchError{Topic: "t", Field: "partitions", Want: "3", Got: "4"}, false},
		{"claimed", &ClaimError{PersistenceID: "p", App: "a", Ours: "b"}, false},
		{"other", errors.New("boom"), false},
	} {
		if got := Unreachable(tc.err); got != tc.want {
			t.Errorf("%s: Unreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestUnreachableFromAdmin: what EnsureTopics returns with no broker listening is Unreachable.
func TestUnreachableFromAdmin(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:" + strconv.Itoa(port)}
	adm, err := NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = adm.EnsureTopics(ctx, cfg.AppTopics(nil))
	if err == nil || !Unreachable(err) {
		t.Fatalf("EnsureTopics with no broker = %v; Unreachable %v, want true", err, Unreachable(err))
	}
}
