package bench

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestOTLPSink: the es-traced mode's collector stand-in accepts an OTLP/HTTP export and counts
// its spans; the node's environment points the exporter at it at 1% sampling.
func TestOTLPSink(t *testing.T) {
	s, err := startOTLPSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	body, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{Name: "a"}, {Name: "b"}}}, {Spans: []*tracepb.Span{{Name: "c"}}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var endpoint string
	for _, kv := range s.env() {
		if v, ok := strings.CutPrefix(kv, "OTEL_EXPORTER_OTLP_ENDPOINT="); ok {
			endpoint = v
		}
	}
	resp, err := http.Post(endpoint+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || s.spans.Load() != 3 || s.requests.Load() != 1 {
		t.Fatalf("status %d, %d spans in %d requests; want 200, 3 in 1", resp.StatusCode, s.spans.Load(), s.requests.Load())
	}
	if !slices.Contains(s.env(), "OTEL_TRACES_SAMPLER_ARG="+TraceSampleRatio) {
		t.Fatalf("env %v does not sample at %s", s.env(), TraceSampleRatio)
	}
}

// TestTracingTarget: es-traced is judged against es round by round.
func TestTracingTarget(t *testing.T) {
	r := Report{Results: []Result{
		{Mode: "es", Broker: "b", PerSecond: 4000, Runs: []float64{3000, 4000, 5000}},
		// The median runs differ by 10% (3,600 vs 4,000), but every round by 3% or less.
		{Mode: "es-traced", Broker: "b", PerSecond: 3600, Runs: []float64{2950, 3900, 3600}},
	}}
	r.Finish()
	for _, x := range r.Targets {
		if strings.HasPrefix(x.Name, "tracing on") {
			if !x.Met || x.Measured != "0.975×" {
				t.Fatalf("target %+v, want met at 0.975× (median of 0.983, 0.975, 0.72)", x)
			}
			return
		}
	}
	t.Fatalf("no tracing target in %+v", r.Targets)
}
