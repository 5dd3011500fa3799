package broker

// The conformance suite: what kstate relies on from Kafka, checked against kfake always and
// against a real Apache Kafka broker when KSTATE_KAFKA_BROKERS is set (subtests "kfake" and
// "kafka"). Checks that only a real broker can answer say so and skip on kfake.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestConformanceTopics(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, time.Minute)
		adm, err := NewAdmin(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer adm.Close()
		specs := cfg.AppTopics(map[string]EntityKind{"cart": EventSourced, "prefs": Value, "presence": CRDT})
		if err := adm.EnsureTopics(ctx, specs); err != nil {
			t.Fatal(err)
		}
		// Idempotent: a second node (or a restart) ensures the same topics.
		if err := adm.EnsureTopics(ctx, specs); err != nil {
			t.Fatalf("second EnsureTopics: %v", err)
		}
		infos, err := adm.ListTopics(ctx, cfg.Namespace+".")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]TopicInfo{}
		for _, in := range infos {
			got[in.Name] = in
		}
		if len(got) != len(specs) {
			t.Fatalf("ListTopics found %d topics, want %d: %v", len(got), len(specs), infos)
		}
		for _, s := range specs {
			in, ok := got[s.Name]
			if !ok {
				t.Fatalf("topic %s not listed", s.Name)
			}
			if in.Partitions != s.Partitions || len(in.EndOffsets) != int(s.Partitions) || len(in.StartOffsets) != int(s.Partitions) {
				t.Errorf("%s: %d partitions (%d end offsets), want %d", s.Name, in.Partitions, len(in.EndOffsets), s.Partitions)
			}
			if in.CleanupPolicy != s.Configs["cleanup.policy"] {
				t.Errorf("%s: cleanup.policy %q, want %q", s.Name, in.CleanupPolicy, s.Configs["cleanup.policy"])
			}
			if s.Kind == Events && in.RetentionMs != -1 {
				t.Errorf("%s: retention.ms %d, want -1", s.Name, in.RetentionMs)
			}
		}

		// Mismatches are reported, never repaired. Partition count:
		wrongParts := []TopicSpec{{Name: cfg.EventsTopic("other"), Kind: Events, Partitions: 2, ReplicationFactor: -1,
			Configs: map[string]string{"cleanup.policy": "delete"}}}
		if err := adm.EnsureTopics(ctx, wrongParts); err != nil {
			t.Fatal(err)
		}
		wantParts := cfg.AppTopics(map[string]EntityKind{"other": EventSourced})
		err = adm.EnsureTopics(ctx, wantParts)
		checkMismatch(t, err, cfg.EventsTopic("other"), "partitions", "4", "2")
		// Cleanup policy: a snapshots topic created with delete.
		wrongPolicy := []TopicSpec{{Name: cfg.SnapshotsTopic("third"), Kind: Snapshots, Partitions: cfg.Partitions, ReplicationFactor: -1,
			Configs: map[string]string{"cleanup.policy": "delete"}}}
		if err := adm.EnsureTopics(ctx, wrongPolicy); err != nil {
			t.Fatal(err)
		}
		err = adm.EnsureTopics(ctx, cfg.AppTopics(map[string]EntityKind{"third": EventSourced}))
		checkMismatch(t, err, cfg.SnapshotsTopic("third"), "cleanup.policy", "compact", "delete")
		// Never re-created: the wrong topics are unchanged.
		infos, err = adm.ListTopics(ctx, cfg.EventsTopic("other"))
		if err != nil || len(infos) != 1 || infos[0].Partitions != 2 {
			t.Fatalf("mismatched topic changed: %v %v", infos, err)
		}
	})
}

func checkMismatch(t *testing.T, err error, topic, field, want, got string) {
	t.Helper()
	var tm *TopicMismatchError
	if !errors.As(err, &tm) || !errors.Is(err, ErrTopicMismatch) {
		t.Fatalf("want a *TopicMismatchError, got %v", err)
	}
	if tm.Topic != topic || tm.Field != field || tm.Want != want || tm.Got != got {
		t.Fatalf("mismatch %+v, want topic %s field %s want %s got %s", tm, topic, field, want, got)
	}
	msg := err.Error()
	for _, s := range []string{topic, field, "expected " + want, "found " + got} {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q does not name %q", msg, s)
		}
	}
}

