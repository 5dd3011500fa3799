package broker

import (
	"math"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// Client roles: the value of the "client" label of the Kafka client metrics.
const (
	roleAdmin    = "admin"    // topic management and metadata (NewAdmin)
	roleGroup    = "group"    // the consumer group that assigns partitions (JoinGroup)
	roleOwners   = "owners"   // the owners-topic follower (Follow)
	roleRestore  = "restore"  // restores and other bounded reads (ReadToEnd)
	roleTxn      = "txn"      // the partitions' transactional producers
	roleClaims   = "claims"   // persistence-id claims
	roleProducer = "producer" // records produced outside transactions (CRDT deltas)
	roleFollow   = "follow"   // named partitions followed without a group (CRDT topics)
	roleOther    = "other"    // any other client
)

// kafkaMetricsNamespace prefixes the Kafka client metrics: kstate_kafka_read_bytes_total, …
const kafkaMetricsNamespace = "kstate_kafka"

// ClientMetrics exports franz-go's client metrics (the kprom plugin) for every Kafka client
// built from a Config that carries it: connections, bytes and errors per broker, produce and
// fetch bytes per topic, request latencies, buffered records.
//
// A node runs a changing set of clients — a transactional producer and a restore reader per
// partition come and go with ownership — so the series are summed per role and exported with a
// "client" label (the role* constants) instead of one set per client:
// the label set stays bounded by the roles, not by the partition count, and a client that
// closes adds its final counts to its role's totals, so counters never go backwards when a
// partition moves. Gauges (buffered records and bytes) are those of the live clients.
//
// Register it in one registry (NewClientMetrics does); it is safe for concurrent use.
type ClientMetrics struct {
	mu      sync.Mutex
	live    map[*clientHook]struct{}
	retired map[seriesKey]*series // final counter and histogram values of closed clients
}

// NewClientMetrics returns a ClientMetrics registered in reg.
func NewClientMetrics(reg prometheus.Registerer) (*ClientMetrics, error) {
	m := &ClientMetrics{live: make(map[*clientHook]struct{}), retired: make(map[seriesKey]*series)}
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	return m, nil
}

// opts returns the kgo options that instrument one client of the given role.
func (m *ClientMetrics) opts(role string) (kgo.Opt, *clientHook) {
	reg := prometheus.NewRegistry()
	h := &clientHook{m: m, role: role, reg: reg}
	// kprom registers into the client's own registry, gathered by Collect. Native histograms are
	// off: classic buckets sum across clients, native ones would not.
	k := kprom.NewMetrics(kafkaMetricsNamespace, kprom.Registry(reg), kprom.NativeBucketFactor(1))
	// The hook that retires the client runs before kprom's, which unregisters its metrics.
	return kgo.WithHooks(h, k), h
}

// clientHook follows one client's life: attach once it is built, retire when it closes.
type clientHook struct {
	m    *ClientMetrics
	role string
	reg  *prometheus.Registry
}

var _ kgo.HookClientClosed = (*clientHook)(nil)

func (h *clientHook) attach() {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	h.m.live[h] = struct{}{}
}

// OnClientClosed moves the client's final counts into its role's totals.
func (h *clientHook) OnClientClosed(*kgo.Client) {
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if _, ok := h.m.live[h]; !ok {
		return
	}
	delete(h.m.live, h)
	for _, s := range h.gather() {
		if s.typ == dto.MetricType_GAUGE {
			continue // a closed client buffers nothing
		}
		if r, ok := h.m.retired[s.key]; ok {
			r.add(s)
		} else {
			h.m.retired[s.key] = s
		}
	}
}

// Describe sends nothing: the series depend on the clients alive (an unchecked collector).
func (m *ClientMetrics) Describe(chan<- *prometheus.Desc) {}

// Collect sums the live clients' series with the retired totals, per role.
func (m *ClientMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := make(map[seriesKey]*series, len(m.retired))
	for k, s := range m.retired {
		sum[k] = s.clone()
	}
	for h := range m.live {
		for _, s := range h.gather() {
			if t, ok := sum[s.key]; ok {
				t.add(s)
			} else {
				sum[s.key] = s
			}
		}
	}
	for _, s := range sum {
		if pm, err := s.metric(); err == nil {
			ch <- pm
		}
	}
}

// gather reads the client's kprom registry as series labelled with the client's role.
func (h *clientHook) gather() []*series {
	mfs, err := h.reg.Gather()
	if err != nil {
		return nil
	}
	var out []*series
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			names := []string{"client"}
			values := []string{h.role}
			for _, lp := range mt.GetLabel() {
				names = append(names, lp.GetName())
				values = append(values, lp.GetValue())
			}
			s := &series{
				key:    seriesKey{name: mf.GetName(), labels: strings.Join(values, "\xff")},
				help:   mf.GetHelp(),
				typ:    mf.GetType(),
				names:  names,
				values: values,
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s.value = mt.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.value = mt.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				hg := mt.GetHistogram()
				s.count, s.value = hg.GetSampleCount(), hg.GetSampleSum()
				s.buckets = make(map[float64]uint64, len(hg.GetBucket()))
				for _, b := range hg.GetBucket() {
					if !math.IsInf(b.GetUpperBound(), 1) {
						s.buckets[b.GetUpperBound()] = b.GetCumulativeCount()
					}
				}
			default:
				continue
			}
			out = append(out, s)
		}
	}
	return out
}

// seriesKey identifies one series: metric name and label values (role first).
type seriesKey struct {
	name   string
	labels string
}

// series is one counter, gauge or histogram value, summable across clients.
type series struct {
	key     seriesKey
	help    string
	typ     dto.MetricType
	names   []string
	values  []string
	value   float64 // counter or gauge value; histogram sample sum
	count   uint64  // histogram sample count
	buckets map[float64]uint64
}

func (s *series) add(o *series) {
	s.value += o.value
	s.count += o.count
	for ub, c := range o.buckets {
		if s.buckets == nil {
			s.buckets = make(map[float64]uint64)
		}
		s.buckets[ub] += c
	}
}

func (s *series) clone() *series {
	c := *s
	c.buckets = make(map[float64]uint64, len(s.buckets))
	for ub, n := range s.buckets {
		c.buckets[ub] = n
	}
	return &c
}

func (s *series) metric() (prometheus.Metric, error) {
	desc := prometheus.NewDesc(s.key.name, s.help, s.names, nil)
	switch s.typ {
	case dto.MetricType_COUNTER:
		return prometheus.NewConstMetric(desc, prometheus.CounterValue, s.value, s.values...)
	case dto.MetricType_GAUGE:
		return prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.value, s.values...)
	}
	return prometheus.NewConstHistogram(desc, s.count, s.value, s.buckets, s.values...)
}
