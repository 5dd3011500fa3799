package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestMemStatsRoundTrip serves /memstats as `bench exec --debug-addr` does and reads it as the
// mem mode does, profiles included.
func TestMemStatsRoundTrip(t *testing.T) {
	addr, err := freeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	stop, err := ServeMemStats(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	profile := filepath.Join(t.TempDir(), "p")
	ms, err := fetchMemStats(ctx, addr, profile)
	if err != nil {
		t.Fatal(err)
	}
	if ms.Goroutines < 1 || ms.HeapAlloc == 0 || ms.StackInuse == 0 || ms.Sys == 0 {
		t.Fatalf("memstats %+v", ms)
	}
	for _, f := range []string{profile + ".heap.pprof", profile + ".goroutine.pprof"} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v", f, err)
		}
	}
}
