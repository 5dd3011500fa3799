package processor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/core"
)

const (
	esTestService    = "kstate.test.v1.EventSourcedTest"
	valueTestService = "kstate.test.v1.ValueTest"
)

// metricsNode starts a node with the in-process test entities and an admin listener on a free
// port, and waits until it serves.
func metricsNode(t *testing.T, brokers []string, app string, partitions int32, tune func(*Config)) (*Node, *grpc.ClientConn) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = fmt.Sprintf("metrics-%s-%d", app, nodeCounter.Add(1))
	cfg.DataDir = t.TempDir()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.AdminListenAddr = "127.0.0.1:0"
	cfg.Broker.Brokers = brokers
	cfg.Broker.App = app
	cfg.Broker.Partitions = partitions
	cfg.Logger = testLogger(t)
	if tune != nil {
		tune(&cfg)
	}
	n, err := New(cfg, WithEntities(inprocEntities()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if n.AdminAddr() == "" {
		t.Fatal("AdminAddr is empty with an admin listener configured")
	}
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	waitServing(t, cc)
	return n, cc
}

// scrape fetches the node's /metrics over HTTP and parses it as Prometheus text.
func scrape(t *testing.T, n *Node) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := adminGet(t, n, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs
}

func adminGet(t *testing.T, n *Node, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get("http://" + n.AdminAddr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// value sums the series of family name whose labels include every pair of want (a histogram
// counts its samples); found reports whether any series matched.
func value(mfs map[string]*dto.MetricFamily, name string, want ...string) (sum float64, found bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, want...) {
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
		case dto.MetricType_UNTYPED:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, found
}

func hasLabels(m *dto.Metric, pairs ...string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// wantValue fails unless the series sum of name (filtered by labels) is want.
func wantValue(t *testing.T, mfs map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	if got, _ := value(mfs, name, labels...); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// wantAbove fails unless the series sum of name (filtered by labels) is above floor.
func wantAbove(t *testing.T, mfs map[string]*dto.MetricFamily, floor float64, name string, labels ...string) {
	t.Helper()
	if got, found := value(mfs, name, labels...); !found || got <= floor {
		t.Errorf("%s%v = %v (found %v), want > %v", name, labels, got, found, floor)
	}
}

// eventually polls the node's metrics until ok holds, within 30 s.
func eventually(t *testing.T, n *Node, what string, ok func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mfs := scrape(t, n)
		if ok(mfs) {
			return mfs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
}

// allowedLabels are the only label names kstate's metrics (and kprom's, Go's and the process
// collector's) use: all bounded. An entity id can appear under none of them.
var allowedLabels = []string{"partition", "service", "code", "outcome", "protocol", "route", "client", "node_id", "topic", "version", "goversion", "le", "quantile", "cause"}

// checkLabels fails if a series has a label outside allowedLabels, a service label that is not a
// service of the node, or a label value that contains one of the entity ids the test used.
func checkLabels(t *testing.T, n *Node, mfs map[string]*dto.MetricFamily, entityIDs []string) {
	t.Helper()
	var services []string
	for _, s := range n.Services() {
		services = append(services, s.Name)
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(allowedLabels, l.GetName()) {
					t.Errorf("%s has label %q, not one of the bounded labels %v", name, l.GetName(), allowedLabels)
				}
				if l.GetName() == "service" && !slices.Contains(services, l.GetValue()) {
					t.Errorf("%s has service %q, not a service of the node", name, l.GetValue())
				}
				for _, id := range entityIDs {
					if strings.Contains(l.GetValue(), id) {
						t.Errorf("%s{%s=%q} carries entity id %q", name, l.GetName(), l.GetValue(), id)
					}
				}
			}
		}
	}
}

// TestMetrics runs commands of every kind through one node and reads them back from /metrics
// over HTTP: commands by service and code, partitions owned and restored, transactions and their
// latency, ingress by protocol, routing, active entities and passivations, the Kafka clients'
// metrics, and no entity id in any label. pprof and readiness answer on the same listener, and
// Close stops it.
func TestMetrics(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	n, cc := metricsNode(t, brokers, kafkatest.Unique(t, "metrics"), 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es, val := testpb.NewEventSourcedTestClient(cc), testpb.NewValueTestClient(cc)
	ids := []string{"ent-7f3a91", "val-c40d2e", "rest-19b7aa", "conn-5e21f0"}

	for _, p := range []string{"a", "b"} {
		if _, err := es.Process(ctx, &testpb.Request{Id: ids[0], Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := es.Process(ctx, &testpb.Request{Id: ids[0], Payload: "bad"}); status.Code(err) != codes.Unknown {
		t.Fatalf("failing command: %v, want Unknown", err)
	}
	if _, err := val.Process(ctx, &testpb.Request{Id: ids[1], Payload: "x"}); err != nil {
		t.Fatal(err)
	}
	post := func(path, body string, hdr ...string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+n.Addr()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
		}
	}
	post("/test/"+ids[2], `{"payload":"r"}`)                                                                               // REST
	post("/kstate.test.v1.EventSourcedTest/Process", `{"id":"`+ids[3]+`","payload":"c"}`, "Connect-Protocol-Version", "1") // Connect

	// The ingress counts a call when its handler returns, which may be after the client has the
	// reply: wait for the count. Everything else was counted before the reply left.
	mfs := eventually(t, n, "ingress counts", func(mfs map[string]*dto.MetricFamily) bool {
		g, _ := value(mfs, "kstate_ingress_requests_total", "protocol", "grpc")
		h, _ := value(mfs, "kstate_ingress_requests_total", "protocol", "http")
		c, _ := value(mfs, "kstate_ingress_requests_total", "protocol", "connect")
		return g == 4 && h == 1 && c == 1
	})
	wantValue(t, mfs, 3, "kstate_ingress_requests_total", "protocol", "grpc", "code", "OK")
	wantValue(t, mfs, 1, "kstate_ingress_requests_total", "protocol", "grpc", "code", "Unknown")
	wantValue(t, mfs, 4, "kstate_commands_total", "service", esTestService, "code", "OK")
	wantValue(t, mfs, 1, "kstate_commands_total", "service", esTestService, "code", "Unknown")
	wantValue(t, mfs, 1, "kstate_commands_total", "service", valueTestService, "code", "OK")
	wantValue(t, mfs, 6, "kstate_command_duration_seconds")
	wantValue(t, mfs, 6, "kstate_router_commands_total", "route", "local")
	wantValue(t, mfs, 0, "kstate_router_commands_total", "route", "forwarded")

	wantValue(t, mfs, 2, "kstate_partition_owned")
	wantValue(t, mfs, 1, "kstate_partition_owned", "partition", "0")
	wantValue(t, mfs, 0, "kstate_partition_restoring")
	wantValue(t, mfs, 2, "kstate_partition_restore_duration_seconds")
	if done, _ := value(mfs, "kstate_partition_restore_progress_records"); done != func() float64 { v, _ := value(mfs, "kstate_partition_restore_target_records"); return v }() {
		t.Errorf("restore progress %v, want the target", done)
	}
	// 5 commands wrote records (the failed one wrote none), each in a transaction of its own
	// here (one client, one command at a time); ownership publications are not counted.
	wantValue(t, mfs, 5, "kstate_partition_transactions_total", "outcome", "committed")
	wantValue(t, mfs, 5, "kstate_partition_commit_duration_seconds")
	wantValue(t, mfs, 5, "kstate_partition_transaction_commands")
	wantAbove(t, mfs, 0, "kstate_active_entities", "service", esTestService)
	wantValue(t, mfs, 0, "kstate_user_function_stream_errors_total")
	wantAbove(t, mfs, 0, "kstate_kafka_produce_bytes_total", "client", "txn")
	wantAbove(t, mfs, 0, "kstate_kafka_connects_total", "client", "group")
	wantValue(t, mfs, 1, "kstate_build_info", "version", Version)
	wantAbove(t, mfs, 0, "go_goroutines")

	// The entities passivate after 100 ms idle (inprocEntities): an idle period is the input here.
	mfs = eventually(t, n, "passivation", func(mfs map[string]*dto.MetricFamily) bool {
		p, _ := value(mfs, "kstate_passivations_total", "service", esTestService)
		a, _ := value(mfs, "kstate_active_entities")
		return p >= 3 && a == 0
	})
	checkLabels(t, n, mfs, ids)

	// pprof and readiness on the same listener.
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/cmdline":           "",
		"/readyz":                        "ready",
		"/livez":                         "ok",
	} {
		code, body := adminGet(t, n, path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, body %.200q; want 200 with %q", path, code, body, want)
		}
	}
	if code, body := adminGet(t, n, "/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("CPU profile: %d, %d bytes", code, len(body))
	}
	if code, _ := adminGet(t, n, "/debug/pprof/nosuch"); code != http.StatusNotFound {
		t.Errorf("unknown profile: %d, want 404", code)
	}

	addr := n.AdminAddr()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get("http://" + addr + "/metrics"); err == nil {
		_ = resp.Body.Close()
		t.Fatal("the admin listener still answers after Close")
	}
}

// TestMetricsForwarded: two nodes in one process, each with its own registry; a command sent to
// the node that does not own its entity's partition is counted as forwarded there and as a
// command at the owner.
func TestMetricsForwarded(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	app := kafkatest.Unique(t, "metrics-fwd")
	fast := func(c *Config) { c.Broker.SessionTimeout = time.Second }
	a, ccA := metricsNode(t, brokers, app, 2, fast)
	b, _ := metricsNode(t, brokers, app, 2, fast)
	// Wait until the group gave each node one of the two partitions and both serve.
	ownsOne := func(mfs map[string]*dto.MetricFamily) bool {
		v, _ := value(mfs, "kstate_partition_owned")
		return v == 1
	}
	eventually(t, a, "node a owns one partition", ownsOne)
	eventually(t, b, "node b owns one partition", ownsOne)
	var p int32 = -1
	for q := int32(0); q < 2; q++ {
		if b.localOwner(q) != nil {
			p = q
		}
	}
	if p < 0 {
		t.Fatal("node b owns no partition")
	}
	var id string
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("fwd-%d", i); broker.Partition([]byte(c), 2) == p {
			id = c
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := testpb.NewEventSourcedTestClient(ccA).Process(ctx, &testpb.Request{Id: id, Payload: "f"}); err != nil {
		t.Fatal(err)
	}
	ma := scrape(t, a)
	wantAbove(t, ma, 0, "kstate_router_commands_total", "route", "forwarded")
	wantValue(t, ma, 0, "kstate_commands_total", "service", esTestService)
	mb := scrape(t, b)
	wantValue(t, mb, 1, "kstate_commands_total", "service", esTestService, "code", "OK")
	wantValue(t, mb, 0, "kstate_router_commands_total")
	wantValue(t, mb, 1, "kstate_partition_owned", "partition", fmt.Sprint(p))
	checkLabels(t, a, ma, []string{id})
	checkLabels(t, b, mb, []string{id})
}

// gather reads the node's registry directly (no admin listener needed).
func gather(t *testing.T, n *Node) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := n.met.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	mfs := make(map[string]*dto.MetricFamily, len(fams))
	for _, mf := range fams {
		mfs[mf.GetName()] = mf
	}
	return mfs
}

// checkQuarantineMetrics: partition p quarantined two records while restoring offsets of Kafka,
// and its restore progress reached its target.
func checkQuarantineMetrics(t *testing.T, n *Node, p int32, offsets float64) {
	t.Helper()
	mfs := gather(t, n)
	part := fmt.Sprint(p)
	wantValue(t, mfs, 2, "kstate_partition_quarantined_records_total", "partition", part)
	wantValue(t, mfs, offsets, "kstate_partition_restore_target_records", "partition", part)
	wantValue(t, mfs, offsets, "kstate_partition_restore_progress_records", "partition", part)
	wantValue(t, mfs, 1, "kstate_partition_owned", "partition", part)
}

// TestUserFunctionFault: the errors a write returns are the runtime's; stream errors and crashes
// are the user function's.
func TestUserFunctionFault(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("persist: %w", fromCore(core.ErrNotOwner)), false},
		{fmt.Errorf("persist: %w", fromCore(fmt.Errorf("%w: x", core.ErrFenced))), false},
		{fmt.Errorf("persist: %w", fromCore(fmt.Errorf("%w: x", core.ErrAborted))), false},
		{fmt.Errorf("persist: %w", fromCore(fmt.Errorf("%w: x", core.ErrOutcomeUnknown))), false},
		{fmt.Errorf("persist: %w", fromCore(fmt.Errorf("%w: x", core.ErrRecordTooLarge))), false},
		{fmt.Errorf("persist: %w", catalog.ErrNotOwner), false},
		{fmt.Errorf("%w: boom", errCrashed), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{fmt.Errorf("open stream: %w", context.DeadlineExceeded), true},
		{io.EOF, true},
	} {
		if got := userFunctionFault(tc.err); got != tc.want {
			t.Errorf("userFunctionFault(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestMetricsRegistryPerNode: a node's metrics live in its own registry, so two nodes built in
// one process never collide, and the global default registry stays untouched.
func TestMetricsRegistryPerNode(t *testing.T) {
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	var nodes []*Node
	for i := 0; i < 2; i++ {
		n, err := New(cfg, WithEntities(inprocEntities()...))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	nodes[0].met.Partition(3).SetOwned(true)
	for i, n := range nodes {
		c, err := testutil.GatherAndCount(n.met.Registry(), "kstate_partition_owned")
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 - i; c != want {
			t.Errorf("node %d: %d kstate_partition_owned series, want %d", i, c, want)
		}
	}
	after, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("the default registry went from %d to %d families", len(before), len(after))
	}
}
