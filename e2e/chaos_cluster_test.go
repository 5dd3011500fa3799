package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Node states as the chaos harness sees them.
const (
	nodeUp      = "up"
	nodePaused  = "paused"  // SIGSTOP
	nodeDown    = "down"    // killed or terminated, not yet restarted
	nodeStarted = "started" // restarted, maybe not SERVING yet
)

// chaosNode is one restartable `kstate serve` process: the same node id, address and data dir
// across restarts, so a restart is the same node coming back (warm Pebble store).
type chaosNode struct {
	id, addr, dataDir, logPath string
	cc                         *grpc.ClientConn

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has been waited for
	logf   *os.File
	state  string
	starts int
}

// chaosCluster runs the nodes of one app; c carries the broker settings the journal reader uses.
type chaosCluster struct {
	t       *testing.T
	c       *cluster
	session time.Duration
	outDir  string
	nodes   []*chaosNode
}

func newChaosCluster(t *testing.T, c *cluster, nodes int, session time.Duration, outDir string) *chaosCluster {
	t.Helper()
	cc := &chaosCluster{t: t, c: c, session: session, outDir: outDir}
	data := t.TempDir()
	for i := 0; i < nodes; i++ {
		id := "n" + strconv.Itoa(i+1)
		n := &chaosNode{id: id, addr: freeAddr(t), dataDir: filepath.Join(data, id), logPath: filepath.Join(outDir, id+".log"), state: nodeDown}
		conn, err := grpc.NewClient(n.addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Reconnect quickly after a restart: the default backoff grows to two minutes.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: time.Second,
			}))
		if err != nil {
			t.Fatal(err)
		}
		n.cc = conn
		cc.nodes = append(cc.nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range cc.nodes {
			n.forceStop()
			_ = n.cc.Close()
			n.mu.Lock()
			if n.logf != nil {
				_ = n.logf.Close()
			}
			n.mu.Unlock()
		}
	})
	for _, n := range cc.nodes {
		_ = cc.start(n)
	}
	return cc
}

func (cc *chaosCluster) args(n *chaosNode) []string {
	c := cc.c
	return []string{"serve",
		"--brokers", joinComma(c.brokers),
		"--namespace", c.app,
		"--app", c.app,
		"--partitions", strconv.Itoa(int(c.partitions)),
		"--listen", n.addr,
		"--node-id", n.id,
		"--data-dir", n.dataDir,
		"--example", "all", // the event-sourced cart, the value cart (and the validator action)
		"--session-timeout", cc.session.String(),
		"--log-level", "info",
	}
}

// start launches the node's process (first start or restart); its output is appended to its log.
// It returns the log offset where this start's output begins.
func (cc *chaosCluster) start(n *chaosNode) int64 {
	t := cc.t
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.logf == nil {
		f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		n.logf = f
	}
	n.starts++
	from, _ := n.logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(n.logf, "===== chaos: start #%d of %s at %s =====\n", n.starts, n.id, time.Now().Format(time.StampMicro))
	cmd := exec.Command(kstateBin, cc.args(n)...)
	cmd.Stdout, cmd.Stderr = n.logf, n.logf
	// If the test process dies (go test's -timeout panics past every cleanup), so do the nodes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", n.id, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	n.cmd, n.exited, n.state = cmd, exited, nodeStarted
	return from
}

// waitLog polls the node's log from offset from until it contains s, within a deadline.
func (n *chaosNode) waitLog(from int64, s string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if f, err := os.Open(n.logPath); err == nil {
			_, _ = f.Seek(from, io.SeekStart)
			b, _ := io.ReadAll(f)
			_ = f.Close()
			if bytes.Contains(b, []byte(s)) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s never logged %q within %v (log %s)", n.id, s, within, n.logPath)
		}
		time.Sleep(5 * time.Millisecond) // poll interval of a bounded wait
	}
}

func (n *chaosNode) getState() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

func (n *chaosNode) setState(s string) {
	n.mu.Lock()
	n.state = s
	n.mu.Unlock()
}

func (n *chaosNode) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return fmt.Errorf("%s has no process", n.id)
	}
	return n.cmd.Process.Signal(sig)
}

