package processor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/tracing"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// inprocESPID is the persistence id of the in-process event-sourced test entity (inprocEntities).
const inprocESPID = "inproc-es"

// recorder is a tracer provider that exports every span, synchronously, to memory.
type recorder struct {
	tp  *sdktrace.TracerProvider
	exp *tracetest.InMemoryExporter
}

func newRecorder(t *testing.T) recorder {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) }) // after the node's Close (LIFO)
	return recorder{tp: tp, exp: exp}
}

// noTracingEnv clears the variables that would turn tracing on from the environment.
func noTracingEnv(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "KSTATE_TRACE_ENTITY_IDS"} {
		t.Setenv(k, "")
	}
}

// tracedNode starts a node with the in-process test entities and opts, and waits until it serves.
func tracedNode(t *testing.T, brokers []string, app string, partitions int32, opts ...Option) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID = fmt.Sprintf("trace-%s-%d", app, nodeCounter.Add(1))
	cfg.DataDir = t.TempDir()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Broker.Brokers = brokers
	cfg.Broker.App = app
	cfg.Broker.Partitions = partitions
	cfg.Broker.SessionTimeout = time.Second
	cfg.Logger = testLogger(t)
	n, err := New(cfg, append([]Option{WithEntities(inprocEntities()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// ownedCount is how many partitions n serves.
func ownedCount(n *Node) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.restored)
}

// waitOwned polls (bounded) until every node serves want partitions.
func waitOwned(t *testing.T, want int, nodes ...*Node) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, n := range nodes {
			ok = ok && ownedCount(n) == want
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes do not serve %d partitions each within 30s", want)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
}

// entityIn returns an entity id of partition p of partitions.
func entityIn(prefix string, p, partitions int32) string {
	for i := 0; ; i++ {
		if id := fmt.Sprintf("%s-%d", prefix, i); broker.Partition([]byte(id), partitions) == p {
			return id
		}
	}
}

// postProcess calls EventSourcedTest/Process over HTTP/JSON (POST /test/{id}) with headers.
func postProcess(t *testing.T, n *Node, id, payload string, headers map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.Addr()+"/test/"+id, strings.NewReader(`{"payload":"`+payload+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /test/%s: %d %s", id, resp.StatusCode, body)
	}
}

// recordOf returns the journal record of entity id (its only event).
func recordOf(t *testing.T, n *Node, id string) broker.Record {
	t.Helper()
	waitJournal(t, n, inprocESPID, id)
	for _, r := range journal(t, n, inprocESPID) {
		if string(r.Key) == id {
			return r
		}
	}
	t.Fatalf("no journal record of %s", id)
	return broker.Record{}
}

// spanMatch selects a span.
type spanMatch struct {
	name string
	kind trace.SpanKind
}

// waitSpans polls (bounded) until each of want has ended on its recorder, and returns them in
// want's order. Spans end just after the reply is sent, so the caller may get there first.
func waitSpans(t *testing.T, want map[spanMatch]recorder) map[spanMatch]tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := make(map[spanMatch]tracetest.SpanStub)
		for m, r := range want {
			for _, s := range r.exp.GetSpans() {
				if s.Name == m.name && s.SpanKind == m.kind {
					got[m] = s
				}
			}
		}
		if len(got) == len(want) {
			return got
		}
		if time.Now().After(deadline) {
			var missing []string
			for m := range want {
				if _, ok := got[m]; !ok {
					missing = append(missing, m.name+"/"+m.kind.String())
				}
			}
			t.Fatalf("spans not recorded within 10s: %v", missing)
		}
		time.Sleep(10 * time.Millisecond) // polling interval of a bounded wait
	}
}

func attr(s tracetest.SpanStub, key string) (string, bool) {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit(), true
		}
	}
	return "", false
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func wantParent(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	if child.Parent.SpanID() != parent.SpanContext.SpanID() || child.Parent.TraceID() != parent.SpanContext.TraceID() {
		t.Errorf("span %s has parent %s, want %s (%s)", child.Name, child.Parent.SpanID(), parent.SpanContext.SpanID(), parent.Name)
	}
}

