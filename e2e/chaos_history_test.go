package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Entity kinds of the chaos workload.
const (
	kindES    = "es"    // com.example.shoppingcart.ShoppingCart (event-sourced)
	kindValue = "value" // com.example.valueentity.shoppingcart.ShoppingCart (value entity)
)

// Outcomes of a client operation.
const (
	outOK   = "ok"
	outFail = "fail" // definitely not executed
	outInfo = "info" // indeterminate: may or may not have happened
)

// chaosOp is one client operation of the history: an AddItem with a product id used by no other
// command (a write) or a GetCart (a read).
type chaosOp struct {
	Client  int
	Kind    string
	Entity  string
	Write   bool
	Product string // writes: the unique product id
	Node    string // the node the client sent it to
	Phase   string
	Call    time.Duration // since the history's start (monotonic)
	Return  time.Duration
	Outcome string
	Code    string
	Msg     string
	Items   string // reads: the canonical cart (sorted product ids; "id*q" for a quantity q ≠ 1)
	Key     string // the idempotency key of a retrying client's operation, "" for none
	Attempt int    // 0 for the first attempt, then one per retry with the same key
}

// logicalOps folds the attempts of each keyed operation (a retrying client's, same client and key)
// into the one logical operation they are: its interval runs from the first attempt's call to the
// last attempt's return, since the first attempt may be the one that ran (a retry is then answered
// with its remembered outcome); its outcome and answer are the strongest attempt's (mergeAttempt).
// Operations without a key are kept as they are, in order.
func logicalOps(ops []*chaosOp) []*chaosOp {
	type id struct {
		client int
		key    string
	}
	at := map[id]int{} // where each logical operation is in out
	var out []*chaosOp
	for _, o := range ops {
		if o.Key == "" {
			out = append(out, o)
			continue
		}
		k := id{o.Client, o.Key}
		i, seen := at[k]
		if !seen {
			at[k] = len(out)
			out = append(out, o)
			continue
		}
		m := mergeAttempt(out[i], o)
		m.Return = max(out[i].Return, o.Return)
		out[i] = m
	}
	return out
}

// mergeAttempt folds another attempt o of the same add into prev (nil at first): the strongest
// outcome any attempt had (acknowledged, then indeterminate, then failed) and the earliest call,
// since any attempt that ran may be the one that took effect.
func mergeAttempt(prev, o *chaosOp) *chaosOp {
	if prev == nil {
		return o
	}
	rank := map[string]int{outFail: 0, outInfo: 1, outOK: 2}
	best := *prev
	if rank[o.Outcome] > rank[prev.Outcome] {
		best = *o
	}
	best.Call = min(prev.Call, o.Call)
	return &best
}

func (o *chaosOp) key() string { return o.Kind + "/" + o.Entity }

func (o *chaosOp) String() string {
	what := "read"
	if o.Write {
		what = "add " + o.Product
	}
	s := fmt.Sprintf("client %d %s %s/%s via %s [%s .. %s] %s", o.Client, what, o.Kind, o.Entity, o.Node,
		fmtDur(o.Call), fmtDur(o.Return), o.Outcome)
	if o.Code != "" {
		s += " " + o.Code
	}
	if !o.Write && o.Outcome == outOK {
		s += fmt.Sprintf(" -> %d items", itemCount(o.Items))
	}
	return s
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

// history collects operations from every client.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []*chaosOp
}

func (h *history) now() time.Duration { return time.Since(h.start) }

func (h *history) add(op *chaosOp) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

func (h *history) snapshot() []*chaosOp {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*chaosOp(nil), h.ops...)
}

// classify sorts an error into definitely-failed or indeterminate, conservatively: only refusals
// that happen before a command can have run count as failed.
func classify(err error) (outcome, code, msg string) {
	if err == nil {
		return outOK, "", ""
	}
	st := status.Convert(err)
	code, msg = st.Code().String(), st.Message()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.Unimplemented, codes.ResourceExhausted, codes.FailedPrecondition:
		// The request was refused before it reached an entity (bad input, unknown method, a full
		// bounded queue, an invalid entity spec).
		return outFail, code, msg
	case codes.Unavailable:
		switch {
		case strings.Contains(msg, "while dialing") || strings.Contains(msg, "connection refused"):
			// The client could not connect: the request never left the client.
			return outFail, code, msg
		case strings.Contains(msg, "has no reachable owner"):
			// The router's deadline passed while every attempt was refused before execution
			// (not the owner, peer not dialable): processor/router.go retries only those.
			return outFail, code, msg
		}
	}
	// DeadlineExceeded, Unavailable after sending (commit outcome unknown, connection reset),
	// Unknown, Internal, ...: the command may have been applied.
	return outInfo, code, msg
}

