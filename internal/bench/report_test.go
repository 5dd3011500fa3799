package bench

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	r := &Report{
		Machine: Machine{CPUs: 2, CPUModel: "Test CPU", MemoryBytes: 8 << 30, GoVersion: "go1.26", OS: "linux", Arch: "amd64"},
		Args:    []string{"bench", "--mode", "es,bare"},
		Results: []Result{
			{Mode: "bare", Broker: "embedded", Concurrency: 64, Commands: 100_000, Seconds: 20, PerSecond: 5000,
				P50: 10 * time.Millisecond, P99: 30 * time.Millisecond, P999: 50 * time.Millisecond,
				ServerCPU: 80 * time.Microsecond, BrokerCPU: 120 * time.Microsecond, ServerRSS: 40 << 20, Errors: map[string]uint64{},
				RecordsPerTxn: 12.5, Runs: []float64{4500, 5000, 5200}},
			{Mode: "es", Broker: "embedded", Concurrency: 64, Commands: 80_000, Seconds: 20, PerSecond: 4000,
				P50: 12 * time.Millisecond, P99: 40 * time.Millisecond, P999: 90 * time.Millisecond,
				ServerCPU: 200 * time.Microsecond, ServerRSS: 120 << 20, Errors: map[string]uint64{"Unavailable": 3, "DeadlineExceeded": 1}},
			{Mode: "seq", Broker: "embedded", Concurrency: 1, Commands: 900, PerSecond: 45, P50: 1500 * time.Microsecond},
			{Mode: "http", Broker: "embedded", PerSecond: 2000},
			{Mode: "value", Broker: "embedded", PerSecond: 4400},
			{Mode: "es", Broker: "127.0.0.1:19292", PerSecond: 3000},
		},
		Memory: []MemResult{
			{Variant: "in-process", Broker: "embedded", Entities: 20000, PerEntity: 9000},
			{Variant: "remote", Broker: "embedded", Entities: 10000, PerEntity: 3000, UserFunctionPerEntity: 5000},
		},
		Failover: []FailoverResult{{Broker: "embedded", Nodes: 3, SessionTimeout: 3 * time.Second, Rounds: 2,
			Samples: []time.Duration{4 * time.Second, 3500 * time.Millisecond, 6 * time.Second}}},
		Restore: []RestoreResult{{Broker: "embedded", Partitions: 16, Records: 100_000, Slowest: 400 * time.Millisecond, PerSecond: 250_000}},
	}
	r.Failover[0].Summarize()
	r.Finish()
	return r
}

func TestFinishRatiosAndTargets(t *testing.T) {
	r := sampleReport()
	es, _ := r.result("embedded", "es")
	if es.VsBare != 0.8 {
		t.Fatalf("es VsBare = %v, want 0.8", es.VsBare)
	}
	if x, _ := r.result("127.0.0.1:19292", "es"); x.VsBare != 0 {
		t.Fatalf("no bare run on the second broker, VsBare = %v", x.VsBare)
	}
	if x, _ := r.result("embedded", "seq"); x.VsBare != 0 {
		t.Fatalf("seq runs one command at a time: no ratio to the bare reference at 64, got %v", x.VsBare)
	}
	if b, _ := r.result("embedded", "bare"); b.VsBare != 0 {
		t.Fatalf("bare VsBare = %v, want 0 (not shown)", b.VsBare)
	}
	want := map[string]bool{
		"in-process Go entity vs bare reference":                    true,
		"one client in sequence, p50 (in-process)":                  false,
		"runtime memory per active entity (remote, 10000 entities)": true, // remote preferred
		"restore rate (end to end)":                                 true,
		"failover p99 (session timeout 3s)":                         false, // 6s > 5s
		"value entity vs event-sourced throughput":                  true,
		"HTTP/JSON vs gRPC throughput":                              false, // 0.5×
	}
	got := map[string]bool{}
	for _, tg := range r.Targets {
		if tg.Broker == "embedded" {
			got[tg.Name] = tg.Met
		}
	}
	for name, met := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("target %q not checked; got %v", name, got)
			continue
		}
		if g != met {
			t.Errorf("target %q met = %v, want %v", name, g, met)
		}
	}
	if len(got) != len(want) {
		t.Errorf("targets %v, want exactly %v", got, want)
	}
	if r.Failover[0].P50 != 4*time.Second || r.Failover[0].P99 != 6*time.Second || r.Failover[0].Max != 6*time.Second {
		t.Errorf("failover summary %v/%v/%v", r.Failover[0].P50, r.Failover[0].P99, r.Failover[0].Max)
	}
}

