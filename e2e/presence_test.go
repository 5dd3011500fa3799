package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/kstatehq/kstate/examples/chat/chatpb"
)

// TestPresenceAcrossNodesAfterKill9: the chat example's presence on two `kstate serve` nodes. A
// user connected through node A is shown online by a monitor on node B; `kill -9` of A while the
// user is connected shows the user offline on B within the group session timeout (3 s) plus a
// second (issue 10: Vote membership follows the live nodes).
func TestPresenceAcrossNodesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("separate processes and a kill -9: not in -short")
	}
	c := newClusterOf(t, 2, "chat")
	a, b := c.nodes[0], c.nodes[1]
	mctx, mcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer mcancel()
	mon, err := chatpb.NewPresenceClient(b.cc).Monitor(mctx, &chatpb.User{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	statuses := make(chan bool, 64)
	go func() {
		defer close(statuses)
		for {
			st, err := mon.Recv()
			if err != nil {
				return
			}
			statuses <- st.GetOnline()
		}
	}()
	waitStatus := func(want bool, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		deadline := time.After(within)
		for {
			select {
			case online, ok := <-statuses:
				if !ok {
					t.Fatalf("the monitor stream ended waiting for online=%v", want)
				}
				if online == want {
					return time.Since(start)
				}
			case <-deadline:
				t.Fatalf("the monitor on %s did not show online=%v within %v", b.id, want, within)
			}
		}
	}
	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	if _, err := chatpb.NewPresenceClient(a.cc).Connect(cctx, &chatpb.User{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(true, 20*time.Second)
	a.kill9(t)
	took := waitStatus(false, 3*time.Second+time.Second+2*time.Second)
	t.Logf("offline on %s %v after kill -9 of %s (session timeout 3 s)", b.id, took.Round(time.Millisecond), a.id)
	if took > 3*time.Second+time.Second {
		t.Errorf("offline after %v, want within the session timeout plus a second (4 s)", took)
	}
}