// canonicalItems renders a cart as sorted product ids, marking quantities other than 1 (a
// duplicate application of a unique AddItem shows as "id*2").
func canonicalItems(ids []string, qty []int32) string {
	type it struct {
		id string
		q  int32
	}
	its := make([]it, len(ids))
	for i := range ids {
		its[i] = it{ids[i], qty[i]}
	}
	sort.Slice(its, func(a, b int) bool { return its[a].id < its[b].id })
	parts := make([]string, len(its))
	for i, x := range its {
		if x.q == 1 {
			parts[i] = x.id
		} else {
			parts[i] = fmt.Sprintf("%s*%d", x.id, x.q)
		}
	}
	return strings.Join(parts, ",")
}

func splitItems(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func itemCount(s string) int { return len(splitItems(s)) }

// setAdd returns the canonical set s with id inserted.
func setAdd(s, id string) string {
	parts := splitItems(s)
	i := sort.SearchStrings(parts, id)
	if i < len(parts) && parts[i] == id {
		return s
	}
	parts = append(parts, "")
	copy(parts[i+1:], parts[i:])
	parts[i] = id
	return strings.Join(parts, ",")
}

// Porcupine model: per entity, the state is the set of added product ids; an add always succeeds
// and inserts its id; a read must return exactly the state.
type setInput struct {
	key     string // kind/entity: the partition of the model
	write   bool
	product string
	op      *chaosOp
}

var cartSetModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(setInput).key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in := state.(string), input.(setInput)
		if in.write {
			return true, setAdd(s, in.product)
		}
		return output.(string) == s, s
	},
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		_, _ = h.Write([]byte(state.(string)))
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in := input.(setInput)
		if in.write {
			if in.op.Outcome == outInfo {
				return fmt.Sprintf("add %s (indeterminate %s) via %s", in.product, in.op.Code, in.op.Node)
			}
			return fmt.Sprintf("add %s via %s", in.product, in.op.Node)
		}
		return fmt.Sprintf("read via %s -> %d items: %s", in.op.Node, itemCount(output.(string)), tail(output.(string), 6))
	},
	DescribeState: func(state any) string {
		s := state.(string)
		return fmt.Sprintf("%d items: %s", itemCount(s), tail(s, 6))
	},
}

// tail shows the last n items of a canonical set (the newest ids sort last per client).
func tail(s string, n int) string {
	parts := splitItems(s)
	if len(parts) <= n {
		return s
	}
	return "…," + strings.Join(parts[len(parts)-n:], ",")
}

// porcupineHistory turns the chaos history into porcupine operations: acknowledged operations with
// their times; indeterminate adds with a return time after everything else (they may take effect
// at any point after their call, or never), dropped when no read ever observed their id (then
// "never" is the only consistent choice and the checker need not search it); failed operations and
// indeterminate reads are left out (they constrain nothing).
func porcupineHistory(ops []*chaosOp) []porcupine.Operation {
	observed := map[string]bool{}
	var maxT time.Duration
	for _, o := range ops {
		if !o.Write && o.Outcome == outOK {
			for _, id := range splitItems(o.Items) {
				observed[o.key()+"/"+strings.SplitN(id, "*", 2)[0]] = true
			}
		}
		maxT = max(maxT, o.Call, o.Return)
	}
	infinity := int64(maxT) + 1
	var out []porcupine.Operation
	for _, o := range ops {
		in := setInput{key: o.key(), write: o.Write, product: o.Product, op: o}
		switch {
		case o.Outcome == outOK:
			out = append(out, porcupine.Operation{ClientId: o.Client, Input: in, Output: o.Items, Call: int64(o.Call), Return: int64(o.Return)})
		case o.Outcome == outInfo && o.Write && observed[o.key()+"/"+o.Product]:
			out = append(out, porcupine.Operation{ClientId: o.Client, Input: in, Output: "", Call: int64(o.Call), Return: infinity})
		}
	}
	return out
}

// linResult is porcupine's verdict on one entity.
type linResult struct {
	key    string
	ops    int
	result porcupine.CheckResult
	html   string
}

