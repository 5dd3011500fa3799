package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/examples/valuecart/valuecartpb"
)

// chaosConfig is TestChaos's configuration; every field has an environment variable.
type chaosConfig struct {
	seed       int64           // KSTATE_CHAOS_SEED: nemesis schedule and client choices
	duration   time.Duration   // KSTATE_CHAOS_DURATION: the nemesis phase
	postHeal   time.Duration   // KSTATE_CHAOS_POSTHEAL: the phase after heal
	clients    int             // KSTATE_CHAOS_CLIENTS
	retrying   int             // KSTATE_CHAOS_RETRYING: how many of the clients retry with idempotency keys
	entities   int             // KSTATE_CHAOS_ENTITIES: carts of each kind
	partitions int32           // KSTATE_CHAOS_PARTITIONS
	session    time.Duration   // KSTATE_CHAOS_SESSION: the nodes' group session timeout
	opTimeout  time.Duration   // KSTATE_CHAOS_OP_TIMEOUT: client deadline per operation
	outDir     string          // KSTATE_CHAOS_OUT: where logs, history and visualizations go
	faults     map[string]bool // KSTATE_CHAOS_FAULTS: comma-separated fault kinds (default all)
	hotPct     int             // KSTATE_CHAOS_HOT: percent of operations on the hot carts
	writePct   int             // KSTATE_CHAOS_WRITES: percent of adds among fresh operations
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: want a duration such as 2m10s", name, v)
	}
	return d
}

func envInt(t *testing.T, name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: want an integer", name, v)
	}
	return n
}

func chaosConfigFromEnv(t *testing.T) chaosConfig {
	cfg := chaosConfig{
		seed:       envInt(t, "KSTATE_CHAOS_SEED", time.Now().UnixNano()%1_000_000_000),
		duration:   envDuration(t, "KSTATE_CHAOS_DURATION", 2*time.Minute+10*time.Second),
		postHeal:   envDuration(t, "KSTATE_CHAOS_POSTHEAL", 20*time.Second),
		clients:    int(envInt(t, "KSTATE_CHAOS_CLIENTS", 10)),
		retrying:   int(envInt(t, "KSTATE_CHAOS_RETRYING", 5)),
		entities:   int(envInt(t, "KSTATE_CHAOS_ENTITIES", 20)),
		partitions: int32(envInt(t, "KSTATE_CHAOS_PARTITIONS", 16)),
		session:    envDuration(t, "KSTATE_CHAOS_SESSION", 3*time.Second),
		opTimeout:  envDuration(t, "KSTATE_CHAOS_OP_TIMEOUT", 2*time.Second),
		outDir:     os.Getenv("KSTATE_CHAOS_OUT"),
		hotPct:     int(envInt(t, "KSTATE_CHAOS_HOT", 50)),
		writePct:   int(envInt(t, "KSTATE_CHAOS_WRITES", 50)),
	}
	cfg.faults = map[string]bool{}
	for _, f := range faultWeights {
		cfg.faults[f.kind] = true
	}
	if v := os.Getenv("KSTATE_CHAOS_FAULTS"); v != "" {
		cfg.faults = map[string]bool{}
		for _, k := range strings.Split(v, ",") {
			k = strings.TrimSpace(k)
			known := false
			for _, f := range faultWeights {
				known = known || f.kind == k
			}
			if !known {
				t.Fatalf("KSTATE_CHAOS_FAULTS: unknown fault %q (kinds: kill9, pause-long, restart-pause, pause, restart)", k)
			}
			cfg.faults[k] = true
		}
	}
	if cfg.hotPct < 0 || cfg.hotPct > 100 || cfg.writePct < 0 || cfg.writePct > 100 {
		t.Fatalf("KSTATE_CHAOS_HOT and KSTATE_CHAOS_WRITES are percentages: %d, %d", cfg.hotPct, cfg.writePct)
	}
	if cfg.retrying < 0 || cfg.retrying > cfg.clients {
		t.Fatalf("KSTATE_CHAOS_RETRYING=%d: between 0 and the %d clients", cfg.retrying, cfg.clients)
	}
	if cfg.clients < 1 || cfg.clients > 64 || cfg.entities < 1 || cfg.entities > 1000 || cfg.partitions < 1 || cfg.partitions > 256 {
		t.Fatalf("chaos configuration out of range: %+v", cfg)
	}
	return cfg
}

