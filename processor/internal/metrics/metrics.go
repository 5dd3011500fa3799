// Package metrics defines a node's Prometheus metrics: per partition (ownership, restore,
// transactions), per service (commands, latency, active entities, passivations, user-function
// stream errors) and at the ingress (requests by protocol and code, local and forwarded routing,
// retries). docs/operations.md lists every metric.
//
// Every Node has its own Metrics with its own registry (never the global default), so nodes in
// one process do not collide. Labels are bounded: a partition number, a service name from the
// catalog, a gRPC code, a protocol, a route, a transaction outcome — never an entity id or
// anything else a client chooses. Every method is safe for concurrent use and does nothing on a
// nil *Metrics or *Partition, so code paths that run without a node (tests) need no checks.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
)

const ns = "kstate"

// Transaction outcomes, the values of the "outcome" label.
const (
	OutcomeCommitted     = "committed"
	OutcomeAborted       = "aborted"
	OutcomeFenced        = "fenced"
	OutcomeIndefinite    = "indefinite"
	OutcomeStorageFailed = "storage_failed"
)

// Routes of a routing attempt, the values of the "route" label.
const (
	RouteLocal     = "local"     // the command ran on a partition this node owns
	RouteForwarded = "forwarded" // the command was sent to the owner node
)

// Metrics holds one node's metrics and the registry they are served from.
type Metrics struct {
	reg *prometheus.Registry

	owned           *prometheus.GaugeVec
	restoring       *prometheus.GaugeVec
	restoreProgress *prometheus.GaugeVec
	restoreTarget   *prometheus.GaugeVec
	restoreDuration *prometheus.HistogramVec
	commitDuration  *prometheus.HistogramVec
	txnRecords      *prometheus.HistogramVec
	txnCommands     *prometheus.HistogramVec
	txns            *prometheus.CounterVec
	quarantined     *prometheus.CounterVec

	commands        *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	activeEntities  *prometheus.GaugeVec
	passivations    *prometheus.CounterVec
	streamErrors    *prometheus.CounterVec

	ingress        *prometheus.CounterVec
	routeLocal     prometheus.Counter
	routeForwarded prometheus.Counter
	retries        prometheus.Counter

	// Caches of resolved series, so the per-command paths skip the vectors' label hashing.
	services    sync.Map // service name → *service
	ingressByPC sync.Map // protoCode → prometheus.Counter

	mu    sync.Mutex
	parts map[int32]*Partition
}

// service holds one service's series; commands by code are resolved on first use.
type service struct {
	name         string
	duration     prometheus.Observer
	active       prometheus.Gauge
	passivations prometheus.Counter
	streamErrors prometheus.Counter
	codes        [int(codes.Unauthenticated) + 1]atomic.Pointer[prometheus.Counter]
}

type protoCode struct {
	protocol string
	code     codes.Code
}