// checkLinearizable runs porcupine per entity; for an entity whose history is not linearizable it
// writes the visualization into outDir.
func checkLinearizable(ops []*chaosOp, outDir string, timeout time.Duration) []linResult {
	hist := porcupineHistory(ops)
	var results []linResult
	for _, part := range cartSetModel.Partition(hist) {
		key := part[0].Input.(setInput).key
		res := porcupine.CheckOperationsTimeout(cartSetModel, part, timeout)
		lr := linResult{key: key, ops: len(part), result: res}
		if res == porcupine.Illegal {
			_, info := porcupine.CheckOperationsVerbose(cartSetModel, part, timeout)
			lr.html = filepath.Join(outDir, "porcupine-"+strings.ReplaceAll(key, "/", "-")+".html")
			if err := porcupine.VisualizePath(cartSetModel, info, lr.html); err != nil {
				lr.html = "(visualization failed: " + err.Error() + ")"
			}
		}
		results = append(results, lr)
	}
	return results
}

// explainViolations finds the simple, explainable anomalies among acknowledged operations: a read
// missing an add acknowledged before the read was called (stale read / lost write), a read showing
// an id no command carried or one that definitely failed (phantom), a quantity other than 1
// (duplicate application), and an id seen by one read but missing from a later one (non-monotonic).
func explainViolations(ops []*chaosOp) []string {
	byKey := map[string][]*chaosOp{}
	for _, o := range ops {
		byKey[o.key()] = append(byKey[o.key()], o)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, explainEntity(k, byKey[k])...)
	}
	return out
}

// explainEntity checks one cart's operations in O(reads × items).
func explainEntity(k string, es []*chaosOp) []string {
	var out []string
	const perKind = 5 // reports of one kind per cart
	counts := map[string]int{}
	report := func(kind, format string, args ...any) {
		counts[kind]++
		if counts[kind] <= perKind {
			out = append(out, fmt.Sprintf("%s: %s: ", k, kind)+fmt.Sprintf(format, args...))
		}
	}
	attempted := map[string]*chaosOp{}
	var acked []*chaosOp // acknowledged adds by return time
	var reads []*chaosOp // acknowledged reads by call time
	for _, o := range es {
		switch {
		case o.Write:
			attempted[o.Product] = mergeAttempt(attempted[o.Product], o)
			if o.Outcome == outOK {
				acked = append(acked, o)
			}
		case o.Outcome == outOK:
			reads = append(reads, o)
		}
	}
	sort.Slice(acked, func(i, j int) bool { return acked[i].Return < acked[j].Return })
	sort.Slice(reads, func(i, j int) bool { return reads[i].Call < reads[j].Call })
	ackedAt := map[string]time.Duration{}
	for _, w := range acked {
		ackedAt[w.Product] = w.Return
	}
	// firstSeen: the earliest return of a read showing the id.
	firstSeen := map[string]time.Duration{}
	items := make([][]string, len(reads))
	for i, r := range reads {
		for _, id := range splitItems(r.Items) {
			base, _, _ := strings.Cut(id, "*")
			items[i] = append(items[i], base)
			if f, ok := firstSeen[base]; !ok || r.Return < f {
				firstSeen[base] = r.Return
			}
		}
	}
	seenTimes := make([]time.Duration, 0, len(firstSeen))
	for _, f := range firstSeen {
		seenTimes = append(seenTimes, f)
	}
	sort.Slice(seenTimes, func(i, j int) bool { return seenTimes[i] < seenTimes[j] })
	for i, r := range reads {
		for _, id := range splitItems(r.Items) {
			if base, q, dup := strings.Cut(id, "*"); dup {
				report("duplicate application", "%s shows %s with quantity %s", r, base, q)
			}
		}
		have := make(map[string]bool, len(items[i]))
		for _, base := range items[i] {
			have[base] = true
			w := attempted[base]
			switch {
			case w == nil:
				report("phantom", "%s shows %s, which no command added", r, base)
			case w.Outcome == outFail:
				report("definitely-failed add applied", "%s shows %s (%s)", r, base, w)
			case w.Call > r.Return:
				report("read from the future", "%s shows %s (%s)", r, base, w)
			}
		}
		// Stale read: every add acknowledged before the read was called must be in it.
		need := sort.Search(len(acked), func(j int) bool { return acked[j].Return >= r.Call })
		got := 0
		for _, base := range items[i] {
			if at, ok := ackedAt[base]; ok && at < r.Call {
				got++
			}
		}
		if got < need {
			var missing []string
			for _, w := range acked[:need] {
				if !have[w.Product] {
					missing = append(missing, w.String())
				}
			}
			ex := missing[max(0, len(missing)-3):] // the latest ones
			report("stale read", "%s misses %d add(s) acknowledged before it was called, the latest: %s",
				r, len(missing), strings.Join(ex, "; "))
		}
		// Monotonic: every id a read returned before this read was called must be in it.
		need = sort.Search(len(seenTimes), func(j int) bool { return seenTimes[j] >= r.Call })
		got = 0
		for _, base := range items[i] {
			if f, ok := firstSeen[base]; ok && f < r.Call {
				got++
			}
		}
		if got < need {
			var missing []string
			for id, f := range firstSeen {
				if f < r.Call && !have[id] {
					missing = append(missing, id)
				}
			}
			sort.Strings(missing)
			report("non-monotonic reads", "%s misses %d id(s) an earlier read returned, e.g. %s", r, len(missing), missing[0])
		}
	}
	for kind, n := range counts {
		if n > perKind {
			out = append(out, fmt.Sprintf("%s: %s: … %d more", k, kind, n-perKind))
		}
	}
	return out
}