// TestChaos runs three `kstate serve` nodes (event-sourced and value carts) on the real Kafka
// broker under a seeded nemesis (kill -9 and restart, SIGSTOP/SIGCONT short and past the session
// timeout, graceful restarts) while clients add unique products and read carts. After the
// nemesis it heals the cluster, requires every node to serve again, and checks:
//   - linearizability of the acknowledged operations per cart with porcupine (indeterminate adds
//     may or may not have happened);
//   - the event-sourced journal read back read_committed: every acknowledged add exactly once, no
//     sequence gap or duplicate, nothing that definitely failed, the cart read back equal to the
//     fold;
//   - the value carts' final state: every acknowledged add, nothing that definitely failed.
//
// See docs/testing.md ("Chaos suite") for the environment variables and how to replay a seed.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: separate processes, kill -9, SIGSTOP and minutes of load; not in -short")
	}
	if os.Getenv("KSTATE_KAFKA_BROKERS") == "" {
		t.Skip("chaos suite needs a real Kafka broker: set KSTATE_KAFKA_BROKERS (bash scripts/kafka.sh start prints it)")
	}
	cfg := chaosConfigFromEnv(t)
	keepOut := cfg.outDir != ""
	if cfg.outDir == "" {
		dir, err := os.MkdirTemp("", "kstate-chaos-")
		if err != nil {
			t.Fatal(err)
		}
		cfg.outDir = dir
	} else if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !keepOut && !t.Failed() {
			_ = os.RemoveAll(cfg.outDir)
		} else {
			t.Logf("chaos output (node logs, history, visualizations): %s", cfg.outDir)
		}
	})
	var faults []string
	for _, f := range faultWeights {
		if cfg.faults[f.kind] {
			faults = append(faults, f.kind)
		}
	}
	t.Logf("chaos: seed %d (replay with KSTATE_CHAOS_SEED=%d), nemesis %v (%s), post-heal %v, %d clients (%d retrying with idempotency keys), %d carts of each kind, %d partitions, session %v, op timeout %v, %d%% on hot carts, %d%% adds",
		cfg.seed, cfg.seed, cfg.duration, strings.Join(faults, ","), cfg.postHeal, cfg.clients, cfg.retrying, cfg.entities, cfg.partitions, cfg.session, cfg.opTimeout, cfg.hotPct, cfg.writePct)

	c := &cluster{t: t, brokers: kafkatest.Cluster(t), app: kafkatest.Unique(t, "chaos"), partitions: cfg.partitions}
	cc := newChaosCluster(t, c, 3, cfg.session, cfg.outDir)
	if _, err := cc.waitAllServing(90 * time.Second); err != nil {
		t.Fatal(err)
	}

	h := &history{start: time.Now()}
	w := &chaosWorkload{cfg: cfg, cc: cc, h: h}
	var hotParts []int32
	w.all, w.hot, hotParts = chooseEntities(cfg)
	t.Logf("chaos: %d+%d carts; hot carts %v %v on partitions %v", len(w.all[kindES]), len(w.all[kindValue]), w.hot[kindES], w.hot[kindValue], hotParts)
	w.phase.Store("chaos")
	stopClients := make(chan struct{})
	var clientsWG sync.WaitGroup
	for i := 0; i < cfg.clients; i++ {
		clientsWG.Add(1)
		go func(i int) {
			defer clientsWG.Done()
			w.client(i, rand.New(rand.NewSource(cfg.seed+1+int64(i))), stopClients)
		}(i)
	}
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			close(stopClients)
			clientsWG.Wait()
		}
	}
	defer stopAll()

	// Warm up: some acknowledgements on a healthy cluster before the first fault.
	if err := w.waitOK(50, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	// Nemesis.
	nem := &nemesis{t: t, cc: cc, h: h, rng: rand.New(rand.NewSource(cfg.seed)), session: cfg.session, hotParts: hotParts, allowed: cfg.faults, w: w}
	chaosEnd := h.now() + cfg.duration
	nem.run(chaosEnd)

	// Heal: every node running, then all SERVING.
	for _, n := range cc.nodes {
		switch n.getState() {
		case nodePaused:
			_ = n.signal(syscall.SIGCONT)
		case nodeDown:
			cc.start(n)
		}
	}
	healAt := h.now()
	took, err := cc.waitAllServing(90 * time.Second)
	if err != nil {
		t.Errorf("after heal: %v", err)
	}
	t.Logf("heal at %s: all nodes SERVING after %v", fmtDur(healAt), took.Round(time.Millisecond))

	// Post-heal phase with the same clients.
	postStart := h.now()
	w.phase.Store("post-heal")
	time.Sleep(cfg.postHeal) // the phase's length, not a wait for a condition
	postEnd := h.now()
	stopAll()

	// Final reads of every cart (recorded in the history; porcupine checks them too).
	w.phase.Store("final")
	final := w.finalReads(t, 60*time.Second)

	ops := h.snapshot()
	if err := writeOps(filepath.Join(cfg.outDir, "history.txt"), ops); err != nil {
		t.Log(err)
	}

	var sum strings.Builder
	fmt.Fprintf(&sum, "chaos summary (seed %d, app %s)\n", cfg.seed, c.app)
	summarizeOps(&sum, ops)
	summarizeNemesis(&sum, nem.events, ops, healAt)
	postHealChecks(t, &sum, cc, ops, postStart, postEnd)

	// Journal audit and final states, on the logical operations (a retrying client's attempts of
	// one key are one operation).
	logical := logicalOps(ops)
	auditJournal(t, &sum, c, logical, final)
	auditValueCarts(t, &sum, logical, final)
	w.auditReplays(t, &sum)

	// Linearizability.
	expl := explainViolations(logical)
	lin := checkLinearizable(logical, cfg.outDir, 2*time.Minute)
	var illegal, unknown int
	for _, r := range lin {
		switch r.result {
		case porcupine.Illegal:
			illegal++
			t.Errorf("porcupine: %s (%d operations) is NOT linearizable; visualization: %s", r.key, r.ops, r.html)
		case porcupine.Unknown:
			unknown++
			t.Logf("porcupine: %s (%d operations): check timed out (inconclusive)", r.key, r.ops)
		}
	}
	fmt.Fprintf(&sum, "linearizability (porcupine, per cart): %d carts checked, %d not linearizable, %d inconclusive\n", len(lin), illegal, unknown)
	for i, e := range expl {
		if i == 20 {
			fmt.Fprintf(&sum, "  … %d more anomalies (see history.txt)\n", len(expl)-20)
			break
		}
		fmt.Fprintf(&sum, "  anomaly: %s\n", e)
	}
	if len(expl) > 0 {
		t.Errorf("%d anomalies among acknowledged operations (first: %s)", len(expl), expl[0])
	}
	_ = os.WriteFile(filepath.Join(cfg.outDir, "summary.txt"), []byte(sum.String()), 0o644)
	t.Log("\n" + sum.String())

	// Stop the nodes gracefully; every process must exit.
	for _, n := range cc.nodes {
		n.terminate(t, 30*time.Second)
	}
}

