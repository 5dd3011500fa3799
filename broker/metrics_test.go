package broker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// sumOf adds the values of every series of family name whose client label is client.
func sumOf(t *testing.T, reg prometheus.Gatherer, name, client string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "client") != client {
				continue
			}
			found = true
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				sum += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				sum += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum, found
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestClientMetrics: every client built from a Config with Metrics reports kprom's series under
// its role, and a closed client's counts stay in its role's totals (counters never go back when
// a partition's producer is replaced).
func TestClientMetrics(t *testing.T) {
	c := newKfake(t)
	cfg := testConfig(t, target{brokers: c.ListenAddrs()})
	reg := prometheus.NewPedanticRegistry()
	m, err := NewClientMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
	events := cfg.EventsTopic("cart")

	tp := acquire(t, cfg, 0, "node")
	ctx := ctxFor(t, time.Minute)
	for i := 0; i < 3; i++ {
		if _, err := tp.Commit(ctx, []Record{rec(events, 0, "cart-1", "v")}); err != nil {
			t.Fatal(err)
		}
	}
	produced, ok := sumOf(t, reg, "kstate_kafka_produce_bytes_total", roleTxn)
	if !ok || produced <= 0 {
		t.Fatalf("txn produce bytes %v (found %v), want > 0", produced, ok)
	}
	if v, ok := sumOf(t, reg, "kstate_kafka_write_bytes_total", roleAdmin); !ok || v <= 0 {
		t.Fatalf("admin write bytes %v (found %v), want > 0", v, ok)
	}
	tp.Close()
	after, ok := sumOf(t, reg, "kstate_kafka_produce_bytes_total", roleTxn)
	if !ok || after < produced {
		t.Fatalf("txn produce bytes %v after the producer closed (found %v), want >= %v", after, ok, produced)
	}

	// A restore reader: progress goes from 0 to the span of offsets, in steps that never go back.
	var steps [][2]int64
	_, err = ReadToEndProgress(ctx, cfg, []TopicPartitionFrom{{Topic: events, Partition: 0, From: -1}},
		func(done, total int64) { steps = append(steps, [2]int64{done, total}) },
		func(Record) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) < 2 || steps[0][0] != 0 {
		t.Fatalf("progress %v: want 0 first, then more", steps)
	}
	total := steps[0][1]
	// 3 committed records, each followed by its transaction's commit marker.
	if total < 6 {
		t.Fatalf("total %d offsets, want at least 6 (3 records and their markers)", total)
	}
	for i := 1; i < len(steps); i++ {
		if steps[i][1] != total || steps[i][0] < steps[i-1][0] {
			t.Fatalf("progress %v: total changed or done went back", steps)
		}
	}
	if last := steps[len(steps)-1]; last[0] != total {
		t.Fatalf("progress ended at %v, want done == total", last)
	}
	// The restore reader's client is closed by now; its reads stay counted.
	if v, ok := sumOf(t, reg, "kstate_kafka_read_bytes_total", roleRestore); !ok || v <= 0 {
		t.Fatalf("restore read bytes %v (found %v), want > 0", v, ok)
	}
}
