// Package bench holds the parts of `kstate bench` that do not need kstate itself: a closed-loop
// load generator (RunLoad) with per-worker latency histograms (Histogram), resource sampling of
// the processes under test from /proc (ReadProc), error classification by gRPC code (Code), and
// the report with its targets (Report), printed as Markdown tables or JSON.
//
// The workloads (gRPC and HTTP calls to the example services), the processes under test and
// the bare reference server live in cmd/kstate; this package imports nothing of kstate's.
package bench