// chaosWorkload is the clients' side.
type chaosWorkload struct {
	cfg   chaosConfig
	cc    *chaosCluster
	h     *history
	phase atomic.Value // string
	okOps atomic.Int64
	all   map[string][]string // kind → every cart
	hot   map[string][]string // kind → the hot carts

	mu      sync.Mutex
	replays []replay // deliberate re-sends of acknowledged keyed operations
}

// replay is a deliberate re-send of an acknowledged keyed operation: it must be answered with the
// original reply (for a read, the cart as it was then, not as it is now).
type replay struct {
	orig, got *chaosOp
}

// retryBudget bounds how long a retrying client keeps re-sending one operation.
const retryBudget = 30 * time.Second

func entityName(kind string, i int) string {
	if kind == kindES {
		return fmt.Sprintf("es-cart-%d", i)
	}
	return fmt.Sprintf("vc-cart-%d", i)
}

// chooseEntities names the carts: cfg.entities of each kind, plus hot carts. The hot carts, four
// of each kind, all live on two partitions (those of es-cart-0 and vc-cart-0), so those two
// partitions commit nearly all the time: a SIGSTOP of their owner then often freezes it with a
// transaction in flight, the case where a zombie's read lease is renewed by a commit that
// returns after the pause (RELIABILITY.md F2).
func chooseEntities(cfg chaosConfig) (all, hot map[string][]string, hotParts []int32) {
	all, hot = map[string][]string{}, map[string][]string{}
	hotSet := map[int32]bool{
		broker.Partition([]byte(entityName(kindES, 0)), cfg.partitions):    true,
		broker.Partition([]byte(entityName(kindValue, 0)), cfg.partitions): true,
	}
	for p := range hotSet {
		hotParts = append(hotParts, p)
	}
	sort.Slice(hotParts, func(i, j int) bool { return hotParts[i] < hotParts[j] })
	for _, kind := range []string{kindES, kindValue} {
		for i := 0; i < cfg.entities; i++ {
			all[kind] = append(all[kind], entityName(kind, i))
		}
		for i := 0; i < 100_000 && len(hot[kind]) < 4; i++ {
			name := entityName(kind, i)
			if hotSet[broker.Partition([]byte(name), cfg.partitions)] {
				hot[kind] = append(hot[kind], name)
				if i >= cfg.entities {
					all[kind] = append(all[kind], name)
				}
			}
		}
	}
	return all, hot, hotParts
}

// pickEntity: half of the operations go to the hot carts of the kind (contention, busy
// partitions, longer histories where anomalies show), the rest spread over all carts.
func (w *chaosWorkload) pickEntity(rng *rand.Rand, kind string) string {
	if hot := w.hot[kind]; len(hot) > 0 && rng.Intn(100) < w.cfg.hotPct {
		return hot[rng.Intn(len(hot))]
	}
	all := w.all[kind]
	return all[rng.Intn(len(all))]
}

// client runs operations back to back until stop closes (or a count bound is reached). After an
// acknowledged add it often reads the same cart through a random node: a read that reaches a
// zombie owner then has an acknowledged add it must see.
func (w *chaosWorkload) client(id int, rng *rand.Rand, stop <-chan struct{}) {
	const maxOps = 1_000_000
	var last *chaosOp
	for seq := 0; seq < maxOps; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		op := &chaosOp{Client: id}
		if last != nil && last.Write && last.Outcome == outOK && rng.Intn(2) == 0 {
			op.Kind, op.Entity = last.Kind, last.Entity
		} else {
			op.Kind = kindES
			if rng.Intn(2) == 0 {
				op.Kind = kindValue
			}
			op.Entity = w.pickEntity(rng, op.Kind)
			if rng.Intn(100) < w.cfg.writePct {
				op.Write = true
				op.Product = fmt.Sprintf("c%d-%d", id, seq)
			}
		}
		n := w.cc.nodes[rng.Intn(len(w.cc.nodes))]
		if id < w.cfg.retrying {
			// A retrying client: every operation carries a key and is re-sent with it until it is
			// acknowledged, the way gRPC retry policies and HTTP client libraries behave.
			op.Key = fmt.Sprintf("k%d-%d", id, seq)
			op = w.untilOK(rng, op)
			if op.Outcome == outOK && rng.Intn(3) == 0 {
				w.replay(rng, op)
			}
			last = op
			continue
		}
		w.do(n, op, w.cfg.opTimeout)
		last = op
		if op.Outcome == outFail {
			// A refused operation returns at once (a dead node refuses connections): pace the
			// client so a down node does not turn into a busy loop.
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(10+rng.Intn(20)) * time.Millisecond):
			}
		}
	}
}