// waitExit waits (bounded) for the current process to have exited.
func (n *chaosNode) waitExit(within time.Duration) bool {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(within):
		return false
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (n *chaosNode) kill9(t *testing.T) {
	if err := n.signal(syscall.SIGKILL); err != nil {
		t.Errorf("kill -9 %s: %v", n.id, err)
	}
	if !n.waitExit(30 * time.Second) {
		t.Errorf("%s did not exit within 30s of SIGKILL", n.id)
	}
	n.setState(nodeDown)
}

// terminate stops the process gracefully (SIGTERM: it leaves the group and hands its partitions
// over); if it has not exited within the deadline it is killed and the test fails.
func (n *chaosNode) terminate(t *testing.T, within time.Duration) {
	_ = n.signal(syscall.SIGCONT)
	if err := n.signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM %s: %v", n.id, err)
	}
	if !n.waitExit(within) {
		t.Errorf("%s did not exit within %v of SIGTERM: killing it", n.id, within)
		_ = n.signal(syscall.SIGKILL)
		n.waitExit(30 * time.Second)
	}
	n.setState(nodeDown)
}

// forceStop is the cleanup: resume and kill whatever still runs.
func (n *chaosNode) forceStop() {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	n.waitExit(30 * time.Second)
}

// serving asks the node's gRPC health service once.
func (n *chaosNode) serving() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(n.cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// waitServing polls the node's health until SERVING, within a deadline.
func (n *chaosNode) waitServing(within time.Duration) error {
	deadline := time.Now().Add(within)
	for !n.serving() {
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not SERVING within %v (log %s)", n.id, within, n.logPath)
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded wait
	}
	n.setState(nodeUp)
	return nil
}

// waitAllServing polls every node until all report SERVING at the same time, within a deadline.
func (cc *chaosCluster) waitAllServing(within time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(within)
	for {
		all := true
		var notServing []string
		for _, n := range cc.nodes {
			if !n.serving() {
				all = false
				notServing = append(notServing, n.id)
			}
		}
		if all {
			for _, n := range cc.nodes {
				n.setState(nodeUp)
			}
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("nodes %v not SERVING within %v", notServing, within)
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded wait
	}
}

// claimsPartition reports whether the node's log says it holds partition p now: the last line
// about p since its latest start is "partition acquired", not a revocation or a give-up. It reads
// logs, so it is a hint for the nemesis, not a fact about the group.
func (n *chaosNode) claimsPartition(p int32) bool {
	b, err := n.currentLog()
	return err == nil && claims(b, n.id, p)
}

// claimedPartitions lists the partitions among 0..parts-1 the node's log says it holds now.
func (n *chaosNode) claimedPartitions(parts int32) []int32 {
	b, err := n.currentLog()
	if err != nil {
		return nil
	}
	var out []int32
	for p := int32(0); p < parts; p++ {
		if claims(b, n.id, p) {
			out = append(out, p)
		}
	}
	return out
}

// currentLog returns the node's log since its latest start.
func (n *chaosNode) currentLog() ([]byte, error) {
	n.mu.Lock()
	path := n.logPath
	n.mu.Unlock()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndex(b, []byte("===== chaos: start #")); i >= 0 {
		b = b[i:]
	}
	return b, nil
}

// claims reports whether log b (of node id) says the node holds p: see claimsPartition.
func claims(b []byte, id string, p int32) bool {
	acq := []byte(fmt.Sprintf("partition acquired: node=%s partition=%d ", id, p))
	gaveUp := []byte(fmt.Sprintf("giving up partition: node=%s partition=%d ", id, p))
	last := bytes.LastIndex(b, acq)
	if last < 0 {
		return false
	}
	if bytes.LastIndex(b, gaveUp) > last {
		return false
	}
	for _, marker := range []string{"partitions revoked: node=", "partitions lost: "} {
		for rest, off := b[last:], 0; ; {
			i := bytes.Index(rest[off:], []byte(marker))
			if i < 0 {
				break
			}
			line := rest[off+i:]
			if j := bytes.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			if listHas(line, p) {
				return false
			}
			off += i + len(marker)
		}
	}
	return true
}

// listHas reports whether a log line's "partitions=[a, b, c]" list holds p.
func listHas(line []byte, p int32) bool {
	i := bytes.Index(line, []byte("partitions=["))
	if i < 0 {
		return false
	}
	list := line[i+len("partitions=["):]
	if j := bytes.IndexByte(list, ']'); j >= 0 {
		list = list[:j]
	}
	for _, f := range bytes.Split(list, []byte(",")) {
		if string(bytes.TrimSpace(f)) == strconv.Itoa(int(p)) {
			return true
		}
	}
	return false
}

// ownerHint returns the one node whose log claims partition p, or nil.
func (cc *chaosCluster) ownerHint(p int32) *chaosNode {
	var found *chaosNode
	for _, n := range cc.nodes {
		if n.claimsPartition(p) {
			if found != nil {
				return nil
			}
			found = n
		}
	}
	return found
}