// TestTracingHTTPForwardToJournal is the trace of issue 12: an HTTP/JSON call carrying a W3C
// traceparent reaches node A, which forwards it to node B, the owner of the entity's partition;
// B runs it and writes its event. Every span on the way — A's ingress, routing and Forward
// client, B's Forward server, command and activation — is in the client's trace, and the journal
// record's traceparent header names B's command span, so a consumer of the journal continues the
// same trace. The commit is a span of its own that links to the command. No span carries the
// entity id (it is off by default).
func TestTracingHTTPForwardToJournal(t *testing.T) {
	noTracingEnv(t)
	brokers := kafkatest.Kfake(t)
	app := kafkatest.Unique(t, "trace-fwd")
	ra, rb := newRecorder(t), newRecorder(t)
	a := tracedNode(t, brokers, app, 2, WithTracerProvider(ra.tp))
	b := tracedNode(t, brokers, app, 2, WithTracerProvider(rb.tp))
	waitOwned(t, 1, a, b)
	var p int32
	for q := range int32(2) {
		if b.localOwner(q) != nil {
			p = q
		}
	}
	id := entityIn("fwd", p, 2)

	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	postProcess(t, a, id, "f", map[string]string{"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"})

	ingress := spanMatch{"kstate.test.v1.EventSourcedTest/Process", trace.SpanKindServer}
	route := spanMatch{tracing.SpanRoute, trace.SpanKindInternal}
	fwdClient := spanMatch{"kstate.v1.Node/Forward", trace.SpanKindClient}
	fwdServer := spanMatch{"kstate.v1.Node/Forward", trace.SpanKindServer}
	command := spanMatch{tracing.SpanCommand, trace.SpanKindInternal}
	activate := spanMatch{tracing.SpanActivate, trace.SpanKindInternal}
	commit := spanMatch{tracing.SpanCommit, trace.SpanKindProducer}
	s := waitSpans(t, map[spanMatch]recorder{
		ingress: ra, route: ra, fwdClient: ra,
		fwdServer: rb, command: rb, activate: rb, commit: rb,
	})

	// One trace, from the client's span through both nodes.
	for _, m := range []spanMatch{ingress, route, fwdClient, fwdServer, command, activate} {
		if got := s[m].SpanContext.TraceID().String(); got != clientTrace {
			t.Errorf("span %s/%s in trace %s, want the client's %s", m.name, m.kind, got, clientTrace)
		}
	}
	if got := s[ingress].Parent; got.SpanID().String() != clientSpan || !got.IsRemote() {
		t.Errorf("ingress span's parent %s (remote %v), want the client's span %s from the traceparent header", got.SpanID(), got.IsRemote(), clientSpan)
	}
	wantParent(t, s[route], s[ingress])
	wantParent(t, s[fwdClient], s[route])
	wantParent(t, s[fwdServer], s[fwdClient])
	wantParent(t, s[command], s[fwdServer])
	wantParent(t, s[activate], s[command])
	if v, _ := attr(s[route], string(tracing.AttrRoute)); v != "forwarded" {
		t.Errorf("route span: kstate.route = %q, want forwarded", v)
	}
	if v, _ := attr(s[route], string(tracing.AttrPartition)); v != fmt.Sprint(p) {
		t.Errorf("route span: kstate.partition = %q, want %d", v, p)
	}
	if v, _ := attr(s[command], string(tracing.AttrService)); v != esTestService {
		t.Errorf("command span: kstate.service = %q, want %s", v, esTestService)
	}
	if v, _ := attr(s[command], string(tracing.AttrMethod)); v != "Process" {
		t.Errorf("command span: kstate.method = %q, want Process", v)
	}

	// The commit: its own trace, linked to the command.
	c := s[commit]
	if c.Parent.IsValid() {
		t.Errorf("commit span has parent %s, want a root span", c.Parent.SpanID())
	}
	linked := false
	for _, l := range c.Links {
		linked = linked || l.SpanContext.SpanID() == s[command].SpanContext.SpanID() && l.SpanContext.TraceID() == s[command].SpanContext.TraceID()
	}
	if !linked {
		t.Errorf("commit span links %v, want a link to the command span %s", c.Links, s[command].SpanContext.SpanID())
	}
	for k, floor := range map[string]int{string(tracing.AttrCommitCommands): 1, string(tracing.AttrCommitRecords): 1} {
		if v, _ := attr(c, k); atoi(v) < floor {
			t.Errorf("commit span: %s = %q, want ≥ %d", k, v, floor)
		}
	}
	if v, _ := attr(c, string(tracing.AttrCommitOutcome)); v != "committed" {
		t.Errorf("commit span: outcome %q, want committed", v)
	}

	// The journal record continues the command's trace.
	rec := recordOf(t, b, id)
	tp, ok := rec.HeaderValue(kstatev1.HeaderTraceParent)
	if !ok {
		t.Fatalf("journal record of %s has no %s header: %v", id, kstatev1.HeaderTraceParent, rec.Headers)
	}
	if _, ok := rec.HeaderValue(kstatev1.HeaderTraceState); ok {
		t.Errorf("journal record has a %s header; the trace has none", kstatev1.HeaderTraceState)
	}
	sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), string(tp), ""))
	if sc.TraceID().String() != clientTrace || sc.SpanID() != s[command].SpanContext.SpanID() || !sc.IsSampled() {
		t.Errorf("journal record's traceparent %s, want trace %s and the command span %s, sampled", tp, clientTrace, s[command].SpanContext.SpanID())
	}

	// Entity ids stay out of spans unless asked for.
	for _, r := range []recorder{ra, rb} {
		for _, sp := range r.exp.GetSpans() {
			for _, kv := range sp.Attributes {
				if strings.Contains(kv.Value.Emit(), id) {
					t.Errorf("span %s carries the entity id in %s=%s", sp.Name, kv.Key, kv.Value.Emit())
				}
			}
		}
	}
}