// untilOK runs a keyed operation through random nodes, re-sending it with the same key after every
// failure (each attempt is in the history), until it is acknowledged or retryBudget has passed.
// It returns the last attempt.
func (w *chaosWorkload) untilOK(rng *rand.Rand, op *chaosOp) *chaosOp {
	start := time.Now()
	for {
		w.do(w.cc.nodes[rng.Intn(len(w.cc.nodes))], op, w.cfg.opTimeout)
		if op.Outcome == outOK || time.Since(start) > retryBudget {
			return op
		}
		time.Sleep(time.Duration(10+rng.Intn(40)) * time.Millisecond) // the client's retry backoff
		next := *op
		next.Attempt++
		next.Outcome, next.Code, next.Msg, next.Items = "", "", "", ""
		op = &next
	}
}

// replay re-sends an acknowledged keyed operation (after a pause, through a random node, possibly
// across a fault) until it is answered, and records the answer for auditReplays. Replays are not
// in the history: a replayed read answers the past, which the linearizability check must not see.
func (w *chaosWorkload) replay(rng *rand.Rand, orig *chaosOp) {
	time.Sleep(time.Duration(rng.Intn(500)) * time.Millisecond) // let other operations and faults happen
	start := time.Now()
	for {
		again := *orig
		again.Outcome, again.Code, again.Msg, again.Items = "", "", "", ""
		w.run(w.cc.nodes[rng.Intn(len(w.cc.nodes))], &again, w.cfg.opTimeout)
		if again.Outcome == outOK || time.Since(start) > retryBudget || again.Code == codes.InvalidArgument.String() {
			w.mu.Lock()
			w.replays = append(w.replays, replay{orig: orig, got: &again})
			w.mu.Unlock()
			return
		}
		time.Sleep(time.Duration(10+rng.Intn(40)) * time.Millisecond)
	}
}

// auditReplays: every re-send of an acknowledged keyed operation was answered, and with the
// original reply — an add as acknowledged (not applied again: the journal audit counts), a read
// with the very cart the first answer showed.
func (w *chaosWorkload) auditReplays(t *testing.T, b *strings.Builder) {
	w.mu.Lock()
	defer w.mu.Unlock()
	problems, reads := 0, 0
	for _, r := range w.replays {
		switch {
		case r.got.Outcome != outOK:
			problems++
			if problems <= 20 {
				t.Errorf("replay of acknowledged %s (key %s) not answered within %v: %s %s", r.orig, r.orig.Key, retryBudget, r.got.Code, r.got.Msg)
			}
		case !r.orig.Write && r.got.Items != r.orig.Items:
			problems++
			if problems <= 20 {
				t.Errorf("replay of acknowledged %s (key %s) answered %d items, not the original %d: %s vs %s",
					r.orig, r.orig.Key, itemCount(r.got.Items), itemCount(r.orig.Items), tail(r.got.Items, 4), tail(r.orig.Items, 4))
			}
		}
		if !r.orig.Write {
			reads++
		}
	}
	var keyed, retries int
	for _, o := range w.h.snapshot() {
		if o.Key != "" {
			keyed++
			if o.Attempt > 0 {
				retries++
			}
		}
	}
	fmt.Fprintf(b, "retrying clients: %d keyed attempts (%d retries), %d replays of acknowledged operations (%d reads); %d problems\n",
		keyed, retries, len(w.replays), reads, problems)
}

// do runs one operation through node n and records it.
func (w *chaosWorkload) do(n *chaosNode, op *chaosOp, timeout time.Duration) {
	w.run(n, op, timeout)
	if op.Outcome == outOK {
		w.okOps.Add(1)
	}
	w.h.add(op)
}

// run runs one operation through node n and fills in its outcome.
func (w *chaosWorkload) run(n *chaosNode, op *chaosOp, timeout time.Duration) {
	op.Node = n.id
	op.Phase = w.phase.Load().(string)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if op.Key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "idempotency-key", op.Key)
	}
	var err error
	var ids []string
	var qty []int32
	op.Call = w.h.now()
	switch {
	case op.Kind == kindES && op.Write:
		_, err = shoppingcartpb.NewShoppingCartClient(n.cc).AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: op.Entity, ProductId: op.Product, Name: op.Product, Quantity: 1})
	case op.Kind == kindES:
		var cart *shoppingcartpb.Cart
		cart, err = shoppingcartpb.NewShoppingCartClient(n.cc).GetCart(ctx, &shoppingcartpb.GetShoppingCart{UserId: op.Entity})
		for _, it := range cart.GetItems() {
			ids, qty = append(ids, it.GetProductId()), append(qty, it.GetQuantity())
		}
	case op.Write:
		_, err = valuecartpb.NewShoppingCartClient(n.cc).AddItem(ctx, &valuecartpb.AddLineItem{UserId: op.Entity, ProductId: op.Product, Name: op.Product, Quantity: 1})
	default:
		var cart *valuecartpb.Cart
		cart, err = valuecartpb.NewShoppingCartClient(n.cc).GetCart(ctx, &valuecartpb.GetShoppingCart{UserId: op.Entity})
		for _, it := range cart.GetItems() {
			ids, qty = append(ids, it.GetProductId()), append(qty, it.GetQuantity())
		}
	}
	op.Return = w.h.now()
	op.Outcome, op.Code, op.Msg = classify(err)
	if err == nil && !op.Write {
		op.Items = canonicalItems(ids, qty)
	}
}

