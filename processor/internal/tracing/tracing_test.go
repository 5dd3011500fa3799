package tracing

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(kv ...string) func(string) string {
	m := make(map[string]string)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParseEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      func(string) string
		enabled  bool
		protocol string
		sampler  string // a substring of the sampler's description
		ids      bool
		parent   bool // a parentbased_ sampler
		err      string
	}{
		{name: "nothing set: off", env: env()},
		{name: "endpoint: on, http/protobuf, parentbased_always_on", env: env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), parent: true,
			enabled: true, protocol: ProtocolHTTP, sampler: "ParentBased{root:AlwaysOnSampler"},
		{name: "traces endpoint", env: env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces"), enabled: true, protocol: ProtocolHTTP, parent: true},
		{name: "a ratio that ignores the parent", env: env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0.5"),
			enabled: true, protocol: ProtocolHTTP, sampler: "TraceIDRatioBased{0.5}"},
		{name: "exporter otlp over grpc, 1%", env: env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
			"OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0.01"),
			enabled: true, protocol: ProtocolGRPC, sampler: "TraceIDRatioBased{0.01}", parent: true},
		{name: "traces protocol wins", env: env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
			enabled: true, protocol: ProtocolHTTP, parent: true},
		{name: "exporter none beats an endpoint", env: env("OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")},
		{name: "sdk disabled", env: env("OTEL_SDK_DISABLED", "true", "OTEL_TRACES_EXPORTER", "otlp")},
		{name: "entity ids", env: env("KSTATE_TRACE_ENTITY_IDS", "true"), ids: true},
		{name: "unknown exporter", env: env("OTEL_TRACES_EXPORTER", "jaeger"), err: "OTEL_TRACES_EXPORTER"},
		{name: "http/json", env: env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), err: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "bad ratio", env: env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "2"), err: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "unknown sampler", env: env("OTEL_TRACES_EXPORTER", "otlp", "OTEL_TRACES_SAMPLER", "jaeger_remote"), err: "OTEL_TRACES_SAMPLER"},
		{name: "bad bool", env: env("OTEL_SDK_DISABLED", "yes please"), err: "OTEL_SDK_DISABLED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEnv(tc.env)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Enabled != tc.enabled || got.Protocol != tc.protocol && tc.enabled || got.EntityIDs != tc.ids || got.ParentBased != tc.parent && tc.enabled {
				t.Fatalf("got %+v, want enabled %v protocol %q entity ids %v", got, tc.enabled, tc.protocol, tc.ids)
			}
			if tc.enabled && !strings.Contains(got.Sampler.Description(), tc.sampler) {
				t.Fatalf("sampler %s, want %s", got.Sampler.Description(), tc.sampler)
			}
		})
	}
}

// TestLinkSampler: a commit linked to a sampled command is sampled even when the sampler drops
// every root; one linked to unsampled spans only is left to the base sampler; a transaction with
// no sampled command gets no span at all.
func TestLinkSampler(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(LinkSampler(sdktrace.ParentBased(sdktrace.NeverSample()))))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := New(tp, Options{})
	sampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled})
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{2}, SpanID: trace.SpanID{2}})
	links := tr.Link(tr.Link(nil, unsampled), sampled)
	if len(links) != 1 || !links[0].SpanContext.Equal(sampled) {
		t.Fatalf("links %v, want only the sampled command", links)
	}
	tr.StartCommit(3, 2, 5, links).EndCommit("committed", nil)
	if s := tr.StartCommit(3, 1, 1, tr.Link(nil, unsampled)); s != nil {
		t.Fatal("a commit span for a transaction with no sampled command")
	}
	_, s := tp.Tracer("t").Start(context.Background(), "linked to unsampled", trace.WithLinks(trace.Link{SpanContext: unsampled}))
	s.End()
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != SpanCommit || len(spans[0].Links) != 1 {
		t.Fatalf("recorded %v, want the linked commit only", spans)
	}
}

// TestParentBasedSkip: with a parent-based sampler kstate starts no span of its own in an
// unsampled trace; the context (and so the records' traceparent) stays the parent's.
func TestParentBasedSkip(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := New(tp, Options{ParentBased: true})
	unsampled := trace.ContextWithRemoteSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{2}, SpanID: trace.SpanID{2}}))
	ctx, s := tr.StartRoute(unsampled, "s", "m", "id", 0)
	if s != nil || ctx != unsampled {
		t.Fatal("a route span in an unsampled trace")
	}
	if tp, _ := tr.TraceContext(ctx); tp != "00-02000000000000000000000000000000-0200000000000000-00" {
		t.Fatalf("traceparent %q, want the unsampled parent's", tp)
	}
	sampled := trace.ContextWithRemoteSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled}))
	_, s = tr.StartRoute(sampled, "s", "m", "id", 0)
	s.End(0, nil)
	_, s = tr.StartRoute(context.Background(), "s", "m", "id", 0) // a root: the sampler decides
	s.End(0, nil)
	if n := len(exp.GetSpans()); n != 2 {
		t.Fatalf("%d spans, want the sampled trace's and the root's", n)
	}
}

