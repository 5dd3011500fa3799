// Package bench is the harness of `kstate bench`. Run runs the modes of a Config: it starts the
// processes under test as children of the kstate binary (a broker, nodes, a user function, the
// bare reference server), waits until every partition serves, drives a closed-loop load
// (RunLoad) with per-worker latency histograms (Histogram), samples CPU time and memory of the
// processes from /proc (ReadProc), measures memory per active entity, restore and failover, and
// assembles the report with its targets (Report), printed as Markdown tables or JSON.
//
// The in-process sides of the hidden child commands live here too: the bare reference's
// group-commit server (ServeRef), the /memstats endpoint and CPU profile of `kstate bench exec`
// (ServeMemStats, StartCPUProfile).
//
// internal/ may not import kstate's broker, SDK or examples, so cmd/kstate passes in what the
// harness needs of them (Kstate, RefConfig) and keeps that wiring, the cobra commands and the
// flags. Files, one per concern: run.go (Config, Run, the order of modes), child.go (a child
// process), sut.go (a system under test: broker, nodes, readiness), workload.go, throughput.go,
// mem.go, restore.go, failover.go, ref.go (the bare reference), exec.go, merge.go, load.go,
// hist.go, proc.go, codes.go and report.go.
package bench
