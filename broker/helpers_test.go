package broker

import (
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kstatehq/kstate/broker/kafkatest"
)

// target is one broker a conformance check runs against.
type target struct {
	name    string
	brokers []string
	real    bool // a real Apache Kafka broker (KSTATE_KAFKA_BROKERS)
}

// newKfake starts a fresh single-node kfake cluster, closed when t ends, for the tests that need
// its handle (faults, controls, compaction); others use kafkatest.
func newKfake(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// onEachBroker runs check against a fresh kfake cluster and, when KSTATE_KAFKA_BROKERS is set,
// against that real broker too, each as a subtest ("kfake", "kafka").
func onEachBroker(t *testing.T, check func(t *testing.T, tg target)) {
	t.Helper()
	t.Run("kfake", func(t *testing.T) {
		check(t, target{name: "kfake", brokers: kafkatest.Kfake(t)})
	})
	if kafkatest.IsReal() {
		t.Run("kafka", func(t *testing.T) {
			check(t, target{name: "kafka", brokers: kafkatest.Real(t), real: true})
		})
	}
}

// testConfig returns a Config for tg with a namespace unique to this test and run (a real broker
// keeps topics across runs), 4 partitions and a logger writing warnings to the test log.
func testConfig(t testing.TB, tg target) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Brokers = tg.brokers
	cfg.Namespace = kafkatest.Unique(t, "kst")
	cfg.App = "app"
	cfg.Partitions = 4
	cfg.Logger = testLogger(t)
	return cfg
}

func testLogger(t testing.TB) hclog.Logger {
	level := hclog.Warn
	if os.Getenv("KSTATE_TEST_LOG") != "" {
		level = hclog.LevelFromString(os.Getenv("KSTATE_TEST_LOG"))
	}
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: level, Output: &testWriter{t: t}})
}

// testWriter sends log lines to t.Log until the test ends.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		func() {
			defer func() { _ = recover() }() // t.Log after the test ended panics
			w.t.Log(strings.TrimRight(string(p), "\n"))
		}()
	}
	return len(p), nil
}

var _ io.Writer = (*testWriter)(nil)

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func ensure(t testing.TB, cfg Config, specs []TopicSpec) {
	t.Helper()
	adm, err := NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := adm.EnsureTopics(ctxFor(t, 30*time.Second), specs); err != nil {
		t.Fatal(err)
	}
}

// readAll reads every data record of topic/partition with a plain franz-go consumer at the given
// isolation level, up to the partition's end (high watermark, or last stable offset when
// committed). It keeps control records to know when the end is reached (every offset of an
// uncompacted log is then seen), and drops them from the result.
func readAll(t testing.TB, brokers []string, topic string, partition int32, committed bool) []*kgo.Record {
	t.Helper()
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(iso), kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := ctxFor(t, 20*time.Second)
	adm := kadm.NewClient(cl)
	var lo kadm.ListedOffsets
	if committed {
		lo, err = adm.ListCommittedOffsets(ctx, topic)
	} else {
		lo, err = adm.ListEndOffsets(ctx, topic)
	}
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	o, _ := lo.Lookup(topic, partition)
	end := o.Offset
	var out []*kgo.Record
	next := int64(0)
	for next < end {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s/%d to %d: at %d: %v", topic, partition, end, next, ctx.Err())
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("reading %s/%d: %v", topic, partition, err) })
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if r.Offset < end && !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	return out
}
