package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReadReports(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r *Report) string {
		var buf bytes.Buffer
		if err := r.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a := write("a.json", &Report{Machine: Machine{CPUs: 2}, Args: []string{"bench", "--mode=bare,es"}, Results: []Result{
		{Mode: "bare", Broker: "embedded", Concurrency: 64, PerSecond: 1000},
		{Mode: "es", Broker: "embedded", Concurrency: 64, PerSecond: 800},
	}})
	b := write("b.json", &Report{Machine: Machine{CPUs: 8}, Args: []string{"bench", "--mode=failover"},
		Failover: []FailoverResult{{Broker: "k:1", SessionTimeout: 3 * time.Second, Samples: []time.Duration{time.Second}, P99: time.Second}}})
	m, err := ReadReports(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Machine.CPUs != 2 || len(m.Results) != 2 || len(m.Failover) != 1 {
		t.Fatalf("merged %+v", m)
	}
	if m.Results[1].VsBare != 0.8 {
		t.Fatalf("es vs bare %v, want 0.8 (recomputed)", m.Results[1].VsBare)
	}
	var names []string
	for _, tg := range m.Targets {
		names = append(names, tg.Broker+": "+tg.Name)
	}
	if len(m.Targets) != 2 {
		t.Fatalf("targets %v, want the es ratio and the failover", names)
	}
	if _, err := ReadReports(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