// writeOps writes the history as text, one operation a line, for replay and post-mortems.
func writeOps(path string, ops []*chaosOp) error {
	var b strings.Builder
	sorted := append([]*chaosOp(nil), ops...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	for _, o := range sorted {
		fmt.Fprintf(&b, "%s phase=%s", o, o.Phase)
		if o.Msg != "" {
			fmt.Fprintf(&b, " msg=%q", o.Msg)
		}
		if !o.Write && o.Outcome == outOK {
			fmt.Fprintf(&b, " items=%s", o.Items)
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	// The same as JSON lines, for TestChaosHistory.
	var j bytes.Buffer
	enc := json.NewEncoder(&j)
	for _, o := range sorted {
		if err := enc.Encode(o); err != nil {
			return err
		}
	}
	return os.WriteFile(strings.TrimSuffix(path, ".txt")+".jsonl", j.Bytes(), 0o644)
}

// readOps reads a history written by writeOps (the .jsonl file).
func readOps(path string) ([]*chaosOp, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ops []*chaosOp
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var o chaosOp
		if err := dec.Decode(&o); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ops = append(ops, &o)
	}
	return ops, nil
}

// TestChaosHistory re-checks a history TestChaos wrote (KSTATE_CHAOS_HISTORY=…/history.jsonl):
// porcupine and the anomaly finder, without a broker. Visualizations go next to the file.
func TestChaosHistory(t *testing.T) {
	path := os.Getenv("KSTATE_CHAOS_HISTORY")
	if path == "" {
		t.Skip("set KSTATE_CHAOS_HISTORY to a history.jsonl written by TestChaos")
	}
	ops, err := readOps(path)
	if err != nil {
		t.Fatal(err)
	}
	ops = logicalOps(ops)
	start := time.Now()
	for _, e := range explainViolations(ops) {
		t.Errorf("anomaly: %s", e)
	}
	t.Logf("anomaly finder: %d operations in %v", len(ops), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	for _, r := range checkLinearizable(ops, filepath.Dir(path), 2*time.Minute) {
		if r.result != porcupine.Ok {
			t.Errorf("porcupine: %s (%d operations): %s %s", r.key, r.ops, r.result, r.html)
		}
	}
	t.Logf("porcupine: %v", time.Since(start).Round(time.Millisecond))
}

// percentile of sorted durations.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(math.Ceil(p*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// TestChaosChecker holds the chaos suite's checkers against small hand-made histories: they must
// accept indeterminate adds either way and reject a stale read, a lost acknowledged add, a
// duplicate application and a phantom. No broker needed.
func TestChaosChecker(t *testing.T) {
	s := time.Second
	add := func(client int, product string, call, ret time.Duration, outcome string) *chaosOp {
		return &chaosOp{Client: client, Kind: kindES, Entity: "e", Write: true, Product: product, Node: "n1", Call: call, Return: ret, Outcome: outcome}
	}
	read := func(client int, items string, call, ret time.Duration) *chaosOp {
		return &chaosOp{Client: client, Kind: kindES, Entity: "e", Node: "n2", Call: call, Return: ret, Outcome: outOK, Items: items}
	}
	// attempt is attempt n of a retrying client's keyed operation op.
	attempt := func(op *chaosOp, key string, n int, call, ret time.Duration, outcome string) *chaosOp {
		a := *op
		a.Key, a.Attempt, a.Call, a.Return, a.Outcome = key, n, call, ret, outcome
		if outcome != outOK {
			a.Items = ""
		}
		return &a
	}
	cases := []struct {
		name   string
		ops    []*chaosOp
		legal  bool
		reason string // an explainViolations line must contain it when illegal
	}{
		{"sequential", []*chaosOp{add(0, "a", 0, s, outOK), read(1, "a", 2*s, 3*s)}, true, ""},
		{"concurrent read may miss", []*chaosOp{add(0, "a", 0, 3*s, outOK), read(1, "", s, 2*s)}, true, ""},
		{"indeterminate add seen", []*chaosOp{add(0, "a", 0, s, outInfo), read(1, "a", 2*s, 3*s), read(1, "a", 4*s, 5*s)}, true, ""},
		{"indeterminate add never seen", []*chaosOp{add(0, "a", 0, s, outInfo), read(1, "", 2*s, 3*s)}, true, ""},
		{"indeterminate add seen late", []*chaosOp{add(0, "a", 0, s, outInfo), read(1, "", 2*s, 3*s), read(1, "a", 4*s, 5*s)}, true, ""},
		{"stale read", []*chaosOp{add(0, "a", 0, s, outOK), add(0, "b", 2*s, 3*s, outOK), read(1, "a", 4*s, 5*s)}, false, "stale read"},
		{"non-monotonic", []*chaosOp{add(0, "a", 0, 10*s, outInfo), read(1, "a", s, 2*s), read(1, "", 3*s, 4*s)}, false, "non-monotonic"},
		{"duplicate", []*chaosOp{add(0, "a", 0, s, outOK), read(1, "a*2", 2*s, 3*s)}, false, "duplicate"},
		{"phantom", []*chaosOp{read(1, "zz", 2*s, 3*s)}, false, "phantom"},
		{"failed add applied", []*chaosOp{add(0, "a", 0, s, outFail), read(1, "a", 2*s, 3*s)}, false, "definitely-failed"},
		// A keyed read whose first attempt ran (its answer remembered) before an add, and whose
		// retry after the add is answered with the remembered cart: one operation from the
		// first call, so legal (TestChaos seed 7 found the need).
		{"keyed read answered from its first attempt", []*chaosOp{
			attempt(read(2, "", 0, 0), "k2-1", 0, 0, s, outInfo),
			add(5, "a", 2*s, 3*s, outOK),
			attempt(read(2, "", 0, 0), "k2-1", 1, 4*s, 5*s, outOK),
		}, true, ""},
		// A keyed add retried after a failure and acknowledged: applied once, seen once.
		{"keyed add retried", []*chaosOp{
			attempt(add(3, "b", 0, 0, outOK), "k3-1", 0, 0, s, outFail),
			attempt(add(3, "b", 0, 0, outOK), "k3-1", 1, 2*s, 3*s, outOK),
			read(1, "b", 4*s, 5*s),
		}, true, ""},
		// The same retried add must still not be lost.
		{"keyed add lost", []*chaosOp{
			attempt(add(3, "b", 0, 0, outOK), "k3-1", 0, 0, s, outInfo),
			attempt(add(3, "b", 0, 0, outOK), "k3-1", 1, 2*s, 3*s, outOK),
			read(1, "", 4*s, 5*s),
		}, false, "stale read"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ops := logicalOps(tc.ops)
			res := checkLinearizable(ops, t.TempDir(), 10*time.Second)
			legal := true
			for _, r := range res {
				if r.result != porcupine.Ok {
					legal = false
					if _, err := os.Stat(r.html); err != nil {
						t.Errorf("no visualization: %v", err)
					}
				}
			}
			if legal != tc.legal {
				t.Fatalf("porcupine says legal=%v, want %v", legal, tc.legal)
			}
			expl := explainViolations(ops)
			if tc.legal && len(expl) > 0 {
				t.Fatalf("anomalies in a linearizable history: %v", expl)
			}
			if !tc.legal && !strings.Contains(strings.Join(expl, "\n"), tc.reason) {
				t.Fatalf("anomalies %v, want one about %q", expl, tc.reason)
			}
		})
	}
}