// owner builds an ownership record for partition p.
func owner(cfg Config, p int32, node string) Record {
	return Record{Topic: cfg.OwnersTopic(), Partition: 0, Key: []byte(fmt.Sprint(p)), Value: []byte(node)}
}

func rec(topic string, p int32, key, value string) Record {
	return Record{Topic: topic, Partition: p, Key: []byte(key), Value: []byte(value),
		Headers: []Header{{Key: "seq", Value: []byte(value)}}}
}

func acquire(t *testing.T, cfg Config, p int32, node string) *TxnProducer {
	t.Helper()
	tp, err := NewTxnProducer(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Close)
	if err := tp.Acquire(ctxFor(t, 30*time.Second), owner(cfg, p, node)); err != nil {
		t.Fatalf("acquire partition %d as %s: %v", p, node, err)
	}
	return tp
}

func values(recs []Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Value))
	}
	return out
}

// settle waits (bounded) until a partition's read_committed end equals its high watermark: Kafka
// writes a committed transaction's markers just after EndTxn returns, so a read right after a
// commit may otherwise stop short of it. Use it only where no transaction is meant to be open.
func settle(t *testing.T, cfg Config, topic string, p int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := ctxFor(t, 30*time.Second)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		hw, err1 := adm.ListEndOffsets(ctx, topic)
		lso, err2 := adm.ListCommittedOffsets(ctx, topic)
		if err1 == nil && err2 == nil {
			h, ok1 := hw.Lookup(topic, p)
			l, ok2 := lso.Lookup(topic, p)
			if ok1 && ok2 && h.Err == nil && l.Err == nil && h.Offset == l.Offset {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}
	t.Fatalf("%s/%d: read_committed end never reached the high watermark", topic, p)
}

func mustRead(t *testing.T, cfg Config, parts ...TopicPartitionFrom) ([]Record, map[string]int64) {
	t.Helper()
	var recs []Record
	next, err := ReadToEnd(ctxFor(t, 30*time.Second), cfg, parts, func(r Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, next
}

func TestConformanceTransactionsVisibility(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, time.Minute)
		ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
		events := cfg.EventsTopic("cart")

		// Aborted #1: a raw franz-go transactional producer aborts three records.
		raw, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.TransactionalID(cfg.Namespace+".raw"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		if err := raw.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := raw.ProduceSync(ctx, &kgo.Record{Topic: events, Partition: 1, Value: []byte(fmt.Sprintf("aborted-raw-%d", i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := raw.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Fatal(err)
		}

		// Aborted #2: Acquire leaves a transaction open; Close aborts it.
		zombie, err := NewTxnProducer(cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := zombie.Acquire(ctx, rec(events, 1, "k", "aborted-owner")); err != nil {
			t.Fatal(err)
		}
		zombie.Close()

		// Committed: ownership, then two transactions of events.
		tp := acquire(t, cfg, 1, "node-a")
		if _, err := tp.Commit(ctx, nil); err != nil {
			t.Fatalf("publish ownership: %v", err)
		}
		var committed []Record
		for batch := 0; batch < 2; batch++ {
			var recs []Record
			for i := 0; i < 3; i++ {
				recs = append(recs, rec(events, 1, fmt.Sprintf("cart-%d", i), fmt.Sprintf("committed-%d-%d", batch, i)))
			}
			out, err := tp.Commit(ctx, recs)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range out {
				if r.Offset < 0 || i > 0 && r.Offset <= out[i-1].Offset || string(r.Value) != string(recs[i].Value) {
					t.Fatalf("commit returned %+v", out)
				}
			}
			committed = append(committed, out...)
		}

		// Aborted #3: a produce into a missing partition aborts the whole transaction.
		_, err = tp.Commit(ctx, []Record{rec(events, 1, "x", "aborted-partial"), rec(events, 99, "x", "nowhere")})
		if !errors.Is(err, ErrAborted) {
			t.Fatalf("commit to a missing partition: want ErrAborted, got %v", err)
		}
		last, err := tp.Commit(ctx, []Record{rec(events, 1, "cart-9", "committed-after-abort")})
		if err != nil {
			t.Fatalf("commit after an aborted transaction: %v", err)
		}
		committed = append(committed, last...)

		settle(t, cfg, events, 1)
		got, next := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 1, From: 0})
		if want := values(committed); !slices.Equal(values(got), want) {
			t.Fatalf("read_committed ReadToEnd: %v, want %v", values(got), want)
		}
		for i, r := range got {
			c := committed[i]
			if r.Offset != c.Offset || string(r.Key) != string(c.Key) || r.Topic != events || r.Partition != 1 {
				t.Fatalf("record %d: %+v, committed as %+v", i, r, c)
			}
			if v, ok := r.HeaderValue("seq"); !ok || string(v) != string(c.Value) {
				t.Fatalf("record %d lost its header: %+v", i, r.Headers)
			}
		}
		// The next offset is past the last commit marker, not last offset + 1.
		if lastOff := got[len(got)-1].Offset; next[events] <= lastOff+1 {
			t.Fatalf("next offset %d, want past the commit marker after %d", next[events], lastOff)
		}

		// Read the other way: read_uncommitted sees the aborted records, read_committed does not.
		all := readAll(t, cfg.Brokers, events, 1, false)
		var aborted int
		for _, r := range all {
			if strings.HasPrefix(string(r.Value), "aborted") {
				aborted++
			}
		}
		if aborted != 5 {
			t.Fatalf("read_uncommitted found %d aborted records, want 5 (3 raw, 1 owner, 1 partial)", aborted)
		}
		var plain []string
		for _, r := range readAll(t, cfg.Brokers, events, 1, true) {
			plain = append(plain, string(r.Value))
		}
		if !slices.Equal(plain, values(committed)) {
			t.Fatalf("franz-go read_committed: %v, want %v", plain, values(committed))
		}

		// ReadToEnd from the middle.
		mid := committed[3].Offset
		got, _ = mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 1, From: mid})
		if want := values(committed[3:]); !slices.Equal(values(got), want) {
			t.Fatalf("ReadToEnd from %d: %v, want %v", mid, values(got), want)
		}
	})
}

func TestConformanceFencing(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, time.Minute)
		ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
		events := cfg.EventsTopic("cart")

		a := acquire(t, cfg, 2, "node-a")
		if _, err := a.Commit(ctx, []Record{rec(events, 2, "k", "a-1")}); err != nil {
			t.Fatal(err)
		}
		aID, aEpoch := a.Epoch()
		// a opens another transaction and writes into it, then stalls (a zombie).
		// b takes over: its Acquire fences a and aborts a's open transaction.
		if err := a.Acquire(ctx, owner(cfg, 2, "node-a-again")); err != nil {
			t.Fatal(err)
		}
		b := acquire(t, cfg, 2, "node-b")
		bID, bEpoch := b.Epoch()
		if bID != aID || bEpoch <= aEpoch {
			t.Fatalf("b has producer %d epoch %d, a had %d epoch %d: want the same id, a higher epoch", bID, bEpoch, aID, aEpoch)
		}
		_, err := a.Commit(ctx, []Record{rec(events, 2, "k", "a-zombie")})
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("zombie commit: want ErrFenced, got %v", err)
		}
		var te *TxnError
		if !errors.As(err, &te) || te.Partition != 2 {
			t.Fatalf("want a *TxnError for partition 2, got %v", err)
		}
		// Once fenced, it stays fenced.
		if _, err := a.Commit(ctx, []Record{rec(events, 2, "k", "a-zombie-2")}); !errors.Is(err, ErrFenced) {
			t.Fatalf("second zombie commit: want ErrFenced, got %v", err)
		}
		if _, err := b.Commit(ctx, []Record{rec(events, 2, "k", "b-1")}); err != nil {
			t.Fatal(err)
		}
		settle(t, cfg, events, 2)
		settle(t, cfg, cfg.OwnersTopic(), 0)
		got, _ := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 2, From: -1})
		if want := []string{"a-1", "b-1"}; !slices.Equal(values(got), want) {
			t.Fatalf("log %v, want %v: the zombie's writes must never be visible", values(got), want)
		}
		owners, _ := mustRead(t, cfg, TopicPartitionFrom{Topic: cfg.OwnersTopic(), Partition: 0, From: -1})
		if want := []string{"node-a", "node-b"}; !slices.Equal(values(owners), want) {
			t.Fatalf("owners %v, want %v", values(owners), want)
		}
		if v, ok := owners[1].HeaderValue(HeaderProducerEpoch); !ok || string(v) != fmt.Sprint(bEpoch) {
			t.Fatalf("owner record epoch header %q, want %d", v, bEpoch)
		}
	})
}