func (w *chaosWorkload) waitOK(n int64, within time.Duration) error {
	deadline := time.Now().Add(within)
	for w.okOps.Load() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d acknowledged operations within %v", w.okOps.Load(), within)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}
	return nil
}

// finalReads reads every cart once successfully (retrying within a deadline, rotating nodes);
// the result maps kind/entity to the canonical cart.
func (w *chaosWorkload) finalReads(t *testing.T, within time.Duration) map[string]string {
	out := map[string]string{}
	deadline := time.Now().Add(within)
	client := w.cfg.clients // a client id of its own
	try := 0
	for _, kind := range []string{kindES, kindValue} {
		for _, name := range w.all[kind] {
			for {
				op := &chaosOp{Client: client, Kind: kind, Entity: name}
				w.do(w.cc.nodes[try%len(w.cc.nodes)], op, 5*time.Second)
				try++
				if op.Outcome == outOK {
					out[op.key()] = op.Items
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("final read of %s/%s: no success within %v (last: %s %s)", kind, op.Entity, within, op.Code, op.Msg)
					break
				}
				time.Sleep(50 * time.Millisecond) // pause between retries of a bounded wait
			}
		}
	}
	return out
}

// nemesisEvent is one fault and its repair.
type nemesisEvent struct {
	Kind    string // kill9, pause, pause-long, restart, restart-pause
	Node    string
	Hold    time.Duration
	Start   time.Duration // fault injected
	Healed  time.Duration // process restarted or resumed
	Serving time.Duration // the node reported SERVING again (0: not waited for)
	Probes  int           // pause-long: reads sent to the frozen node (see nemesis.probe)
}

type nemesis struct {
	t       *testing.T
	cc      *chaosCluster
	h       *history
	rng     *rand.Rand
	session time.Duration
	events  []nemesisEvent
	// hotParts are the partitions of the hot carts.
	hotParts []int32
	allowed  map[string]bool // fault kinds to draw from
	w        *chaosWorkload  // for the probes
}

// probe spends the pause of node z: once the group has had time to move z's partitions (the
// session timeout plus a margin), it sends reads of the carts on the partitions z held (the hot
// carts if its log does not say) to the frozen z, one every 50 ms, each with a deadline past the
// pause. They wait in z's socket and are answered when z
// resumes, when z still believes it owns its old partitions; an answer from memory misses the
// adds the new owner acknowledged meanwhile, and porcupine sees a stale read. It returns after
// hold (the pause's length) with the probes still running; wg waits for them.
func (nm *nemesis) probe(z *chaosNode, hold time.Duration, wg *sync.WaitGroup) int {
	start := time.Now()
	// A generator of its own: how many probes fit in the pause depends on timing, and the
	// nemesis schedule must depend on the seed only.
	rng := rand.New(rand.NewSource(nm.rng.Int63()))
	from := min(hold, nm.session+700*time.Millisecond)
	time.Sleep(from) // the schedule: probes start late in the pause
	// Read the carts of the partitions z held when it froze (its log says which); without
	// that hint, the hot carts.
	var hot []chaosOp
	owned := map[int32]bool{}
	for _, p := range z.claimedPartitions(nm.w.cfg.partitions) {
		owned[p] = true
	}
	for _, kind := range []string{kindES, kindValue} {
		for _, e := range nm.w.all[kind] {
			if owned[broker.Partition([]byte(e), nm.w.cfg.partitions)] {
				hot = append(hot, chaosOp{Kind: kind, Entity: e})
			}
		}
	}
	if len(hot) == 0 {
		for _, kind := range []string{kindES, kindValue} {
			for _, e := range nm.w.hot[kind] {
				hot = append(hot, chaosOp{Kind: kind, Entity: e})
			}
		}
	}
	n := 0
	for i := 0; i < 200 && time.Since(start) < hold; i++ {
		op := hot[rng.Intn(len(hot))]
		op.Client = nm.w.cfg.clients + 1 // the prober's client id
		deadline := hold - time.Since(start) + nm.w.cfg.opTimeout
		wg.Add(1)
		go func(op chaosOp) {
			defer wg.Done()
			nm.w.do(z, &op, deadline)
		}(op)
		n++
		time.Sleep(50 * time.Millisecond) // the probes' pace
	}
	if rest := hold - time.Since(start); rest > 0 {
		time.Sleep(rest) // the rest of the pause
	}
	return n
}

// faultWeights is the default mix of faults (percent).
var faultWeights = []struct {
	kind   string
	weight int
}{
	{"kill9", 20},
	{"pause-long", 40},
	{"restart-pause", 12},
	{"pause", 12},
	{"restart", 16},
}