// New returns a node's metrics, registered with the Go runtime and process collectors in a
// registry of their own. version is reported by kstate_build_info.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg, parts: make(map[int32]*Partition)}
	part := []string{"partition"}
	svc := []string{"service"}

	m.owned = gauge(f, "partition_owned", "1 while this node owns and serves the partition (restored), else 0.", part)
	m.restoring = gauge(f, "partition_restoring", "1 while this node is acquiring the partition: fencing the previous owner and restoring its records into Pebble.", part)
	m.restoreProgress = gauge(f, "partition_restore_progress_records", "Offsets the partition's current or last restore has read past, summed over its topics (transaction markers included).", part)
	m.restoreTarget = gauge(f, "partition_restore_target_records", "Offsets the partition's current or last restore has to read: from its checkpoints to the end offsets taken after the fence.", part)
	m.restoreDuration = histogram(f, "partition_restore_duration_seconds", "Time from taking the partition (the fence) until it is restored and serves.", part,
		[]float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600})
	m.commitDuration = histogram(f, "partition_commit_duration_seconds", "Time of one partition transaction: produce, commit, and applying its records to Pebble.", part,
		[]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10})
	m.txnRecords = histogram(f, "partition_transaction_records", "Records of the commands in one transaction (0 for a barrier, which proves ownership for reads).", part,
		[]float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000})
	m.txnCommands = histogram(f, "partition_transaction_commands", "Commands whose writes one transaction holds (group commit).", part,
		[]float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000})
	m.txns = counter(f, "partition_transactions_total", "Partition transactions by outcome: committed, aborted, fenced (another node took the partition), indefinite (outcome unknown), storage_failed (committed, local store failed).", []string{"partition", "outcome"})
	m.quarantined = counter(f, "partition_quarantined_records_total", "Records a restore rejected, skipped and copied to the dead-letter topic.", part)

	m.commands = counter(f, "commands_total", "Commands this node ran on its own partitions (entities) or served (actions), by service and gRPC code.", []string{"service", "code"})
	m.commandDuration = histogram(f, "command_duration_seconds", "Time from a command's arrival at its partition (or action) until its answer, by service.", svc,
		[]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})
	m.activeEntities = gauge(f, "active_entities", "Entities with a running stream to the user function on this node.", svc)
	m.passivations = counter(f, "passivations_total", "Entities passivated: idle past their service's timeout, or evicted for a new one at max-active-entities.", svc)
	m.streamErrors = counter(f, "user_function_stream_errors_total", "Entity streams to the user function that failed (broken stream, failure message, protocol error) and unary action calls the user function failed.", svc)

	m.ingress = counter(f, "ingress_requests_total", "Calls of the user's services at the public port, by protocol (grpc, grpc-web, connect, http) and gRPC code.", []string{"protocol", "code"})
	routed := counter(f, "router_commands_total", "Routing attempts of entity commands by route: local (a partition of this node) or forwarded (to the owner node).", []string{"route"})
	m.routeLocal, m.routeForwarded = routed.WithLabelValues(RouteLocal), routed.WithLabelValues(RouteForwarded)
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "router_retries_total",
		Help: "Routing attempts retried because the partition had no owner yet, moved, or its owner could not be reached."})
	f(m.retries)

	build := gauge(f, "build_info", "Always 1; the labels say which kstate runs.", []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func gauge(f func(prometheus.Collector), name, help string, labels []string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help}, labels)
	f(v)
	return v
}

func counter(f func(prometheus.Collector), name, help string, labels []string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, labels)
	f(v)
	return v
}

func histogram(f func(prometheus.Collector), name, help string, labels []string, buckets []float64) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: name, Help: help, Buckets: buckets}, labels)
	f(v)
	return v
}

// Registry is the node's registry: register more collectors here (the Kafka clients' metrics).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text or OpenMetrics format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Registry:          m.reg, // promhttp_metric_handler_errors_total
	})
}

// Partition returns the metrics of partition p, creating its series on first use.
func (m *Metrics) Partition(p int32) *Partition {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if pm, ok := m.parts[p]; ok {
		return pm
	}
	l := strconv.Itoa(int(p))
	pm := &Partition{
		m:               m,
		label:           l,
		owned:           m.owned.WithLabelValues(l),
		restoring:       m.restoring.WithLabelValues(l),
		restoreProgress: m.restoreProgress.WithLabelValues(l),
		restoreTarget:   m.restoreTarget.WithLabelValues(l),
		restoreDuration: m.restoreDuration.WithLabelValues(l),
		commitDuration:  m.commitDuration.WithLabelValues(l),
		committed:       m.txns.WithLabelValues(l, OutcomeCommitted),
		txnRecords:      m.txnRecords.WithLabelValues(l),
		txnCommands:     m.txnCommands.WithLabelValues(l),
		quarantined:     m.quarantined.WithLabelValues(l),
	}
	m.parts[p] = pm
	return pm
}

// service returns the series of the named service, creating them on first use.
func (m *Metrics) service(name string) *service {
	if s, ok := m.services.Load(name); ok {
		return s.(*service)
	}
	s, _ := m.services.LoadOrStore(name, &service{
		name:         name,
		duration:     m.commandDuration.WithLabelValues(name),
		active:       m.activeEntities.WithLabelValues(name),
		passivations: m.passivations.WithLabelValues(name),
		streamErrors: m.streamErrors.WithLabelValues(name),
	})
	return s.(*service)
}

// commands returns the service's command counter for code.
func (s *service) commands(m *Metrics, code codes.Code) prometheus.Counter {
	if int(code) >= len(s.codes) {
		return m.commands.WithLabelValues(s.name, code.String())
	}
	if c := s.codes[code].Load(); c != nil {
		return *c
	}
	c := m.commands.WithLabelValues(s.name, code.String()) // the same child for every caller
	s.codes[code].Store(&c)
	return c
}

// Command counts a command of service that ended with code after d.
func (m *Metrics) Command(service string, code codes.Code, d time.Duration) {
	if m == nil {
		return
	}
	s := m.service(service)
	s.commands(m, code).Inc()
	s.duration.Observe(d.Seconds())
}