// TestConformanceZombieReinit checks that a fenced producer cannot take the transactional id
// back by re-initializing with its old epoch. Real Kafka answers PRODUCER_FENCED; kfake accepts
// any epoch at or below its own in InitProducerID (its CLAUDE.md: "a stale epoch from a timeout
// bump recovers"), so this check needs the real broker.
func TestConformanceZombieReinit(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		if !tg.real {
			t.Skip("kfake accepts InitProducerID with a stale epoch; needs a real broker (KSTATE_KAFKA_BROKERS)")
		}
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, time.Minute)
		ensure(t, cfg, cfg.AppTopics(nil))
		a := acquire(t, cfg, 0, "node-a")
		aID, aEpoch := a.Epoch()
		acquire(t, cfg, 0, "node-b")
		cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = kmsg.StringPtr(cfg.TransactionalID(0))
		req.TransactionTimeoutMillis = 10000
		req.ProducerID, req.ProducerEpoch = aID, aEpoch
		var resp *kmsg.InitProducerIDResponse
		for {
			resp, err = req.RequestWith(ctx, cl)
			if err != nil {
				t.Fatal(err)
			}
			if e := kerr.ErrorForCode(resp.ErrorCode); !errors.Is(e, kerr.ConcurrentTransactions) && !errors.Is(e, kerr.NotCoordinator) && !errors.Is(e, kerr.CoordinatorLoadInProgress) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(50 * time.Millisecond): // the coordinator is still aborting a's transaction
			}
		}
		e := kerr.ErrorForCode(resp.ErrorCode)
		if !errors.Is(e, kerr.ProducerFenced) && !errors.Is(e, kerr.InvalidProducerEpoch) {
			t.Fatalf("stale-epoch InitProducerID: got %v (epoch %d), want PRODUCER_FENCED", e, resp.ProducerEpoch)
		}
		t.Logf("stale-epoch InitProducerID refused: %v", e)
	})
}

