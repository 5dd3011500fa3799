package bench

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TraceSampleRatio is the head sampling ratio of the es-traced mode's node (issue 12: tracing
// sampled at 1%).
const TraceSampleRatio = "0.01"

// otlpSink stands in for an OpenTelemetry collector in the es-traced mode: it accepts OTLP/HTTP
// trace exports (POST /v1/traces, protobuf) on a loopback port, answers each with an empty
// ExportTraceServiceResponse and counts the spans, so the node pays the whole export path
// (encoding, HTTP) without a collector's CPU on the shared machine. It runs in the bench driver.
type otlpSink struct {
	lis      net.Listener
	srv      *http.Server
	done     chan struct{}
	requests atomic.Int64
	spans    atomic.Int64
}

func startOTLPSink() (*otlpSink, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{lis: lis, done: make(chan struct{})}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.export), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return
		}
	}()
	return s, nil
}

func (s *otlpSink) export(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	s.requests.Add(1)
	s.spans.Add(int64(n))
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse: everything accepted
}

// env is the node's environment for exporting to the sink at TraceSampleRatio.
func (s *otlpSink) env() []string {
	return []string{
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + s.lis.Addr().String(),
		"OTEL_TRACES_SAMPLER=parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG=" + TraceSampleRatio,
		"OTEL_SERVICE_NAME=kstate-bench",
	}
}

func (s *otlpSink) close() {
	_ = s.srv.Close()
	<-s.done
}
