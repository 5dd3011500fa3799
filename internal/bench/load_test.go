package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRunLoadCountsOnlyTheWindow(t *testing.T) {
	var (
		calls   atomic.Uint64
		started atomic.Bool
		mu      sync.Mutex
		seqs    = map[uint64]bool{}
	)
	cfg := LoadConfig{
		Concurrency: 4,
		Warmup:      50 * time.Millisecond,
		Duration:    200 * time.Millisecond,
		OpTimeout:   time.Second,
		OnStart:     func() { started.Store(true) },
		Op: func(ctx context.Context, worker int, seq uint64) error {
			if worker < 0 || worker >= 4 {
				return fmt.Errorf("worker %d out of range", worker)
			}
			mu.Lock()
			dup := seqs[seq]
			seqs[seq] = true
			mu.Unlock()
			if dup {
				return fmt.Errorf("seq %d handed out twice", seq)
			}
			n := calls.Add(1)
			time.Sleep(time.Millisecond)
			if !started.Load() {
				return status.Error(codes.Unavailable, "warming up") // counted as a warmup error only
			}
			if n%10 == 0 {
				return status.Error(codes.ResourceExhausted, "busy")
			}
			return nil
		},
	}
	res, err := RunLoad(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops == 0 || res.Latency.Count() != res.Ops {
		t.Fatalf("Ops %d, latency count %d: want equal and positive", res.Ops, res.Latency.Count())
	}
	if res.Errors["Unavailable"] != 0 || res.WarmupErrors["Unavailable"] == 0 {
		t.Fatalf("errors %v, warmup errors %v: warmup failures must be kept apart", res.Errors, res.WarmupErrors)
	}
	if res.Errors["ResourceExhausted"] == 0 || res.ErrorCount() != res.Errors["ResourceExhausted"] {
		t.Fatalf("errors %v: want only ResourceExhausted", res.Errors)
	}
	for k := range res.Errors {
		if strings.Contains(k, "handed out twice") || k == "Unknown" {
			t.Fatalf("an operation failed unexpectedly: %v", res.Errors)
		}
	}
	if res.Elapsed < cfg.Duration || res.Elapsed > cfg.Duration+time.Second {
		t.Fatalf("Elapsed %v, want about %v", res.Elapsed, cfg.Duration)
	}
	if p50 := res.Latency.Quantile(0.5); p50 < time.Millisecond {
		t.Fatalf("p50 %v below the 1ms each operation sleeps", p50)
	}
	if got := res.Throughput(); got <= 0 || got > 4/0.001 {
		t.Fatalf("throughput %v out of range (4 workers × ≤1000/s)", got)
	}
}

func TestRunLoadMaxOpsEndsEarly(t *testing.T) {
	cfg := LoadConfig{Concurrency: 2, Duration: time.Minute, MaxOps: 50, OpTimeout: time.Second,
		Op: func(context.Context, int, uint64) error { return nil }}
	start := time.Now()
	res, err := RunLoad(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops < 50 {
		t.Fatalf("Ops %d, want at least MaxOps 50", res.Ops)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("MaxOps did not end the run early")
	}
}

func TestRunLoadStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := LoadConfig{Concurrency: 3, Warmup: time.Hour, Duration: time.Hour, OpTimeout: time.Hour,
		Op: func(ctx context.Context, _ int, _ uint64) error {
			<-ctx.Done() // an operation that only ends when cancelled
			return ctx.Err()
		}}
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if _, err := RunLoad(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("RunLoad = %v, want context.Canceled", err)
	}
}

func TestLoadConfigValidate(t *testing.T) {
	ok := DefaultLoadConfig()
	ok.Op = func(context.Context, int, uint64) error { return nil }
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config with an Op: %v", err)
	}
	for name, mut := range map[string]func(*LoadConfig){
		"no op":       func(c *LoadConfig) { c.Op = nil },
		"concurrency": func(c *LoadConfig) { c.Concurrency = 0 },
		"duration":    func(c *LoadConfig) { c.Duration = 0 },
		"warmup":      func(c *LoadConfig) { c.Warmup = -time.Second },
		"timeout":     func(c *LoadConfig) { c.OpTimeout = -1 },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "OK"},
		{status.Error(codes.Unavailable, "x"), "Unavailable"},
		{fmt.Errorf("wrapped: %w", &HTTPError{Status: 503, Body: "busy"}), "HTTP 503"},
		{context.DeadlineExceeded, "DeadlineExceeded"},
		{fmt.Errorf("op: %w", context.Canceled), "Canceled"},
		{errors.New("plain"), "Unknown"},
	} {
		if got := Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and a ')' of its own; utime 250, stime 50 ticks → 3s.
	stat := "1234 (my (weird) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000000 500 18446744073709551615\n"
	cpu, err := parseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if cpu != 3*time.Second {
		t.Fatalf("parseStat = %v, want 3s", cpu)
	}
	if _, err := parseStat([]byte("1234 (x) S 1 2")); err == nil {
		t.Fatal("short stat accepted")
	}
}

func TestParseRSS(t *testing.T) {
	st := "Name:\tkstate\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t8\n"
	rss, err := parseRSS([]byte(st))
	if err != nil || rss != 12345*1024 {
		t.Fatalf("parseRSS = %d, %v; want %d", rss, err, 12345*1024)
	}
	if _, err := parseRSS([]byte("Name:\tzombie\n")); err == nil {
		t.Fatal("status without VmRSS accepted")
	}
}

func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	// Burn some CPU so the counter moves past one tick.
	end := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(end); x++ {
		_ = x
	}
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS < 1<<20 || s.CPU <= 0 {
		t.Fatalf("ReadProc(self) = %+v: want RSS ≥ 1 MiB and some CPU time", s)
	}
	sum, err := Procs(os.Getpid(), 0, os.Getpid())
	if err != nil || sum.RSS < s.RSS+s.RSS/2 {
		t.Fatalf("Procs = %+v, %v", sum, err)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Fatal("ReadProc of a pid that cannot exist succeeded")
	}
	if la, err := LoadAverage(); err != nil || la[0] < 0 {
		t.Fatalf("LoadAverage = %v, %v", la, err)
	}
}
