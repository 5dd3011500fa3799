package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/kstatehq/kstate/broker/kafkatest"
)

// BenchmarkReadToEnd measures the restore path on kfake: one partition of 200k records of
// ~100 bytes written in transactions of 500 (so the log has commit markers every 501 offsets).
// It reports records/s; the target is at least 200k records/s.
func BenchmarkReadToEnd(b *testing.B) {
	const total, perTxn = 200_000, 500
	cfg := testConfig(b, target{brokers: kafkatest.Kfake(b)})
	ensure(b, cfg, cfg.AppTopics(map[string]EntityKind{"bench": EventSourced}))
	events := cfg.EventsTopic("bench")
	ctx := ctxFor(b, 5*time.Minute)
	tp, err := NewTxnProducer(cfg, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	if err := tp.Acquire(ctx, owner(cfg, 0, "bench")); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 80)
	batch := make([]Record, perTxn)
	for n := 0; n < total; n += perTxn {
		for i := range batch {
			batch[i] = Record{Topic: events, Partition: 0, Key: []byte(fmt.Sprintf("entity-%06d", (n+i)%5000)), Value: value,
				Headers: []Header{{Key: "seq", Value: []byte("1")}}}
		}
		if _, err := tp.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		count := 0
		_, err := ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: events, Partition: 0, From: 0}}, func(Record) error {
			count++
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if count != total {
			b.Fatalf("read %d records, want %d", count, total)
		}
	}
	b.ReportMetric(float64(total*b.N)/time.Since(start).Seconds(), "records/s")
}