// pickFault draws a fault kind by weight, among the kinds KSTATE_CHAOS_FAULTS allows.
func (nm *nemesis) pickFault() string {
	total := 0
	for _, f := range faultWeights {
		if nm.allowed[f.kind] {
			total += f.weight
		}
	}
	r := nm.rng.Intn(total)
	for _, f := range faultWeights {
		if !nm.allowed[f.kind] {
			continue
		}
		if r < f.weight {
			return f.kind
		}
		r -= f.weight
	}
	panic("unreachable")
}

// run injects one fault at a time until end (history time), each healed before the next, so at
// least two nodes run at any moment. The schedule depends only on the seed.
func (nm *nemesis) run(end time.Duration) {
	const maxEvents = 200
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+nm.rng.Intn(hi-lo+1)) * time.Millisecond }
	for i := 0; i < maxEvents; i++ {
		quiet := ms(1500, 3500)
		if nm.h.now()+quiet >= end {
			return
		}
		time.Sleep(quiet) // the schedule's gap between faults
		n := nm.cc.nodes[nm.rng.Intn(len(nm.cc.nodes))]
		ev := nemesisEvent{Node: n.id}
		ev.Kind = nm.pickFault()
		switch ev.Kind {
		case "kill9":
			ev.Hold = ms(500, 4000)
		case "pause-long":
			// Past the session timeout: the group moves the partitions while the process is
			// frozen mid-whatever (a commit in flight, say), and it resumes as a zombie.
			ev.Hold = nm.session + ms(1000, 3000)
		case "restart-pause":
			// A restarted node frozen as soon as it is assigned partitions, while it fences
			// and restores them: it resumes as a zombie that just finished a restore.
			ev.Hold = nm.session + ms(1000, 3000)
		case "pause":
			ev.Hold = ms(300, int(nm.session.Milliseconds())/2)
		}
		if ev.Kind == "pause-long" && len(nm.hotParts) > 0 && nm.rng.Intn(3) > 0 {
			// Mostly freeze the owner of a hot partition: it is the likeliest to be committing.
			p := nm.hotParts[nm.rng.Intn(len(nm.hotParts))]
			if o := nm.cc.ownerHint(p); o != nil {
				n = o
				ev.Node = fmt.Sprintf("%s(owner of p%d)", n.id, p)
			} else {
				ev.Node = fmt.Sprintf("%s(p%d: no owner hint)", n.id, p)
			}
		}
		ev.Start = nm.h.now()
		var healed time.Duration
		switch ev.Kind {
		case "kill9":
			n.kill9(nm.t)
			time.Sleep(ev.Hold) // the fault's length
			nm.cc.start(n)
		case "pause", "pause-long":
			if err := n.signal(syscall.SIGSTOP); err != nil {
				nm.t.Errorf("SIGSTOP %s: %v", n.id, err)
			}
			n.setState(nodePaused)
			var probes sync.WaitGroup
			if ev.Kind == "pause-long" && nm.w != nil && len(nm.w.hot) > 0 {
				ev.Probes = nm.probe(n, ev.Hold, &probes)
			} else {
				time.Sleep(ev.Hold) // the fault's length
			}
			if err := n.signal(syscall.SIGCONT); err != nil {
				nm.t.Errorf("SIGCONT %s: %v", n.id, err)
			}
			n.setState(nodeStarted)
			healed = nm.h.now()
			probes.Wait() // each probe is bounded by its deadline
		case "restart":
			n.terminate(nm.t, 30*time.Second)
			nm.cc.start(n)
		case "restart-pause":
			n.terminate(nm.t, 30*time.Second)
			from := nm.cc.start(n)
			if err := n.waitLog(from, "partitions assigned", 60*time.Second); err != nil {
				nm.t.Errorf("nemesis: %v", err)
				return
			}
			ev.Start = nm.h.now() // the fault is the pause
			if err := n.signal(syscall.SIGSTOP); err != nil {
				nm.t.Errorf("SIGSTOP %s: %v", n.id, err)
			}
			n.setState(nodePaused)
			time.Sleep(ev.Hold) // the fault's length
			if err := n.signal(syscall.SIGCONT); err != nil {
				nm.t.Errorf("SIGCONT %s: %v", n.id, err)
			}
			n.setState(nodeStarted)
		}
		ev.Healed = healed
		if ev.Healed == 0 {
			ev.Healed = nm.h.now()
		}
		err := n.waitServing(90 * time.Second)
		ev.Serving = nm.h.now()
		nm.events = append(nm.events, ev)
		nm.t.Logf("nemesis: %-10s %s at %s, hold %v, healed %s, SERVING %s, probes %d", ev.Kind, ev.Node, fmtDur(ev.Start), ev.Hold.Round(time.Millisecond), fmtDur(ev.Healed), fmtDur(ev.Serving), ev.Probes)
		if err != nil {
			nm.t.Errorf("nemesis: %v", err)
			return
		}
	}
}

