package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// memStats is what `bench exec --debug-addr` reports at /memstats, after a forced GC.
type memStats struct {
	HeapAlloc  uint64 `json:"heap_alloc"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
	Goroutines int    `json:"goroutines"`
}

// fetchMemStats asks a process under `bench exec --debug-addr` to collect garbage, return free
// memory to the OS and report; with profile set it also writes <profile>.heap.pprof and
// <profile>.goroutine.pprof.
func fetchMemStats(ctx context.Context, debugAddr, profile string) (memStats, error) {
	u := "http://" + debugAddr + "/memstats"
	if profile != "" {
		u += "?heapprofile=" + url.QueryEscape(profile+".heap.pprof") + "&goroutineprofile=" + url.QueryEscape(profile+".goroutine.pprof")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return memStats{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return memStats{}, err
	}
	defer resp.Body.Close()
	var ms memStats
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return ms, fmt.Errorf("%s: %s: %s", u, resp.Status, b)
	}
	return ms, json.NewDecoder(resp.Body).Decode(&ms)
}

// runMem activates n entities with one AddItem each and reports the node's memory growth per
// entity. variant "remote" runs the entities in a separate user-function process.
func (h *harness) runMem(ctx context.Context, variant string, n int) (MemResult, error) {
	res := MemResult{Variant: variant, Broker: h.brokerLabel(), Entities: n, Errors: map[string]uint64{}}
	mode := "mem"
	if variant == "remote" {
		mode = "mem-remote"
	}
	s, err := h.newSUT(ctx, mode)
	if err != nil {
		return res, err
	}
	defer s.close()
	debugAddr, err := freeLoopback()
	if err != nil {
		return res, err
	}
	if err := s.startSystem(ctx, mode, debugAddr); err != nil {
		return res, err
	}
	node := s.servers[len(s.servers)-1]
	var uf *child
	if variant == "remote" {
		uf = s.servers[0]
	}
	w, err := h.newWorkload(mode, s.addr, h.cfg.Concurrency)
	if err != nil {
		return res, err
	}
	defer w.close()
	if err := s.waitReady(ctx, w); err != nil {
		return res, err
	}
	profile := func(tag string) string {
		if h.cfg.ProfileDir == "" {
			return ""
		}
		return filepath.Join(h.cfg.ProfileDir, fmt.Sprintf("%s-%d-%s-%s", mode, n, tag, h.runID))
	}
	before, err := fetchMemStats(ctx, debugAddr, profile("before"))
	if err != nil {
		return res, err
	}
	rssBefore, err := ReadProc(node.pid())
	if err != nil {
		return res, err
	}
	var ufBefore ProcSample
	if uf != nil {
		if ufBefore, err = ReadProc(uf.pid()); err != nil {
			return res, err
		}
	}
	// Activate: every entity gets one command, retried on failure so that each is active.
	start := time.Now()
	ids := entityIDs("m", n)
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	for range h.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				for attempt := 0; attempt < 3; attempt++ {
					cctx, cancel := context.WithTimeout(ctx, h.cfg.OpTimeout)
					err := w.call(cctx, ids[i])
					cancel()
					if err == nil {
						break
					}
					mu.Lock()
					res.Errors[Code(err)]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	took := time.Since(start)
	after, err := fetchMemStats(ctx, debugAddr, profile("after"))
	if err != nil {
		return res, err
	}
	rssAfter, err := ReadProc(node.pid())
	if err != nil {
		return res, err
	}
	// Passivation frees entities idle for 30s (the default): the measure must come before that.
	if took > 25*time.Second {
		h.logf("%s: activating %d entities took %v; the first ones may have passivated (30s idle), so the numbers are low", mode, n, took.Round(time.Millisecond))
	}
	fn := float64(n)
	res.RSSBefore, res.RSSAfter = rssBefore.RSS, rssAfter.RSS
	res.PerEntity = float64(rssAfter.RSS-rssBefore.RSS) / fn
	res.HeapPerEntity = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / fn
	res.StackPerEntity = (float64(after.StackInuse) - float64(before.StackInuse)) / fn
	res.GoroutinesPerEntity = float64(after.Goroutines-before.Goroutines) / fn
	if uf != nil {
		ufAfter, err := ReadProc(uf.pid())
		if err != nil {
			return res, err
		}
		res.UserFunctionPerEntity = float64(ufAfter.RSS-ufBefore.RSS) / fn
	}
	h.logf("%s: %d entities active in %v: node RSS %s → %s, %s per entity (heap %s, stacks %s, %.1f goroutines)", mode, n, took.Round(time.Millisecond),
		FormatBytes(float64(res.RSSBefore)), FormatBytes(float64(res.RSSAfter)), FormatBytes(res.PerEntity),
		FormatBytes(res.HeapPerEntity), FormatBytes(res.StackPerEntity), res.GoroutinesPerEntity)
	return res, s.check()
}

// ServeMemStats serves /memstats on addr for `kstate bench exec --debug-addr`, in the process
// under test: each request collects garbage, returns free memory to the OS and reports the
// runtime's memory statistics and goroutine count as JSON; ?heapprofile=PATH and
// ?goroutineprofile=PATH also write those profiles. The returned function stops the server.
func ServeMemStats(addr string) (func(), error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug address: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/memstats", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		for param, profile := range map[string]string{"heapprofile": "heap", "goroutineprofile": "goroutine"} {
			path := r.URL.Query().Get(param)
			if path == "" {
				continue
			}
			f, err := os.Create(path)
			if err == nil {
				err = errors.Join(pprof.Lookup(profile).WriteTo(f, 0), f.Close())
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(memStats{HeapAlloc: ms.HeapAlloc, HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse,
			Sys: ms.Sys, Goroutines: runtime.NumGoroutine()})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// newBenchUserFunctionCmd is `kstate bench user-function`: an example served as a standalone