// EntityStarted and EntityStopped bracket the life of an entity's goroutine (and stream).
func (m *Metrics) EntityStarted(service string) {
	if m != nil {
		m.service(service).active.Inc()
	}
}

// EntityStopped: see EntityStarted.
func (m *Metrics) EntityStopped(service string) {
	if m != nil {
		m.service(service).active.Dec()
	}
}

// Passivated counts an entity of service the partition passivated.
func (m *Metrics) Passivated(service string) {
	if m != nil {
		m.service(service).passivations.Inc()
	}
}

// StreamError counts a failed stream or call to the user function for service.
func (m *Metrics) StreamError(service string) {
	if m != nil {
		m.service(service).streamErrors.Inc()
	}
}

// IngressRequest counts a call at the public port.
func (m *Metrics) IngressRequest(protocol string, code codes.Code) {
	if m == nil {
		return
	}
	k := protoCode{protocol, code}
	c, ok := m.ingressByPC.Load(k)
	if !ok {
		c, _ = m.ingressByPC.LoadOrStore(k, m.ingress.WithLabelValues(protocol, code.String()))
	}
	c.(prometheus.Counter).Inc()
}

// Routed counts a routing attempt by route (RouteLocal, RouteForwarded).
func (m *Metrics) Routed(route string) {
	switch {
	case m == nil:
	case route == RouteLocal:
		m.routeLocal.Inc()
	default:
		m.routeForwarded.Inc()
	}
}

// RouterRetry counts a routing attempt that is retried.
func (m *Metrics) RouterRetry() {
	if m != nil {
		m.retries.Inc()
	}
}

// Partition holds one partition's series.
type Partition struct {
	m               *Metrics
	label           string
	owned           prometheus.Gauge
	restoring       prometheus.Gauge
	restoreProgress prometheus.Gauge
	restoreTarget   prometheus.Gauge
	restoreDuration prometheus.Observer
	commitDuration  prometheus.Observer
	committed       prometheus.Counter
	txnRecords      prometheus.Observer
	txnCommands     prometheus.Observer
	quarantined     prometheus.Counter
}

// SetOwned records whether the node owns and serves the partition.
func (p *Partition) SetOwned(owned bool) {
	if p != nil {
		p.owned.Set(b2f(owned))
	}
}

// SetRestoring records whether the node is acquiring the partition; a new acquisition starts
// its progress at zero.
func (p *Partition) SetRestoring(restoring bool) {
	if p == nil {
		return
	}
	if restoring {
		p.restoreProgress.Set(0)
		p.restoreTarget.Set(0)
	}
	p.restoring.Set(b2f(restoring))
}

// RestoreProgress records a restore's progress: done of total offsets (broker.ReadProgress).
func (p *Partition) RestoreProgress(done, total int64) {
	if p != nil {
		p.restoreProgress.Set(float64(done))
		p.restoreTarget.Set(float64(total))
	}
}

// Restored records how long the partition took from its fence to serving.
func (p *Partition) Restored(d time.Duration) {
	if p != nil {
		p.restoreDuration.Observe(d.Seconds())
	}
}

// TxnStarted records the size of a transaction the partition starts.
func (p *Partition) TxnStarted(commands, records int) {
	if p != nil {
		p.txnCommands.Observe(float64(commands))
		p.txnRecords.Observe(float64(records))
	}
}

// TxnFinished records a transaction's outcome (Outcome*) and how long it took.
func (p *Partition) TxnFinished(outcome string, d time.Duration) {
	if p != nil {
		p.commitDuration.Observe(d.Seconds())
		if outcome == OutcomeCommitted {
			p.committed.Inc()
		} else {
			p.m.txns.WithLabelValues(p.label, outcome).Inc()
		}
	}
}

// Quarantined counts a record the partition's restore quarantined.
func (p *Partition) Quarantined() {
	if p != nil {
		p.quarantined.Inc()
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Reading: the admin console shows a few of these series next to ownership and restore state.
// The values are read from the series themselves, so the console and /metrics never disagree.

// Commits returns the partition's committed transactions so far (0 on a nil Partition).
func (p *Partition) Commits() float64 {
	if p == nil {
		return 0
	}
	return read(p.committed)
}

// ActiveEntities returns the service's entities with a running stream on this node; a service
// that never had one has no series and reads 0 (none is created).
func (m *Metrics) ActiveEntities(name string) float64 {
	if m == nil {
		return 0
	}
	s, ok := m.services.Load(name)
	if !ok {
		return 0
	}
	return read(s.(*service).active)
}

// read returns the value of a counter or gauge.
func read(c prometheus.Metric) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}