func TestConformanceReadToEndStopsAtLSO(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, time.Minute)
		ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
		events := cfg.EventsTopic("cart")

		// Empty partitions return at once.
		got, next := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 0, From: 0},
			TopicPartitionFrom{Topic: cfg.SnapshotsTopic("cart"), Partition: 0, From: -1})
		if len(got) != 0 || next[events] != 0 || next[cfg.SnapshotsTopic("cart")] != 0 {
			t.Fatalf("empty partitions: %v %v", got, next)
		}

		a := acquire(t, cfg, 0, "a")
		if _, err := a.Commit(ctx, []Record{rec(events, 0, "k", "c1")}); err != nil {
			t.Fatal(err)
		}
		// An open transaction (a raw producer, x1) holds the LSO back; y commits after it.
		x, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.TransactionalID(cfg.Namespace+".x"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		if err := x.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		xr := x.ProduceSync(ctx, &kgo.Record{Topic: events, Partition: 0, Value: []byte("x1")})
		if err := xr.FirstErr(); err != nil {
			t.Fatal(err)
		}
		x1 := xr[0].Record.Offset
		if _, err := a.Commit(ctx, []Record{rec(events, 0, "k", "y1")}); err != nil {
			t.Fatal(err)
		}
		got, next = mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 0, From: 0})
		if !slices.Equal(values(got), []string{"c1"}) || next[events] != x1 {
			t.Fatalf("with an open transaction at %d: read %v, next %d; want [c1] and next = LSO = %d", x1, values(got), next[events], x1)
		}
		if err := x.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		settle(t, cfg, events, 0)
		got, next2 := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 0, From: next[events]})
		if !slices.Equal(values(got), []string{"x1", "y1"}) || next2[events] <= got[1].Offset+1 {
			t.Fatalf("after commit: read %v next %d", values(got), next2[events])
		}

		// The end is captured at the start: a record committed while reading is not delivered.
		var during []string
		var commitOnce sync.Once
		next3, err := ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: events, Partition: 0, From: 0}}, func(r Record) error {
			during = append(during, string(r.Value))
			var cerr error
			commitOnce.Do(func() { _, cerr = a.Commit(ctx, []Record{rec(events, 0, "k", "late")}) })
			return cerr
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(during, []string{"c1", "x1", "y1"}) || next3[events] != next2[events] {
			t.Fatalf("read %v to %d while committing; want [c1 x1 y1] to %d", during, next3[events], next2[events])
		}
		// Kafka writes a committed transaction's markers just after EndTxn returns, so the late
		// record may reach read_committed readers a moment later: poll, bounded.
		for deadline := time.Now().Add(10 * time.Second); ; {
			got, _ = mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 0, From: next3[events]})
			if slices.Equal(values(got), []string{"late"}) {
				break
			}
			if len(got) != 0 || time.Now().After(deadline) {
				t.Fatalf("the late record: %v", values(got))
			}
			time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
		}

		// An error from fn stops the read and is returned.
		stop := errors.New("stop")
		_, err = ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: events, Partition: 0, From: 0}}, func(Record) error { return stop })
		if !errors.Is(err, stop) {
			t.Fatalf("fn error: got %v", err)
		}
		// Missing topics and bad offsets are clear errors.
		_, err = ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: cfg.EventsTopic("nope"), Partition: 0}}, func(Record) error { return nil })
		if !errors.Is(err, ErrTopicNotFound) || !strings.Contains(err.Error(), cfg.EventsTopic("nope")) {
			t.Fatalf("missing topic: got %v", err)
		}
		_, err = ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: events, Partition: 0, From: 1 << 40}}, func(Record) error { return nil })
		if !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("offset past the end: got %v", err)
		}
	})
}