// summarizeOps counts operations by kind, type and outcome.
func summarizeOps(b *strings.Builder, ops []*chaosOp) {
	type k struct{ kind, what, phase string }
	counts := map[k]map[string]int{}
	codes := map[string]int{}
	for _, o := range ops {
		what := "read"
		if o.Write {
			what = "add"
		}
		kk := k{o.Kind, what, o.Phase}
		if counts[kk] == nil {
			counts[kk] = map[string]int{}
		}
		counts[kk][o.Outcome]++
		if o.Outcome != outOK {
			codes[o.Outcome+" "+o.Code]++
		}
	}
	var keys []k
	for kk := range counts {
		keys = append(keys, kk)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, c := keys[i], keys[j]
		if a.phase != c.phase {
			return a.phase < c.phase
		}
		if a.kind != c.kind {
			return a.kind < c.kind
		}
		return a.what < c.what
	})
	fmt.Fprintf(b, "operations: %d\n", len(ops))
	for _, kk := range keys {
		m := counts[kk]
		fmt.Fprintf(b, "  %-9s %-5s %-4s ok %6d  failed %5d  indeterminate %5d\n", kk.phase, kk.kind, kk.what, m[outOK], m[outFail], m[outInfo])
	}
	var cs []string
	for c, n := range codes {
		cs = append(cs, fmt.Sprintf("%s: %d", c, n))
	}
	sort.Strings(cs)
	fmt.Fprintf(b, "  errors by outcome and code: %s\n", strings.Join(cs, ", "))
}

// summarizeNemesis lists the faults with their recovery times: from the fault until the first
// acknowledged operation on a cart that had a failed or indeterminate operation after the fault
// (called after it, returned before the next fault), and until every such cart had been served
// again.
func summarizeNemesis(b *strings.Builder, events []nemesisEvent, ops []*chaosOp, healAt time.Duration) {
	fmt.Fprintf(b, "nemesis events: %d\n", len(events))
	byKind := map[string]int{}
	var firsts, alls []time.Duration
	for i, ev := range events {
		byKind[ev.Kind]++
		end := healAt
		if i+1 < len(events) {
			end = events[i+1].Start
		}
		firstFail := map[string]time.Duration{}
		for _, o := range ops {
			// Failed after this fault and before the next one began (an operation still in
			// flight when the next fault starts may be that one's).
			if o.Outcome != outOK && o.Call >= ev.Start && o.Return < end {
				if f, ok := firstFail[o.key()]; !ok || o.Call < f {
					firstFail[o.key()] = o.Call
				}
			}
		}
		recovered := map[string]time.Duration{}
		for _, o := range ops {
			f, ok := firstFail[o.key()]
			if ok && o.Outcome == outOK && o.Call >= f {
				if r, ok := recovered[o.key()]; !ok || o.Return < r {
					recovered[o.key()] = o.Return
				}
			}
		}
		line := fmt.Sprintf("  %-13s %-20s at %8s hold %6s healed +%6s SERVING +%6s", ev.Kind, ev.Node, fmtDur(ev.Start),
			ev.Hold.Round(time.Millisecond), (ev.Healed - ev.Start).Round(time.Millisecond), (ev.Serving - ev.Start).Round(time.Millisecond))
		if ev.Probes > 0 {
			line += fmt.Sprintf(" probes %d", ev.Probes)
		}
		if len(firstFail) == 0 {
			b.WriteString(line + "  no operation failed\n")
			continue
		}
		first, all := time.Duration(-1), time.Duration(0)
		for k := range firstFail {
			r, ok := recovered[k]
			if !ok {
				all = -1
				continue
			}
			if first < 0 || r-ev.Start < first {
				first = r - ev.Start
			}
			if all >= 0 && r-ev.Start > all {
				all = r - ev.Start
			}
		}
		allS := "never"
		if all >= 0 {
			allS = all.Round(time.Millisecond).String()
			alls = append(alls, all)
		}
		if first >= 0 {
			firsts = append(firsts, first)
		}
		fmt.Fprintf(b, "%s  %d carts affected, first served again +%v, all +%s\n", line, len(firstFail), first.Round(time.Millisecond), allS)
	}
	fmt.Fprintf(b, "  by kind: %v\n", byKind)
	if len(firsts) > 0 {
		fmt.Fprintf(b, "  recovery (fault → first success on an affected cart): p50 %v, max %v\n", percentile(firsts, 0.5).Round(time.Millisecond), percentile(firsts, 1).Round(time.Millisecond))
	}
	if len(alls) > 0 {
		fmt.Fprintf(b, "  recovery (fault → every affected cart served again):  p50 %v, max %v\n", percentile(alls, 0.5).Round(time.Millisecond), percentile(alls, 1).Round(time.Millisecond))
	}
}

// postHealChecks: after heal every node serves operations and every cart is served.
func postHealChecks(t *testing.T, b *strings.Builder, cc *chaosCluster, ops []*chaosOp, from, to time.Duration) {
	perNode := map[string][2]int{}
	served := map[string]bool{}
	keys := map[string]bool{}
	for _, o := range ops {
		keys[o.key()] = true
		if o.Phase != "post-heal" {
			continue
		}
		c := perNode[o.Node]
		if o.Outcome == outOK {
			c[0]++
			served[o.key()] = true
		} else {
			c[1]++
		}
		perNode[o.Node] = c
	}
	fmt.Fprintf(b, "post-heal %s..%s:", fmtDur(from), fmtDur(to))
	for _, n := range cc.nodes {
		c := perNode[n.id]
		fmt.Fprintf(b, " %s ok %d / not ok %d;", n.id, c[0], c[1])
		if c[0] == 0 {
			t.Errorf("post-heal: node %s acknowledged no operation (%d not ok)", n.id, c[1])
		}
	}
	var unserved []string
	for k := range keys {
		if !served[k] {
			unserved = append(unserved, k)
		}
	}
	sort.Strings(unserved)
	fmt.Fprintf(b, " carts without an acknowledged operation: %d %v\n", len(unserved), unserved)
}