func TestVsBareByRound(t *testing.T) {
	r := &Report{Results: []Result{
		{Mode: "bare", Broker: "b", Concurrency: 64, PerSecond: 9000, Runs: []float64{10000, 5000, 9000}},
		{Mode: "es", Broker: "b", Concurrency: 64, PerSecond: 4000, Runs: []float64{7000, 4000, 3000}},
	}}
	r.Finish()
	es := r.Results[1]
	want := []float64{0.7, 0.8, 3000.0 / 9000}
	if !slices.Equal(es.VsBareRuns, want) {
		t.Fatalf("VsBareRuns = %v, want %v", es.VsBareRuns, want)
	}
	if es.VsBare != 0.7 {
		t.Fatalf("VsBare = %v, want the median round ratio 0.7 (not 4000/9000)", es.VsBare)
	}
}

func TestWriteText(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"machine: 2 CPUs (Test CPU), 8.00 GiB memory, go1.26 linux/amd64",
		"command: kstate bench --mode es,bare",
		"### broker: embedded",
		"| bare | 64 | 5,000 (4,500–5,200) | — | 10.0 ms | 30.0 ms | 50.0 ms | 80.0 µs | 120 µs | 12.5 | 40.0 MiB | none |",
		"| es | 64 | 4,000 | 0.80× | 12.0 ms | 40.0 ms | 90.0 ms | 200 µs | — | — | 120 MiB | DeadlineExceeded 1, Unavailable 3 |",
		"| remote | 10000 |",
		"| 3 | 3s | 2 | 3 | 4.00 s | 6.00 s | 6.00 s | 0 | none |",
		"| 16 | 100000 | 400 ms |",
		"| in-process Go entity vs bare reference | ≥ 0.70× | 0.800× | met |",
		"| HTTP/JSON vs gRPC throughput | ≥ 0.60× | 0.500× | not met |",
		"### broker: 127.0.0.1:19292",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Every table row has as many cells as its header.
	var cols int
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.HasPrefix(line, "|") {
			cols = 0
			continue
		}
		n := strings.Count(line, "|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("row %q has %d separators, header has %d", line, n, cols)
		}
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	r := sampleReport()
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != len(r.Results) || back.Results[1].P99 != 40*time.Millisecond || back.Results[1].Errors["Unavailable"] != 3 {
		t.Fatalf("round trip lost data: %+v", back.Results)
	}
	if !strings.Contains(buf.String(), `"commands_per_sec": 4000`) {
		t.Fatalf("JSON lacks commands_per_sec: %s", buf.String())
	}
}

func TestMedian(t *testing.T) {
	runs := []Result{{Mode: "es", PerSecond: 300, P50: 3}, {Mode: "es", PerSecond: 100, P50: 1}, {Mode: "es", PerSecond: 200, P50: 2}}
	m := Median(runs)
	if m.PerSecond != 200 || m.P50 != 2 || !slices.Equal(m.Runs, []float64{300, 100, 200}) {
		t.Fatalf("Median = %+v", m)
	}
	if m := Median(runs[:2]); m.PerSecond != 100 {
		t.Fatalf("Median of two = %v/s, want the lower 100", m.PerSecond)
	}
	if m := Median(runs[:1]); m.Runs != nil || m.PerSecond != 300 {
		t.Fatalf("Median of one = %+v, want the run without Runs", m)
	}
	if m := Median(nil); m.Mode != "" {
		t.Fatalf("Median(nil) = %+v", m)
	}
}

func TestFormatters(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850:                       "850 ns",
		12300:                     "12.3 µs",
		1250 * time.Microsecond:   "1.25 ms",
		999 * time.Millisecond:    "999 ms",
		4100 * time.Millisecond:   "4.10 s",
		123456 * time.Millisecond: "123 s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[float64]string{0: "0 B", 1000: "1000 B", 4096: "4.00 KiB", 1.5 * (1 << 20): "1.50 MiB", -2048: "-2.00 KiB", 3 << 30: "3.00 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%v) = %q, want %q", n, got, want)
		}
	}
	for r, want := range map[float64]string{0: "0", 999.6: "1,000", 1234567: "1,234,567", -123: "-123", -1234: "-1,234"} {
		if got := FormatRate(r); got != want {
			t.Errorf("FormatRate(%v) = %q, want %q", r, got, want)
		}
	}
	if got := FormatErrors(map[string]uint64{"b": 2, "a": 1, "z": 0}); got != "a 1, b 2" {
		t.Errorf("FormatErrors = %q", got)
	}
	if got := FormatErrors(nil); got != "none" {
		t.Errorf("FormatErrors(nil) = %q", got)
	}
}

func TestMachineParsers(t *testing.T) {
	if got := cpuModel("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n"); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := memTotal("MemTotal:       24576000 kB\nMemFree: 1 kB\n"); got != 24576000<<10 {
		t.Errorf("memTotal = %d", got)
	}
	m := DescribeMachine()
	if m.CPUs < 1 || m.GoVersion == "" {
		t.Errorf("DescribeMachine = %+v", m)
	}
}
