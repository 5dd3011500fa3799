package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/kstatehq/kstate/broker/kafkatest"
)

func newCluster(t *testing.T, nodes int) *cluster {
	return newClusterOf(t, nodes, "shoppingcart")
}

func newClusterOf(t *testing.T, nodes int, example string) *cluster {
	t.Helper()
	c := &cluster{t: t, brokers: kafkatest.Cluster(t), app: kafkatest.Unique(t, "e2e"), partitions: 6, example: example}
	for i := 0; i < nodes; i++ {
		c.start("n" + string(rune('1'+i)))
	}
	for _, n := range c.nodes {
		n.waitServing(t, 60*time.Second)
	}
	return c
}

// TestKillOwnerUnderLoad: three nodes, load on all of them, kill -9 one; its partitions move and
// nothing acknowledged is lost or applied twice (RELIABILITY.md T1/T2).
func TestKillOwnerUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("separate processes and a kill -9: not in -short")
	}
	c := newCluster(t, 3)
	stop := make(chan struct{})
	l := c.runLoad(8, 40, 1, stop)
	waitAcks(t, l, 200, 30*time.Second)
	c.nodes[0].kill9(t)
	killedAt := time.Now()
	before := countAcks(l)
	// Load goes on against the survivors until they have acknowledged plenty more.
	waitAcks(t, l, before+400, 60*time.Second)
	close(stop)
	l.wait()
	t.Logf("killed %s at %s; %d acknowledged after it", c.nodes[0].id, killedAt.Format(time.TimeOnly), countAcks(l)-before)
	c.check(t, l)
}

// TestPausedOwnerIsFenced: a node paused past its session timeout (SIGSTOP) loses its partitions;
// when it resumes it must neither write to the journal nor acknowledge a command on stale
// ownership (RELIABILITY.md F1/F2, T3).
func TestPausedOwnerIsFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("separate processes and SIGSTOP: not in -short")
	}
	c := newCluster(t, 3)
	stop := make(chan struct{})
	l := c.runLoad(8, 40, 2, stop)
	waitAcks(t, l, 200, 30*time.Second)
	z := c.nodes[0]
	if err := z.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	before := countAcks(l)
	// Past the 3 s session timeout the group moves the zombie's partitions to the others.
	waitAcks(t, l, before+300, 60*time.Second)
	if err := z.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The zombie learns it lost its partitions and stops serving them.
	z.waitLog(t, "partitions revoked", 30*time.Second)
	resumed := countAcks(l)
	waitAcks(t, l, resumed+300, 60*time.Second)
	close(stop)
	l.wait()
	c.check(t, l)
}

func countAcks(l *load) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

func waitAcks(t *testing.T, l *load, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for countAcks(l) < n {
		if time.Now().After(deadline) {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("only %d of %d acknowledgements within %v (sent %d, errors %v)", len(l.acks), n, within, l.sent, l.errors)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}
}