func TestConformanceFollow(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ensure(t, cfg, cfg.AppTopics(nil))
		a := acquire(t, cfg, 0, "node-a") // open: its owner record is not visible until Commit
		seen := make(chan string, 16)
		done := make(chan error, 1)
		fctx, fcancel := context.WithCancel(ctx)
		go func() {
			done <- Follow(fctx, cfg, cfg.OwnersTopic(), func(r Record) { seen <- string(r.Value) })
		}()
		zombie := acquire(t, cfg, 1, "zombie")
		zombie.Close() // aborted
		if _, err := a.Commit(ctx, nil); err != nil {
			t.Fatal(err)
		}
		b := acquire(t, cfg, 1, "node-b")
		if _, err := b.Commit(ctx, nil); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"node-a", "node-b"} {
			select {
			case got := <-seen:
				if got != want {
					t.Fatalf("Follow saw %q, want %q", got, want)
				}
			case <-ctx.Done():
				t.Fatalf("Follow did not deliver %q", want)
			}
		}
		fcancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow returned %v, want context.Canceled", err)
		}
		if err := Follow(ctx, cfg, cfg.Namespace+".missing", func(Record) {}); !errors.Is(err, ErrTopicNotFound) {
			t.Fatalf("Follow of a missing topic: %v", err)
		}
	})
}