// TestTracingLocalRoute: a gRPC call whose trace has a tracestate runs on the node's own
// partition (route local); the records carry both traceparent and tracestate, and with
// WithTracingEntityIDs the spans name the entity.
func TestTracingLocalRoute(t *testing.T) {
	noTracingEnv(t)
	brokers := kafkatest.Kfake(t)
	r := newRecorder(t)
	n := tracedNode(t, brokers, kafkatest.Unique(t, "trace-local"), 1, WithTracerProvider(r.tp), WithTracingEntityIDs())
	waitOwned(t, 1, n)
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const clientTrace = "0af7651916cd43dd8448eb211c80319c"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+clientTrace+"-b7ad6b7169203331-01", "tracestate", "vendor=v1")
	if _, err := testpb.NewEventSourcedTestClient(cc).Process(ctx, &testpb.Request{Id: "local-1", Payload: "x"}); err != nil {
		t.Fatal(err)
	}
	route := spanMatch{tracing.SpanRoute, trace.SpanKindInternal}
	command := spanMatch{tracing.SpanCommand, trace.SpanKindInternal}
	s := waitSpans(t, map[spanMatch]recorder{route: r, command: r})
	wantParent(t, s[command], s[route])
	if v, _ := attr(s[route], string(tracing.AttrRoute)); v != "local" {
		t.Errorf("route span: kstate.route = %q, want local", v)
	}
	for _, m := range []spanMatch{route, command} {
		if v, _ := attr(s[m], string(tracing.AttrEntityID)); v != "local-1" {
			t.Errorf("%s span: kstate.entity.id = %q, want local-1 (WithTracingEntityIDs)", m.name, v)
		}
	}
	rec := recordOf(t, n, "local-1")
	tp, _ := rec.HeaderValue(kstatev1.HeaderTraceParent)
	ts, _ := rec.HeaderValue(kstatev1.HeaderTraceState)
	sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), string(tp), string(ts)))
	if sc.SpanID() != s[command].SpanContext.SpanID() || sc.TraceID().String() != clientTrace {
		t.Errorf("record traceparent %s, want the command span %s of trace %s", tp, s[command].SpanContext.SpanID(), clientTrace)
	}
	if string(ts) != "vendor=v1" {
		t.Errorf("record tracestate %q, want vendor=v1", ts)
	}
}

// TestTracingOff: with no provider and no OTEL_* variable the node has no tracing at all — no
// stats handler, span or hook work — and a client's traceparent reaches no record.
func TestTracingOff(t *testing.T) {
	noTracingEnv(t)
	brokers := kafkatest.Kfake(t)
	n := tracedNode(t, brokers, kafkatest.Unique(t, "trace-off"), 1)
	if n.tr != nil {
		t.Fatal("tracing is on without a provider or OTEL_* variables")
	}
	if len(n.tr.ServerOptions()) != 0 || len(n.tr.DialOptions()) != 0 || len(n.tr.UserFunctionDialOptions(entityStreams...)) != 0 {
		t.Fatal("tracing off still installs gRPC stats handlers")
	}
	waitOwned(t, 1, n)
	postProcess(t, n, "off-1", "x", map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	rec := recordOf(t, n, "off-1")
	for _, h := range rec.Headers {
		if h.Key == kstatev1.HeaderTraceParent || h.Key == kstatev1.HeaderTraceState {
			t.Errorf("tracing off, but the record has a %s header", h.Key)
		}
	}
}

// TestTracingFromEnv: the OTEL_* variables alone turn tracing on; the node builds and owns its
// provider and flushes it at Close, exporting over OTLP/HTTP to the configured endpoint.
func TestTracingFromEnv(t *testing.T) {
	noTracingEnv(t)
	var exports, bytes atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			b, _ := io.ReadAll(r.Body)
			exports.Add(1)
			bytes.Add(int64(len(b)))
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
	}))
	defer sink.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_SERVICE_NAME", "kstate-test")
	brokers := kafkatest.Kfake(t)
	n := tracedNode(t, brokers, kafkatest.Unique(t, "trace-env"), 1)
	if n.tr == nil {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT set, but tracing is off")
	}
	waitOwned(t, 1, n)
	postProcess(t, n, "env-1", "x", nil)
	if _, ok := recordOf(t, n, "env-1").HeaderValue(kstatev1.HeaderTraceParent); !ok {
		t.Error("traced from the environment, but the record has no traceparent")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if exports.Load() == 0 || bytes.Load() == 0 {
		t.Fatalf("no spans exported to %s by Close (%d requests, %d bytes)", sink.URL, exports.Load(), bytes.Load())
	}
}

