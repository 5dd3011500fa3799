package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a run happened.
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	MemoryBytes int64  `json:"memory_bytes"`
	GoVersion   string `json:"go_version"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	// LoadStart and LoadEnd are the 1, 5 and 15 minute load averages when the run started and
	// ended: the machine may be shared, and a busy one lowers every number.
	LoadStart [3]float64 `json:"load_average_start"`
	LoadEnd   [3]float64 `json:"load_average_end"`
}

// DescribeMachine fills Machine from the Go runtime, /proc/cpuinfo, /proc/meminfo and
// /proc/loadavg (fields it cannot read stay empty).
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryBytes = memTotal(string(b))
	}
	m.LoadStart, _ = LoadAverage()
	return m
}

func cpuModel(cpuinfo string) string {
	for line := range strings.SplitSeq(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotal(meminfo string) int64 {
	for line := range strings.SplitSeq(meminfo, "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n << 10
		}
	}
	return 0
}

// Result is the measure of one throughput mode.
type Result struct {
	Mode        string  `json:"mode"`
	Broker      string  `json:"broker"`
	Concurrency int     `json:"concurrency"`
	Entities    int     `json:"entities"`
	Commands    uint64  `json:"commands"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"commands_per_sec"`
	// Latencies of successful commands.
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	// ServerCPU is the CPU time (user+sys) the processes under test (node, user function, or
	// the bare reference server) spent per successful command; BrokerCPU the broker's, when
	// its process is known (0: unknown); ClientCPU the bench driver's own.
	ServerCPU time.Duration `json:"server_cpu_per_command_ns"`
	BrokerCPU time.Duration `json:"broker_cpu_per_command_ns,omitempty"`
	ClientCPU time.Duration `json:"client_cpu_per_command_ns"`
	// ServerRSS is the resident memory of the processes under test at the end; BrokerRSS the
	// broker's (0: unknown).
	ServerRSS int64 `json:"server_rss_bytes"`
	BrokerRSS int64 `json:"broker_rss_bytes,omitempty"`
	// Errors counts failed commands in the measured window by gRPC code (or HTTP status).
	Errors map[string]uint64 `json:"errors"`
	// WarmupErrors counts failures during the warmup (not part of the measure).
	WarmupErrors map[string]uint64 `json:"warmup_errors,omitempty"`
	// VsBare is PerSecond divided by the bare reference's on the same broker at the same
	// concurrency (0: no such bare run); with repeated runs, the median of VsBareRuns.
	VsBare float64 `json:"vs_bare,omitempty"`
	// RecordsPerTxn is the journal's records per transaction over the whole run (warmup
	// included): how much the group commit batches. 0: not measured.
	RecordsPerTxn float64 `json:"records_per_transaction,omitempty"`
	// Runs holds every run's commands/s when the mode ran several times (--repeat); the other
	// fields are those of the median run.
	Runs []float64 `json:"runs_commands_per_sec,omitempty"`
	// VsBareRuns holds each round's ratio to the bare run of the same round; VsBare is then
	// their median (the lower middle one for an even count).
	VsBareRuns []float64 `json:"vs_bare_runs,omitempty"`
	// Spans are the spans the node exported by the end of the measured window (es-traced).
	Spans int64 `json:"spans_exported,omitempty"`
}

// Median returns the run with the median throughput (the lower one of the middle two for an
// even count), with Runs set to every run's commands/s in the order given.
func Median(runs []Result) Result {
	if len(runs) == 0 {
		return Result{}
	}
	sorted := slices.Clone(runs)
	slices.SortStableFunc(sorted, func(a, b Result) int { return cmp.Compare(a.PerSecond, b.PerSecond) })
	m := sorted[(len(sorted)-1)/2]
	if len(runs) > 1 {
		m.Runs = make([]float64, len(runs))
		for i, r := range runs {
			m.Runs[i] = r.PerSecond
		}
	}
	return m
}

// MemResult is the memory one node needs per active entity.
type MemResult struct {
	// Variant is "in-process" (the node holds the Go SDK's side of every entity stream too) or
	// "remote" (the entities live in a separate user-function process).
	Variant  string `json:"variant"`
	Broker   string `json:"broker"`
	Entities int    `json:"entities"`
	// RSSBefore and RSSAfter are the node's VmRSS before and after activating Entities entities,
	// each taken after a forced garbage collection that returns free memory to the OS.
	RSSBefore int64 `json:"rss_before_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	// PerEntity is (RSSAfter-RSSBefore)/Entities.
	PerEntity float64 `json:"rss_per_entity_bytes"`
	// HeapPerEntity, StackPerEntity and GoroutinesPerEntity split the growth: live heap after GC,
	// goroutine stacks, goroutines.
	HeapPerEntity       float64 `json:"heap_per_entity_bytes"`
	StackPerEntity      float64 `json:"stack_per_entity_bytes"`
	GoroutinesPerEntity float64 `json:"goroutines_per_entity"`
	// UserFunctionPerEntity is the remote user function's RSS growth per entity (remote only).
	UserFunctionPerEntity float64           `json:"user_function_rss_per_entity_bytes,omitempty"`
	Errors                map[string]uint64 `json:"errors"`
}

