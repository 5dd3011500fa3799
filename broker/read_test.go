package broker

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReadToEndCompactionGaps (RELIABILITY.md F5): after compaction the log has holes where
// superseded records, aborted batches and markers were; ReadToEnd still reads the latest record
// of every key, never an aborted one, and ends at the captured end offset. kfake only: a real
// broker compacts on its own schedule.
func TestReadToEndCompactionGaps(t *testing.T) {
	c := newKfake(t)
	cfg := testConfig(t, target{brokers: c.ListenAddrs()})
	ctx := ctxFor(t, time.Minute)
	ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
	snaps := cfg.SnapshotsTopic("cart")
	tp := acquire(t, cfg, 0, "node")
	if _, err := tp.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	latest := map[string]string{}
	for round := 0; round < 5; round++ {
		var recs []Record
		for k := 0; k < 4; k++ {
			key, val := fmt.Sprintf("cart-%d", k), fmt.Sprintf("r%d-k%d", round, k)
			recs = append(recs, rec(snaps, 0, key, val))
			latest[key] = val
		}
		if _, err := tp.Commit(ctx, recs); err != nil {
			t.Fatal(err)
		}
		// An aborted transaction between the commits.
		if _, err := tp.Commit(ctx, []Record{rec(snaps, 0, "cart-0", "aborted"), rec(snaps, 99, "x", "x")}); err == nil {
			t.Fatal("commit into a missing partition succeeded")
		}
	}
	_, before := mustRead(t, cfg, TopicPartitionFrom{Topic: snaps, Partition: 0})
	c.Compact()

	got, next := mustRead(t, cfg, TopicPartitionFrom{Topic: snaps, Partition: 0})
	if next[snaps] != before[snaps] {
		t.Fatalf("end offset %d after compaction, %d before", next[snaps], before[snaps])
	}
	seen := map[string]string{}
	offsets := make([]int64, 0, len(got))
	for _, r := range got {
		if string(r.Value) == "aborted" {
			t.Fatalf("aborted record at %d", r.Offset)
		}
		seen[string(r.Key)] = string(r.Value)
		offsets = append(offsets, r.Offset)
	}
	for k, v := range latest {
		if seen[k] != v {
			t.Fatalf("key %s: read %q last, want %q (all: %v)", k, seen[k], v, values(got))
		}
	}
	if !slices.IsSorted(offsets) || len(got) >= 20 {
		t.Fatalf("compaction left %d records at %v; want fewer than the 20 written, in order", len(got), offsets)
	}
	// Starting inside a hole works too.
	if len(offsets) > 1 && offsets[0] > 0 {
		got2, next2 := mustRead(t, cfg, TopicPartitionFrom{Topic: snaps, Partition: 0, From: offsets[0] - 1})
		if !slices.Equal(values(got2), values(got)) || next2[snaps] != next[snaps] {
			t.Fatalf("from %d: %v, want %v", offsets[0]-1, values(got2), values(got))
		}
	}
}

// TestReadToEndBelowLogStart: records deleted from a delete-policy topic (retention,
// DeleteRecords) are missing, so a read from before the log start is an error, never a silent
// skip; a negative From reads what is left.
func TestReadToEndBelowLogStart(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, time.Minute)
		ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
		events := cfg.EventsTopic("cart")
		tp := acquire(t, cfg, 0, "node")
		out, err := tp.Commit(ctx, []Record{rec(events, 0, "k", "e1"), rec(events, 0, "k", "e2"), rec(events, 0, "k", "e3")})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		del, err := kadm.NewClient(cl).DeleteRecords(ctx, kadm.Offsets{events: {0: {Topic: events, Partition: 0, At: out[2].Offset}}})
		if err == nil {
			err = del.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: events, Partition: 0, From: 0}}, func(Record) error { return nil })
		if !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("read from below the log start of a delete topic: want ErrOffsetOutOfRange, got %v", err)
		}
		got, _ := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 0, From: -1})
		if !slices.Equal(values(got), []string{"e3"}) {
			t.Fatalf("from the log start: %v, want [e3]", values(got))
		}
	})
}