// TestOffCostsNothing: with tracing off (a nil *Tracing) the runtime's hooks allocate nothing
// and hand their inputs back.
func TestOffCostsNothing(t *testing.T) {
	var tr *Tracing
	ctx := context.Background()
	md := &cloudstatepb.Metadata{}
	allocs := testing.AllocsPerRun(100, func() {
		c, route := tr.StartRoute(ctx, "s", "m", "id", 1)
		tr.Routed(c, "local")
		c, cmd := tr.StartCommand(c, "s", "m", "id", 1)
		tr.StartActivation(c, "s", "id", 1).End(0, nil)
		if hp, _ := tr.HeaderValues(c); hp != nil {
			t.Fatal("a traceparent header with tracing off")
		}
		if tp, _ := tr.TraceContext(c); tp != "" {
			t.Fatal("a traceparent with tracing off")
		}
		if tr.Metadata(c, md) != md {
			t.Fatal("metadata rewritten with tracing off")
		}
		links := tr.Link(nil, tr.SpanContext(c))
		tr.StartCommit(1, 1, 1, links).EndCommit("committed", nil)
		_ = tr.Follow(ctx, c)
		cmd.End(0, nil)
		route.Attempts(1)
		route.End(0, nil)
		if c != ctx || links != nil {
			t.Fatal("hooks changed their inputs with tracing off")
		}
	})
	if allocs != 0 {
		t.Fatalf("tracing off: %v allocations per command's hooks, want 0", allocs)
	}
	if tr.ServerOptions() != nil || tr.DialOptions() != nil || tr.UserFunctionDialOptions("x") != nil || tr.Shutdown(ctx) != nil {
		t.Fatal("tracing off returns gRPC options or fails Shutdown")
	}
}

// TestMetadata: a command's Cloudstate metadata gets the span's trace context in place of the
// client's, other entries kept, the original untouched.
func TestMetadata(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := New(tp, Options{})
	ctx, span := tr.StartCommand(context.Background(), "s", "m", "id", 0)
	defer span.End(0, nil)
	str := func(k, v string) *cloudstatepb.MetadataEntry {
		return &cloudstatepb.MetadataEntry{Key: k, Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: v}}
	}
	in := &cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{str("x-user", "u"), str(TraceParent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), str(TraceState, "a=b")}}
	out := tr.Metadata(ctx, in)
	want, _ := tr.TraceContext(ctx)
	var keys []string
	for _, e := range out.GetEntries() {
		keys = append(keys, e.GetKey()+"="+e.GetStringValue())
	}
	if got := strings.Join(keys, " "); got != "x-user=u "+TraceParent+"="+want {
		t.Fatalf("metadata %s, want x-user kept and the span's traceparent only", got)
	}
	if len(in.GetEntries()) != 3 || in.GetEntries()[1].GetStringValue() != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatal("Metadata changed its input")
	}
	sc := trace.SpanContextFromContext(Extract(context.Background(), want, ""))
	if sc.SpanID() != trace.SpanContextFromContext(ctx).SpanID() {
		t.Fatalf("traceparent %s does not name the span", want)
	}
}

// TestTraceParentFormat: kstate's traceparent is the W3C propagator's, byte for byte.
func TestTraceParentFormat(t *testing.T) {
	tr := New(sdktrace.NewTracerProvider(), Options{})
	ts, err := trace.ParseTraceState("a=1,b=2")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []trace.SpanContext{
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab, 1}, SpanID: trace.SpanID{0xcd, 2}, TraceFlags: trace.FlagsSampled}),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xff, 15: 1}, SpanID: trace.SpanID{7: 9}, TraceState: ts}),
	} {
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		want := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, want)
		tp, state := tr.TraceContext(ctx)
		hp, hs := tr.HeaderValues(ctx)
		if tp != want["traceparent"] || state != want["tracestate"] || string(hp) != tp || string(hs) != state {
			t.Errorf("traceparent %q %q, headers %q %q; want %q %q", tp, state, hp, hs, want["traceparent"], want["tracestate"])
		}
	}
	if hp, hs := tr.HeaderValues(context.Background()); hp != nil || hs != nil {
		t.Error("header values without a span")
	}
}
