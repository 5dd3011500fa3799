// Package e2e runs kstate as users run it: separate `kstate` processes on one broker (the real
// Apache Kafka broker when KSTATE_KAFKA_BROKERS is set, kfake otherwise), driven over gRPC, with
// nodes killed (-9) and paused (SIGSTOP) under load. The checker reads the journal back from Kafka
// and holds it against every acknowledged command.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/examples/shoppingcart/domainpb"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

var kstateBin string

func TestMain(m *testing.M) {
	if bin := os.Getenv("KSTATE_E2E_BIN"); bin != "" {
		kstateBin = bin // a prebuilt binary (debugging)
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "kstate-e2e")
	if err != nil {
		panic(err)
	}
	kstateBin = filepath.Join(dir, "kstate")
	build := exec.Command("go", "build", "-race", "-o", kstateBin, "../cmd/kstate")
	if os.Getenv("KSTATE_E2E_NORACE") != "" {
		build = exec.Command("go", "build", "-o", kstateBin, "../cmd/kstate")
	}
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building kstate:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// node is one kstate process.
type node struct {
	id   string
	addr string
	cmd  *exec.Cmd
	log  *syncBuffer
	cc   *grpc.ClientConn
	dead atomic.Bool // killed; read by load workers
}

type cluster struct {
	t          *testing.T
	brokers    []string
	app        string
	partitions int32
	example    string // --example of every node; default shoppingcart
	nodes      []*node
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (c *cluster) start(id string) *node {
	t := c.t
	t.Helper()
	n := &node{id: id, addr: freeAddr(t), log: &syncBuffer{}}
	n.cmd = exec.Command(kstateBin, "serve",
		"--brokers", joinComma(c.brokers),
		"--namespace", c.app, // entity topics are <namespace>.<persistence id>.*: isolate runs
		"--app", c.app,
		"--partitions", strconv.Itoa(int(c.partitions)),
		"--listen", n.addr,
		"--node-id", id,
		"--data-dir", filepath.Join(t.TempDir(), id),
		"--example", c.exampleName(),
		"--session-timeout", "3s",
		"--log-level", "info",
	)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !n.dead.Load() {
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
			_ = n.cmd.Process.Kill()
			_, _ = n.cmd.Process.Wait()
		}
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", n.id, n.log.String())
		}
	})
	cc, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	n.cc = cc
	c.nodes = append(c.nodes, n)
	return n
}

// syncBuffer collects a process's output; the test reads it while the process writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLog polls the node's log until it contains s.
func (n *node) waitLog(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(n.log.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("node %s never logged %q within %v", n.id, s, within)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}
}

func (c *cluster) exampleName() string {
	if c.example == "" {
		return "shoppingcart"
	}
	return c.example
}

// waitServing polls the node's gRPC health until SERVING.
func (n *node) waitServing(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := healthpb.NewHealthClient(n.cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a bounded wait
	}
	t.Fatalf("node %s not SERVING within %v\n%s", n.id, within, n.log.String())
}

func (n *node) kill9(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = n.cmd.Process.Wait()
	n.dead.Store(true)
}

func joinComma(xs []string) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// ack is one acknowledged AddItem.
type ack struct {
	cart, product string
	via           string
	at            time.Time
}

// load drives AddItem commands with unique product ids against the live nodes until stop closes.
type load struct {
	mu     sync.Mutex
	acks   []ack
	errors map[string]int
	sent   int
	wait   func() // returns when every worker has stopped
}

func (c *cluster) runLoad(workers, carts int, seed int64, stop <-chan struct{}) *load {
	l := &load{errors: map[string]int{}}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(w)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := c.nodes[rng.Intn(len(c.nodes))]
				if n.dead.Load() {
					continue
				}
				cart := fmt.Sprintf("cart-%d", rng.Intn(carts))
				product := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := shoppingcartpb.NewShoppingCartClient(n.cc).AddItem(ctx, &shoppingcartpb.AddLineItem{
					UserId: cart, ProductId: product, Name: product, Quantity: 1,
				})
				cancel()
				l.mu.Lock()
				l.sent++
				if err == nil {
					l.acks = append(l.acks, ack{cart: cart, product: product, via: n.id, at: time.Now()})
				} else {
					l.errors[fmt.Sprint(statusCode(err))]++
				}
				l.mu.Unlock()
			}
		}(w)
	}
	l.wait = wg.Wait
	return l
}

// journalEntry is one event of the shopping cart journal.
type journalEntry struct {
	cart, product string
	seq           int64
	cmd           string // kstate-command-id: node, partition and counter of the committing node
	offset        int64
}