// TestTracingBadEnv: a variable kstate cannot honour fails New with its name.
func TestTracingBadEnv(t *testing.T) {
	noTracingEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	cfg := testConfig(t, []string{"127.0.0.1:1"}, "bad-env", "127.0.0.1:1")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_EXPORTER") {
		t.Fatalf("New with OTEL_TRACES_EXPORTER=zipkin: %v, want an error naming the variable", err)
	}
}

// TestTracingUserFunctionMetadata: an entity's stream to a remote user function gets no span (it
// lives as long as the entity); each command on it carries the command span's traceparent in its
// metadata, in place of the one the client sent.
func TestTracingUserFunctionMetadata(t *testing.T) {
	noTracingEnv(t)
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	r := newRecorder(t)
	n, err := New(testConfig(t, brokers, kafkatest.Unique(t, "trace-uf"), uf.addr), WithTracerProvider(r.tp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitOwned(t, 4, n)
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const clientTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ch := make(chan error, 1)
	go func() {
		ctx := metadata.AppendToOutgoingContext(ctx, "traceparent", clientTP)
		_, err := testpb.NewEventSourcedTestClient(cc).Process(ctx, &testpb.Request{Id: "uf-1", Payload: "a"})
		ch <- err
	}()
	fs := uf.next(t)
	expectInit(t, fs, esService, "uf-1")
	c := expectCommand(t, fs, 1, "Process")
	fs.send(replyOut(1, &testpb.Response{Message: "ok"}, []*anypb.Any{event(t, "e1")}, nil))
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	var tps []string
	for _, e := range c.GetMetadata().GetEntries() {
		if e.GetKey() == "traceparent" {
			tps = append(tps, e.GetStringValue())
		}
	}
	command := spanMatch{tracing.SpanCommand, trace.SpanKindInternal}
	s := waitSpans(t, map[spanMatch]recorder{command: r})
	sc := s[command].SpanContext
	if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; len(tps) != 1 || tps[0] != want {
		t.Errorf("command metadata traceparent %v, want only the command span's %s", tps, want)
	}
	for _, sp := range r.exp.GetSpans() {
		if sp.Name == "cloudstate.eventsourced.EventSourced/handle" {
			t.Errorf("the entity's stream has a span %s", sp.Name)
		}
	}
}

// BenchmarkTracingCommand compares a command's cost (time and allocations, node and client in
// one process, on kfake) with tracing off and on as an operator turns it on: OTLP/HTTP to a
// collector stand-in that discards, OTEL_TRACES_SAMPLER=parentbased_traceidratio, 1%.
func BenchmarkTracingCommand(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts func(b *testing.B) []Option
	}{
		{"off", func(*testing.B) []Option { return nil }},
		{"on-1pct", func(b *testing.B) []Option {
			sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusOK)
			}))
			b.Cleanup(sink.Close)
			b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.URL)
			b.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
			b.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.01")
			return nil
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			brokers := kafkatest.Kfake(b)
			n := benchNode(b, brokers, kafkatest.Unique(b, "trace-bench"), tc.opts(b)...)
			cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			client := testpb.NewEventSourcedTestClient(cc)
			var seq atomic.Int64
			b.SetParallelism(16)
			b.ReportAllocs()
			cpu0 := processCPU()
			b.ResetTimer()
			defer func() { b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					_, err := client.Process(ctx, &testpb.Request{Id: "b" + strconv.Itoa(int(seq.Add(1)%1000)), Payload: "x"})
					cancel()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchNode is tracedNode for benchmarks.
func benchNode(b *testing.B, brokers []string, app string, opts ...Option) *Node {
	cfg := DefaultConfig()
	cfg.NodeID = fmt.Sprintf("bench-%s-%d", app, nodeCounter.Add(1))
	cfg.DataDir = b.TempDir()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Broker.Brokers = brokers
	cfg.Broker.App = app
	cfg.Broker.Partitions = 4
	n, err := New(cfg, append([]Option{WithEntities(inprocEntities()...)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for ownedCount(n) != 4 {
		if time.Now().After(deadline) {
			b.Fatal("node does not serve within 30s")
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
	return n
}

// processCPU is the process's user and system CPU time: a benchmark's cost on a shared machine,
// where wall time also measures the neighbours.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
