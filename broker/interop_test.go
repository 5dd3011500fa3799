package broker

// Interop: kstate's partitioning and transactions as other Kafka clients see them, on kfake and
// on the real broker when KSTATE_KAFKA_BROKERS is set.
//
// About "Sarama (default hash partitioner)": Sarama's default partitioner, NewHashPartitioner,
// hashes keys with FNV-1a, not murmur2, so records keyed by entity id and produced with a
// default Sarama config land on other partitions than with the Java client, franz-go or kstate
// (TestSaramaDefaultPartitionerDiffers shows it). Sarama ≥ 1.46 ships NewMurmur2Partitioner,
// which is the Java client's keyed partitioning ((murmur2(key) & 0x7fffffff) % n); Sarama
// producers that send commands to kstate must set Config.Producer.Partitioner to it, and these
// tests do.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

func saramaConfig() *sarama.Config {
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.ClientID = "kstate-interop"
	return sc
}

func TestInteropPartitioning(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, time.Minute)
		const n = 7
		topic := cfg.Namespace + ".interop"
		ensure(t, cfg, []TopicSpec{{Name: topic, Partitions: n, ReplicationFactor: -1, Configs: map[string]string{"cleanup.policy": "delete"}}})

		var keys []string
		for i := 0; i < 60; i++ {
			keys = append(keys, fmt.Sprintf("entity-%d", i))
		}
		// Sarama with its Kafka-compatible partitioner.
		sc := saramaConfig()
		sc.Producer.Partitioner = sarama.NewMurmur2Partitioner
		sc.Producer.Return.Successes = true
		sc.Producer.RequiredAcks = sarama.WaitForAll
		sp, err := sarama.NewSyncProducer(cfg.Brokers, sc)
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		for _, k := range keys {
			p, _, err := sp.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(k), Value: sarama.StringEncoder("sarama")})
			if err != nil {
				t.Fatal(err)
			}
			if want := Partition([]byte(k), n); p != want {
				t.Errorf("sarama put %q on partition %d, Partition says %d", k, p, want)
			}
		}
		// franz-go with its default partitioner.
		cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for _, k := range keys {
			res := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(k), Value: []byte("franz-go")})
			if err := res.FirstErr(); err != nil {
				t.Fatal(err)
			}
			if want := Partition([]byte(k), n); res[0].Record.Partition != want {
				t.Errorf("franz-go put %q on partition %d, Partition says %d", k, res[0].Record.Partition, want)
			}
		}
		// Read back through kstate: every record sits where Partition predicts.
		count := 0
		for p := int32(0); p < n; p++ {
			recs, _ := mustRead(t, cfg, TopicPartitionFrom{Topic: topic, Partition: p, From: 0})
			for _, r := range recs {
				count++
				if want := Partition(r.Key, n); r.Partition != p || want != p {
					t.Errorf("%s record %q read from partition %d, Partition says %d", r.Value, r.Key, p, want)
				}
			}
		}
		if count != 2*len(keys) {
			t.Fatalf("read %d records, produced %d", count, 2*len(keys))
		}
	})
}

// TestInteropSaramaReadCommitted: a Sarama consumer group reading read_committed sees what
// TxnProducer committed and nothing it aborted.
func TestInteropSaramaReadCommitted(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) {
		cfg := testConfig(t, tg)
		ctx := ctxFor(t, 2*time.Minute)
		ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
		events := cfg.EventsTopic("cart")

		// Everything goes to partition 3, so offset order is commit order.
		zombie, err := NewTxnProducer(cfg, 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := zombie.Acquire(ctx, rec(events, 3, "k", "aborted-open")); err != nil {
			t.Fatal(err)
		}
		tp := acquire(t, cfg, 3, "node") // fences the zombie, aborting its open transaction
		if _, err := tp.Commit(ctx, []Record{rec(events, 3, "a", "c1"), rec(events, 3, "b", "c2")}); err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Commit(ctx, []Record{rec(events, 3, "a", "aborted-partial"), rec(events, 99, "x", "bad-partition")}); err == nil {
			t.Fatal("expected the commit into a missing partition to fail")
		} else if !errors.Is(err, ErrAborted) {
			t.Fatalf("want ErrAborted, got %v", err)
		}
		if _, err := zombie.Commit(ctx, []Record{rec(events, 3, "z", "aborted-zombie")}); !errors.Is(err, ErrFenced) {
			t.Fatalf("zombie: want ErrFenced, got %v", err)
		}
		zombie.Close()
		if _, err := tp.Commit(ctx, []Record{rec(events, 3, "c", "c3")}); err != nil {
			t.Fatal(err)
		}

		sc := saramaConfig()
		sc.Consumer.IsolationLevel = sarama.ReadCommitted
		sc.Consumer.Offsets.Initial = sarama.OffsetOldest
		sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
		group, err := sarama.NewConsumerGroup(cfg.Brokers, cfg.Namespace+".sarama", sc)
		if err != nil {
			t.Fatal(err)
		}
		defer group.Close()
		h := &collector{want: 3, done: make(chan struct{})}
		gctx, cancel := context.WithCancel(ctx)
		defer cancel()
		consumeErr := make(chan error, 1)
		go func() {
			for gctx.Err() == nil {
				if err := group.Consume(gctx, []string{events}, h); err != nil {
					consumeErr <- err
					return
				}
			}
			consumeErr <- nil
		}()
		select {
		case <-h.done:
		case <-ctx.Done():
			t.Fatalf("sarama saw %v before the deadline", h.values())
		}
		cancel()
		if err := <-consumeErr; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		// c3 is the last record of the partition: every aborted record lies before it, so had
		// Sarama delivered any, it would be in the list by now.
		if got := h.values(); !slices.Equal(got, []string{"c1", "c2", "c3"}) {
			t.Fatalf("sarama read_committed saw %v, want [c1 c2 c3]", got)
		}
	})
}

// collector is a sarama.ConsumerGroupHandler that records values until it has want of them.
type collector struct {
	mu   sync.Mutex
	vals []string
	want int
	done chan struct{}
	once sync.Once
}

func (c *collector) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (c *collector) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (c *collector) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			c.mu.Lock()
			c.vals = append(c.vals, string(m.Value))
			if len(c.vals) >= c.want {
				c.once.Do(func() { close(c.done) })
			}
			c.mu.Unlock()
		case <-s.Context().Done():
			return nil
		}
	}
}

func (c *collector) values() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.vals)
}
