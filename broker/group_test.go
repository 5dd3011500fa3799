package broker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGroupLost: when the coordinator forgets the member (a heartbeat answered
// UNKNOWN_MEMBER_ID, as after a session expiry), Lost runs for every owned partition, and the
// member rejoins and is assigned again. Injected fault, so kfake only.
func TestGroupLost(t *testing.T) {
	c := newKfake(t, kfake.GroupMinSessionTimeout(time.Second))
	cfg := testConfig(t, target{brokers: c.ListenAddrs()})
	cfg.SessionTimeout = 1500 * time.Millisecond
	ctx := ctxFor(t, time.Minute)
	ensure(t, cfg, cfg.AppTopics(nil))

	var mu sync.Mutex
	var events []string
	note := func(what string) func(context.Context, []int32) {
		return func(_ context.Context, ps []int32) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, what)
			if len(ps) != int(cfg.Partitions) {
				t.Errorf("%s %v: want all %d partitions", what, ps, cfg.Partitions)
			}
		}
	}
	g, err := JoinGroup(ctx, cfg, "solo", GroupCallbacks{Assigned: note("assigned"), Revoked: note("revoked"), Lost: note("lost")})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	seen := func(want ...string) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(events, want)
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("timed out waiting for %s; callbacks so far: %v", what, events)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	poll("the first assignment", func() bool { return seen("assigned") })
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Group: cfg.GroupID(), TopLevel: true, Err: kerr.UnknownMemberID})
	poll("lost, then assigned again", func() bool { return seen("assigned", "lost", "assigned") })
	if got := g.Assignment(); len(got) != int(cfg.Partitions) {
		t.Fatalf("Assignment() = %v after rejoining", got)
	}
}
