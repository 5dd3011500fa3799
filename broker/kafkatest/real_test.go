package kafkatest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRealTransactionalRoundTrip checks the broker scripts/kafka.sh starts (KSTATE_KAFKA_BROKERS)
// does what kstate needs: explicit topic creation (auto-create is off), transactions, and
// read_committed reads that hide aborted records.
func TestRealTransactionalRoundTrip(t *testing.T) {
	transactionalRoundTrip(t, Real(t))
}

// TestKfakeTransactionalRoundTrip runs the same checks on kfake, so the test itself is exercised
// on every run.
func TestKfakeTransactionalRoundTrip(t *testing.T) {
	transactionalRoundTrip(t, Kfake(t))
}

func transactionalRoundTrip(t *testing.T, addrs []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topic := Unique(t, "kafkatest-txn")

	adm, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adm.Close) // after the topic's deletion below: cleanups run last-in first-out
	admin := kadm.NewClient(adm)
	// One partition: records come back in produce order, so reading b1 proves the aborted record
	// before it was skipped, not merely not yet fetched.
	resp, err := admin.CreateTopic(ctx, 1, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := admin.DeleteTopics(ctx, topic); err != nil {
			t.Logf("delete %s: %v", topic, err)
		}
	})

	// Producing to a topic that does not exist must fail, not create it (auto.create.topics.enable=false
	// on the real broker; kfake allows auto-creation only when asked to).
	missing := Unique(t, "kafkatest-missing")
	probe, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RecordDeliveryTimeout(3*time.Second),
		kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := probe.ProduceSync(ctx, &kgo.Record{Topic: missing, Value: []byte("x")}).FirstErr(); err == nil {
		t.Errorf("producing to missing topic %s succeeded: the broker auto-creates topics", missing)
	}
	probe.Close()

	prod, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.TransactionalID(Unique(t, "kafkatest-txid")),
		kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	txn := func(commit bool, values ...string) {
		t.Helper()
		if err := prod.BeginTransaction(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		for _, v := range values {
			if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
		}
		if err := prod.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatalf("end transaction (commit=%v): %v", commit, err)
		}
	}
	txn(true, "a1", "a2")
	txn(false, "aborted")
	txn(true, "b1")

	cons, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := map[string]bool{}
	for len(got) < 3 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 3 committed records before the deadline: %v (got %v)", len(got), err, got)
		}
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { got[string(r.Value)] = true })
	}
	for _, v := range []string{"a1", "a2", "b1"} {
		if !got[v] {
			t.Errorf("committed record %q not read; got %v", v, got)
		}
	}
	if got["aborted"] {
		t.Errorf("read_committed returned a record of an aborted transaction")
	}

	// The log holds the 4 records and one marker per transaction (2 commits, 1 abort).
	ends, err := admin.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := ends.Lookup(topic, 0); !ok || o.Err != nil || o.Offset != 7 {
		t.Errorf("end offset of %s/0 = %+v, want 7 (4 records, 3 transaction markers)", topic, o)
	}
}