// FailoverResult is the time from killing a node to the first successful command for each
// partition it owned.
type FailoverResult struct {
	Broker         string        `json:"broker"`
	Nodes          int           `json:"nodes"`
	SessionTimeout time.Duration `json:"session_timeout_ns"`
	Rounds         int           `json:"rounds"`
	// Samples holds one recovery time per (round, partition of the killed node).
	Samples []time.Duration `json:"samples_ns"`
	P50     time.Duration   `json:"p50_ns"`
	P99     time.Duration   `json:"p99_ns"`
	Max     time.Duration   `json:"max_ns"`
	// Unrecovered counts partitions that did not serve again within the round's deadline.
	Unrecovered int `json:"unrecovered"`
	// Errors counts failed commands of the background load during the whole run.
	Errors map[string]uint64 `json:"errors"`
}

// Summarize fills P50, P99 and Max from Samples.
func (f *FailoverResult) Summarize() {
	qs := Quantiles(slices.Clone(f.Samples), 0.5, 0.99, 1)
	f.P50, f.P99, f.Max = qs[0], qs[1], qs[2]
}

// RestoreResult is a fresh node acquiring partitions whose topics hold Records records.
type RestoreResult struct {
	Broker     string `json:"broker"`
	Partitions int    `json:"partitions"`
	Records    int64  `json:"records"`
	// Slowest is the longest "took" of a partition acquisition (fence, publish, restore):
	// partitions restore in parallel, so the node is restored after Slowest.
	Slowest time.Duration `json:"slowest_partition_ns"`
	// Wall is from the node's start to its last partition acquired (includes joining the group).
	Wall time.Duration `json:"wall_ns"`
	// PerSecond is Records/Slowest: the node's restore rate.
	PerSecond float64 `json:"records_per_sec"`
	// PartitionPerSecond is the median over partitions of records/took.
	PartitionPerSecond float64 `json:"partition_records_per_sec_median"`
}

// Report is a whole `kstate bench` run.
type Report struct {
	Machine  Machine          `json:"machine"`
	Started  time.Time        `json:"started"`
	Args     []string         `json:"args"`
	Results  []Result         `json:"results,omitempty"`
	Memory   []MemResult      `json:"memory,omitempty"`
	Failover []FailoverResult `json:"failover,omitempty"`
	Restore  []RestoreResult  `json:"restore,omitempty"`
	Targets  []Target         `json:"targets,omitempty"`
}