func (c *cluster) journal(t *testing.T) []journalEntry {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.Brokers = c.brokers
	cfg.Namespace = c.app
	cfg.App = c.app
	cfg.Partitions = c.partitions
	topic := cfg.EventsTopic("shopping-cart")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []journalEntry
	for p := int32(0); p < c.partitions; p++ {
		parts := []broker.TopicPartitionFrom{{Topic: topic, Partition: p}}
		if err := c.readJournal(ctx, cfg, parts, &out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func (c *cluster) readJournal(ctx context.Context, cfg broker.Config, parts []broker.TopicPartitionFrom, out *[]journalEntry) error {
	_, err := broker.ReadToEnd(ctx, cfg, parts, func(r broker.Record) error {
		seqB, _ := r.HeaderValue(kstatev1.HeaderSequence)
		seq, err := strconv.ParseInt(string(seqB), 10, 64)
		if err != nil {
			return fmt.Errorf("offset %d: bad sequence header %q", r.Offset, seqB)
		}
		var ev domainpb.ItemAdded
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			return err
		}
		cmd, _ := r.HeaderValue(kstatev1.HeaderCommandID)
		*out = append(*out, journalEntry{cart: string(r.Key), product: ev.GetItem().GetProductId(), seq: seq, cmd: string(cmd), offset: r.Offset})
		return nil
	})
	return err
}

// check verifies the invariants of RELIABILITY.md T1-T4 on the journal: per-entity sequence
// numbers 1..k with no gap or duplicate, every acknowledged command present exactly once, no
// command applied twice, and state read back equal to the fold of the journal.
func (c *cluster) check(t *testing.T, l *load) {
	t.Helper()
	// The brokers write a committed transaction's markers just after EndTxn returns: read until
	// every acknowledged command is visible, or a deadline passes (then the check below fails).
	entries := c.journal(t)
	for deadline := time.Now().Add(10 * time.Second); !allAcked(entries, l) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // poll interval of a bounded wait
		entries = c.journal(t)
	}
	byCart := map[string][]journalEntry{}
	seen := map[string]int{}
	for _, e := range entries {
		byCart[e.cart] = append(byCart[e.cart], e)
		seen[e.cart+"/"+e.product]++
	}
	for cart, es := range byCart {
		for i, e := range es {
			if e.seq != int64(i+1) {
				t.Fatalf("cart %s: event %d has sequence %d (gap or duplicate: a split-brain symptom)", cart, i+1, e.seq)
			}
		}
	}
	for k, n := range seen {
		if n != 1 {
			var where []string
			for _, e := range entries {
				if e.cart+"/"+e.product == k {
					where = append(where, fmt.Sprintf("seq %d offset %d by %s", e.seq, e.offset, e.cmd))
				}
			}
			t.Fatalf("command %s applied %d times: %v", k, n, where)
		}
	}
	for _, a := range l.acks {
		if seen[a.cart+"/"+a.product] != 1 {
			t.Fatalf("acknowledged command %s/%s (via %s at %s) is not in the journal", a.cart, a.product, a.via, a.at.Format(time.RFC3339Nano))
		}
	}
	// State read back from any live node equals the fold of the journal.
	var live *node
	for _, n := range c.nodes {
		if !n.dead.Load() {
			live = n
			break
		}
	}
	for cart, es := range byCart {
		var want []string
		for _, e := range es {
			want = append(want, e.product)
		}
		sort.Strings(want)
		var got []string
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := shoppingcartpb.NewShoppingCartClient(live.cc).GetCart(ctx, &shoppingcartpb.GetShoppingCart{UserId: cart})
			cancel()
			if err == nil {
				got = got[:0]
				for _, it := range resp.GetItems() {
					got = append(got, it.GetProductId())
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GetCart %s: %v", cart, err)
			}
		}
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("cart %s read back %v, journal folds to %v", cart, got, want)
		}
	}
	t.Logf("checked %d journal events over %d carts; %d acknowledged of %d sent; errors by code %v",
		len(entries), len(byCart), len(l.acks), l.sent, l.errors)
}

func statusCode(err error) string { return status.Code(err).String() }

// allAcked reports whether every acknowledged command appears in entries.
func allAcked(entries []journalEntry, l *load) bool {
	have := make(map[string]bool, len(entries))
	for _, e := range entries {
		have[e.cart+"/"+e.product] = true
	}
	for _, a := range l.acks {
		if !have[a.cart+"/"+a.product] {
			return false
		}
	}
	return true
}