// auditJournal reads the event-sourced journal back (read_committed) and holds it against the
// history: per cart sequence 1..k without gap or duplicate, every acknowledged add exactly once,
// nothing definitely failed, nothing no command carried, and the final read equal to the fold.
func auditJournal(t *testing.T, b *strings.Builder, c *cluster, ops []*chaosOp, final map[string]string) {
	acked := map[string]*chaosOp{}
	attempted := map[string]*chaosOp{}
	for _, o := range ops {
		if o.Kind == kindES && o.Write {
			attempted[o.Entity+"/"+o.Product] = mergeAttempt(attempted[o.Entity+"/"+o.Product], o)
			if o.Outcome == outOK {
				acked[o.Entity+"/"+o.Product] = o
			}
		}
	}
	// Commit markers may trail EndTxn: read until every acknowledged add is visible, bounded.
	entries := c.journal(t)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		have := map[string]bool{}
		for _, e := range entries {
			have[e.cart+"/"+e.product] = true
		}
		all := true
		for k := range acked {
			if !have[k] {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(200 * time.Millisecond) // poll interval of a bounded wait
		entries = c.journal(t)
	}
	byCart := map[string][]journalEntry{}
	count := map[string]int{}
	for _, e := range entries {
		byCart[e.cart] = append(byCart[e.cart], e)
		count[e.cart+"/"+e.product]++
	}
	problems := 0
	report := func(format string, args ...any) {
		problems++
		if problems <= 20 {
			t.Errorf("journal: "+format, args...)
		}
	}
	for cart, es := range byCart {
		for i, e := range es {
			if e.seq != int64(i+1) {
				report("cart %s: event %d at offset %d has sequence %d (gap or duplicate)", cart, i+1, e.offset, e.seq)
				break
			}
		}
		var ids []string
		var qty []int32
		for _, e := range es {
			ids, qty = append(ids, e.product), append(qty, 1)
		}
		fold := canonicalItems(ids, qty)
		if got, ok := final[kindES+"/"+cart]; ok && got != fold {
			report("cart %s: final read %d items differs from the journal's fold %d items", cart, itemCount(got), itemCount(fold))
		}
	}
	for k, n := range count {
		o := attempted[k]
		switch {
		case n > 1:
			report("%s applied %d times", k, n)
		case o == nil:
			report("%s in the journal but no command carried it", k)
		case o.Outcome == outFail:
			report("%s in the journal but its command definitely failed: %s %s", k, o, o.Msg)
		}
	}
	for k, o := range acked {
		if count[k] == 0 {
			report("acknowledged %s is not in the journal: %s", k, o)
		}
	}
	var info, infoIn int
	for k, o := range attempted {
		if o.Outcome == outInfo {
			info++
			if count[k] > 0 {
				infoIn++
			}
		}
	}
	fmt.Fprintf(b, "journal audit (event-sourced): %d events over %d carts, %d acknowledged adds, %d indeterminate of which %d committed; %d problems\n",
		len(entries), len(byCart), len(acked), info, infoIn, problems)
}

// auditValueCarts: the value carts' final state holds every acknowledged add, nothing that
// definitely failed, nothing no command carried, and every quantity 1.
func auditValueCarts(t *testing.T, b *strings.Builder, ops []*chaosOp, final map[string]string) {
	attempted := map[string]*chaosOp{}
	for _, o := range ops {
		if o.Kind == kindValue && o.Write {
			attempted[o.key()+"/"+o.Product] = mergeAttempt(attempted[o.key()+"/"+o.Product], o)
		}
	}
	problems := 0
	report := func(format string, args ...any) {
		problems++
		if problems <= 20 {
			t.Errorf("value carts: "+format, args...)
		}
	}
	var items, infoIn int
	for key, cart := range final {
		if !strings.HasPrefix(key, kindValue+"/") {
			continue
		}
		have := map[string]bool{}
		for _, id := range splitItems(cart) {
			items++
			base, q, dup := strings.Cut(id, "*")
			have[base] = true
			if dup {
				report("%s: %s has quantity %s (applied more than once)", key, base, q)
			}
			o := attempted[key+"/"+base]
			switch {
			case o == nil:
				report("%s: holds %s, which no command added", key, base)
			case o.Outcome == outFail:
				report("%s: holds %s, whose add definitely failed: %s %s", key, base, o, o.Msg)
			case o.Outcome == outInfo:
				infoIn++
			}
		}
		for k, o := range attempted {
			if strings.HasPrefix(k, key+"/") && o.Outcome == outOK && !have[o.Product] {
				report("%s: acknowledged add %s is missing from the final state: %s", key, o.Product, o)
			}
		}
	}
	fmt.Fprintf(b, "value carts final state: %d items, %d of them from indeterminate adds; %d problems\n", items, infoIn, problems)
}