// Target is one performance target of the issues, checked against a run.
type Target struct {
	Broker   string `json:"broker"`
	Name     string `json:"name"`
	Want     string `json:"want"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// Finish computes every result's ratio to the bare reference of its broker and checks the
// targets that the run measured. It may be called again on a report read back from JSON.
func (r *Report) Finish() {
	bare := map[string]Result{}
	for _, x := range r.Results {
		if x.Mode == "bare" {
			bare[x.Broker] = x
		}
	}
	for i := range r.Results {
		x := &r.Results[i]
		// Throughputs compare only at the same number of commands in flight (not seq's one).
		b, ok := bare[x.Broker]
		if !ok || b.PerSecond <= 0 || x.Mode == "bare" || x.Concurrency != b.Concurrency {
			continue
		}
		x.VsBare = x.PerSecond / b.PerSecond
		if len(x.Runs) > 1 && len(x.Runs) == len(b.Runs) {
			// Repeated runs alternate with the bare reference's: compare each with the bare run
			// of its own round (the same spell of a shared machine), and take the median.
			x.VsBareRuns = make([]float64, len(x.Runs))
			for i := range x.Runs {
				x.VsBareRuns[i] = x.Runs[i] / b.Runs[i]
			}
			sorted := slices.Clone(x.VsBareRuns)
			slices.Sort(sorted)
			x.VsBare = sorted[(len(sorted)-1)/2]
		}
	}
	r.Targets = r.checkTargets()
}

// roundRatio is x's throughput relative to base's: with repeated runs the median of the
// per-round ratios (each run against base's run of the same round, the same spell of a shared
// machine), else the ratio of the reported runs.
func roundRatio(x, base Result) float64 {
	if len(x.Runs) < 2 || len(x.Runs) != len(base.Runs) {
		return x.PerSecond / base.PerSecond
	}
	rs := make([]float64, len(x.Runs))
	for i := range x.Runs {
		rs[i] = x.Runs[i] / base.Runs[i]
	}
	slices.Sort(rs)
	return rs[(len(rs)-1)/2]
}

func (r *Report) result(broker, mode string) (Result, bool) {
	for _, x := range r.Results {
		if x.Broker == broker && x.Mode == mode {
			return x, true
		}
	}
	return Result{}, false
}

// brokers returns the brokers of the report in order of first appearance.
func (r *Report) brokers() []string {
	var out []string
	add := func(b string) {
		if !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	for _, x := range r.Results {
		add(x.Broker)
	}
	for _, x := range r.Memory {
		add(x.Broker)
	}
	for _, x := range r.Failover {
		add(x.Broker)
	}
	for _, x := range r.Restore {
		add(x.Broker)
	}
	return out
}

func (r *Report) checkTargets() []Target {
	var out []Target
	for _, b := range r.brokers() {
		add := func(name, want, measured string, met bool) {
			out = append(out, Target{Broker: b, Name: name, Want: want, Measured: measured, Met: met})
		}
		es, okES := r.result(b, "es")
		if x, ok := r.result(b, "es"); ok && x.VsBare > 0 {
			add("in-process Go entity vs bare reference", "≥ 0.70×", fmt.Sprintf("%.3f×", x.VsBare), x.VsBare >= 0.7)
		}
		if x, ok := r.result(b, "es-idem"); ok && okES && es.PerSecond > 0 {
			add("idempotency key on every command vs event-sourced throughput", "≥ 0.90×", fmt.Sprintf("%.3f×", x.PerSecond/es.PerSecond), x.PerSecond >= 0.9*es.PerSecond)
		}
		if x, ok := r.result(b, "es-traced"); ok && okES && es.PerSecond > 0 {
			v := roundRatio(x, es)
			add("tracing on, 1% sampled, vs event-sourced throughput (median of rounds)", "≥ 0.95×", fmt.Sprintf("%.3f×", v), v >= 0.95)
		}
		if x, ok := r.result(b, "es-remote"); ok && x.VsBare > 0 {
			add("remote user function vs bare reference", "≥ 0.50×", fmt.Sprintf("%.3f×", x.VsBare), x.VsBare >= 0.5)
		}
		if x, ok := r.result(b, "seq"); ok && x.Commands > 0 {
			add("one client in sequence, p50 (in-process)", "≤ 1 ms", FormatDuration(x.P50), x.P50 <= time.Millisecond)
		}
		var mem *MemResult
		for i := range r.Memory {
			// The runtime's own memory is measured best with a remote user function (the node
			// then holds no entity code); prefer it, then the most entities.
			if m := &r.Memory[i]; m.Broker == b && (mem == nil || memRank(m) > memRank(mem)) {
				mem = m
			}
		}
		if mem != nil {
			add(fmt.Sprintf("runtime memory per active entity (%s, %d entities)", mem.Variant, mem.Entities), "≤ 4 KiB",
				FormatBytes(mem.PerEntity), mem.PerEntity <= 4096)
		}
		for _, x := range r.Restore {
			if x.Broker == b {
				add("restore rate (end to end)", "≥ 200k events/s", FormatRate(x.PerSecond)+" records/s", x.PerSecond >= 200_000)
			}
		}
		for _, x := range r.Failover {
			if x.Broker == b && len(x.Samples) > 0 {
				add(fmt.Sprintf("failover p99 (session timeout %v)", x.SessionTimeout), "≤ 5 s (3 s session timeout)",
					FormatDuration(x.P99), x.P99 <= 5*time.Second && x.Unrecovered == 0 && x.SessionTimeout <= 3*time.Second)
			}
		}
		if x, ok := r.result(b, "value"); ok && okES && es.PerSecond > 0 {
			add("value entity vs event-sourced throughput", "≥ 1.00×", fmt.Sprintf("%.3f×", x.PerSecond/es.PerSecond), x.PerSecond >= es.PerSecond)
		}
		if x, ok := r.result(b, "http"); ok && okES && es.PerSecond > 0 {
			add("HTTP/JSON vs gRPC throughput", "≥ 0.60×", fmt.Sprintf("%.3f×", x.PerSecond/es.PerSecond), x.PerSecond >= 0.6*es.PerSecond)
		}
	}
	return out
}

func memRank(m *MemResult) int {
	if m.Variant == "remote" {
		return 1<<40 + m.Entities
	}
	return m.Entities
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as Markdown tables, readable in a terminal and pasteable into
// docs/benchmarks.md.
func (r *Report) WriteText(w io.Writer) error {
	p := &printer{w: w}
	m := r.Machine
	p.f("machine: %d CPUs (%s), %s memory, %s %s/%s; load average %.2f %.2f %.2f at start, %.2f %.2f %.2f at end\n",
		m.CPUs, orDash(m.CPUModel), FormatBytes(float64(m.MemoryBytes)), m.GoVersion, m.OS, m.Arch,
		m.LoadStart[0], m.LoadStart[1], m.LoadStart[2], m.LoadEnd[0], m.LoadEnd[1], m.LoadEnd[2])
	if len(r.Args) > 0 {
		p.f("command: kstate %s\n", strings.Join(r.Args, " "))
	}
	for _, b := range r.brokers() {
		p.f("\n### broker: %s\n", b)
		var rows []Result
		for _, x := range r.Results {
			if x.Broker == b {
				rows = append(rows, x)
			}
		}
		if len(rows) > 0 {
			p.f("\n| mode | in flight | commands/s | vs bare | p50 | p99 | p99.9 | server CPU/cmd | broker CPU/cmd | records/txn | server RSS | errors |\n")
			p.f("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
			for _, x := range rows {
				rate := FormatRate(x.PerSecond)
				if len(x.Runs) > 1 {
					rate += " (" + FormatRate(slices.Min(x.Runs)) + "–" + FormatRate(slices.Max(x.Runs)) + ")"
				}
				txn := "—"
				if x.RecordsPerTxn > 0 {
					txn = strconv.FormatFloat(x.RecordsPerTxn, 'f', 1, 64)
				}
				p.f("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.Mode, x.Concurrency, rate,
					ratio(x.VsBare), FormatDuration(x.P50), FormatDuration(x.P99), FormatDuration(x.P999),
					FormatDuration(x.ServerCPU), durOrDash(x.BrokerCPU), txn, FormatBytes(float64(x.ServerRSS)), FormatErrors(x.Errors))
			}
		}
		var mems []MemResult
		for _, x := range r.Memory {
			if x.Broker == b {
				mems = append(mems, x)
			}
		}
		if len(mems) > 0 {
			p.f("\n| memory: user function | active entities | node RSS before | after | RSS/entity | heap/entity | stacks/entity | goroutines/entity | user function RSS/entity | errors |\n")
			p.f("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
			for _, x := range mems {
				uf := "—"
				if x.Variant == "remote" {
					uf = FormatBytes(x.UserFunctionPerEntity)
				}
				p.f("| %s | %d | %s | %s | %s | %s | %s | %.1f | %s | %s |\n", x.Variant, x.Entities, FormatBytes(float64(x.RSSBefore)),
					FormatBytes(float64(x.RSSAfter)), FormatBytes(x.PerEntity), FormatBytes(x.HeapPerEntity), FormatBytes(x.StackPerEntity),
					x.GoroutinesPerEntity, uf, FormatErrors(x.Errors))
			}
		}
		for _, x := range r.Failover {
			if x.Broker != b {
				continue
			}
			p.f("\n| failover: nodes | session timeout | rounds | partitions measured | p50 | p99 | max | unrecovered | load errors |\n")
			p.f("|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
			p.f("| %d | %v | %d | %d | %s | %s | %s | %d | %s |\n", x.Nodes, x.SessionTimeout, x.Rounds, len(x.Samples),
				FormatDuration(x.P50), FormatDuration(x.P99), FormatDuration(x.Max), x.Unrecovered, FormatErrors(x.Errors))
		}
		for _, x := range r.Restore {
			if x.Broker != b {
				continue
			}
			p.f("\n| restore: partitions | records | slowest partition | node start → all acquired | records/s (node) | records/s (partition, median) |\n")
			p.f("|---:|---:|---:|---:|---:|---:|\n")
			p.f("| %d | %d | %s | %s | %s | %s |\n", x.Partitions, x.Records, FormatDuration(x.Slowest), FormatDuration(x.Wall),
				FormatRate(x.PerSecond), FormatRate(x.PartitionPerSecond))
		}
		var ts []Target
		for _, t := range r.Targets {
			if t.Broker == b {
				ts = append(ts, t)
			}
		}
		if len(ts) > 0 {
			p.f("\n| target | want | measured | met |\n|---|---|---|---|\n")
			for _, t := range ts {
				met := "not met"
				if t.Met {
					met = "met"
				}
				p.f("| %s | %s | %s | %s |\n", t.Name, t.Want, t.Measured, met)
			}
		}
	}
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func ratio(r float64) string {
	if r == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", r)
}

func durOrDash(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return FormatDuration(d)
}

// FormatDuration prints d with three significant digits in a unit that suits it: "850 ns",
// "12.3 µs", "1.25 ms", "4.10 s".
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + " µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + " ms"
	default:
		return sig3(d.Seconds()) + " s"
	}
}

// FormatBytes prints n bytes in B, KiB, MiB or GiB with three significant digits; negative
// values keep their sign.
func FormatBytes(n float64) string {
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	switch {
	case n < 1024:
		return sign + strconv.FormatFloat(math.Round(n), 'f', -1, 64) + " B"
	case n < 1<<20:
		return sign + sig3(n/1024) + " KiB"
	case n < 1<<30:
		return sign + sig3(n/(1<<20)) + " MiB"
	default:
		return sign + sig3(n/(1<<30)) + " GiB"
	}
}

// FormatRate prints a rate as a whole number with thousands separators: "12,345".
func FormatRate(r float64) string {
	var b strings.Builder
	if r < 0 {
		b.WriteByte('-')
		r = -r
	}
	s := strconv.FormatInt(int64(math.Round(r)), 10)
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// FormatErrors prints error counts sorted by name, "none" when there are none:
// "DeadlineExceeded 3, Unavailable 12".
func FormatErrors(errs map[string]uint64) string {
	var names []string
	for k, v := range errs {
		if v > 0 {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %d", k, errs[k])
	}
	return strings.Join(parts, ", ")
}

// sig3 prints v with three significant digits (and no exponent).
func sig3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