func TestConformanceGroup(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, 2*time.Minute)
		ensure(t, cfg, cfg.AppTopics(nil))

		type member struct {
			mu     sync.Mutex
			owned  map[int32]bool
			events []string
		}
		cbs := func(m *member) GroupCallbacks {
			m.owned = map[int32]bool{}
			return GroupCallbacks{
				Assigned: func(_ context.Context, ps []int32) {
					m.mu.Lock()
					defer m.mu.Unlock()
					for _, p := range ps {
						m.owned[p] = true
					}
					m.events = append(m.events, fmt.Sprint("assigned ", ps))
				},
				Revoked: func(_ context.Context, ps []int32) {
					m.mu.Lock()
					defer m.mu.Unlock()
					for _, p := range ps {
						delete(m.owned, p)
					}
					m.events = append(m.events, fmt.Sprint("revoked ", ps))
				},
				Lost: func(_ context.Context, ps []int32) {
					m.mu.Lock()
					defer m.mu.Unlock()
					for _, p := range ps {
						delete(m.owned, p)
					}
					m.events = append(m.events, fmt.Sprint("lost ", ps))
				},
			}
		}
		owned := func(m *member) []int32 {
			m.mu.Lock()
			defer m.mu.Unlock()
			var out []int32
			for p := range m.owned {
				out = append(out, p)
			}
			slices.Sort(out)
			return out
		}
		waitFor := func(what string, cond func() bool) {
			t.Helper()
			for !cond() {
				select {
				case <-ctx.Done():
					t.Fatalf("timed out waiting for %s", what)
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		var a, b member
		ga, err := JoinGroup(ctx, cfg, "a", cbs(&a))
		if err != nil {
			t.Fatal(err)
		}
		defer ga.Close()
		waitFor("a to own every partition", func() bool { return len(owned(&a)) == int(cfg.Partitions) })
		gb, err := JoinGroup(ctx, cfg, "b", cbs(&b))
		if err != nil {
			t.Fatal(err)
		}
		waitFor("a and b to split the partitions", func() bool {
			oa, ob := owned(&a), owned(&b)
			return len(oa) > 0 && len(ob) > 0 && len(oa)+len(ob) == int(cfg.Partitions) && !overlap(oa, ob)
		})
		if !slices.Equal(gb.Assignment(), owned(&b)) {
			t.Fatalf("Assignment() %v, callbacks say %v", gb.Assignment(), owned(&b))
		}
		gb.Close()
		if len(owned(&b)) != 0 {
			t.Fatalf("b still owns %v after Close (Revoked must run on Close): %v", owned(&b), b.events)
		}
		waitFor("a to own every partition again", func() bool { return len(owned(&a)) == int(cfg.Partitions) })
		t.Logf("a: %v; b: %v", a.events, b.events)

		if _, err := JoinGroup(ctx, func() Config { c := cfg; c.App = "noapp"; return c }(), "c", GroupCallbacks{}); !errors.Is(err, ErrTopicNotFound) {
			t.Fatalf("joining without a commands topic: %v", err)
		}
	})
}

func overlap(a, b []int32) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// TestEnsureTopicsConcurrently: nodes of an app start together and all ensure the same topics;
// every one of them must succeed (one creates, the others find the topics while they settle).
func TestEnsureTopicsConcurrently(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		specs := cfg.AppTopics(map[string]EntityKind{"race": EventSourced})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		errs := make(chan error, 3)
		for i := 0; i < 3; i++ {
			go func() {
				adm, err := NewAdmin(cfg)
				if err != nil {
					errs <- err
					return
				}
				defer adm.Close()
				errs <- adm.EnsureTopics(ctx, specs)
			}()
		}
		for i := 0; i < 3; i++ {
			if err := <-errs; err != nil {
				t.Fatalf("concurrent EnsureTopics: %v", err)
			}
		}
	})
}
