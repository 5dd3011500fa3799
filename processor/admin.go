package processor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The admin listener (Config.AdminListenAddr) serves operators, never clients: the console
// (console.go), Prometheus metrics, pprof and readiness, over plain HTTP on its own address
// (DESIGN.md §7). The node owns
// it: Start opens it first, so a slow start or a long restore can be watched, and Close stops it
// last, after the partitions were handed over.

// AdminAddr is the address the admin listener is bound to (useful with port 0), "" when the
// node has none or before Start.
func (n *Node) AdminAddr() string {
	if n.adminLis == nil {
		return ""
	}
	return n.adminLis.Addr().String()
}

// startAdmin listens on Config.AdminListenAddr and serves the admin endpoints until closeAdmin.
func (n *Node) startAdmin() error {
	if n.cfg.AdminListenAddr == "" {
		return nil
	}
	l, err := net.Listen("tcp", n.cfg.AdminListenAddr)
	if err != nil {
		return fmt.Errorf("admin listener on %s (--admin-listen): %w", n.cfg.AdminListenAddr, err)
	}
	n.adminLis = l
	n.console = &console{}
	n.adminSrv = &http.Server{
		Handler:           n.adminReqs.track(n.adminMux()),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.adminSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("admin listener stopped", "addr", l.Addr().String(), "error", err)
		}
	}()
	n.log.Info("admin listener", "addr", l.Addr().String(), "console", "/", "metrics", "/metrics", "pprof", "/debug/pprof/")
	return nil
}

// closeAdmin stops the admin listener: scrapes, profiles and console calls in flight are cut
// (their contexts end), and it waits, a few seconds at most, until their handlers have returned,
// so none uses the node's Kafka clients after Close released them.
func (n *Node) closeAdmin() {
	if n.adminSrv != nil {
		_ = n.adminSrv.Close()
	} else if n.adminLis != nil {
		_ = n.adminLis.Close()
	}
	select {
	case <-n.adminReqs.close():
	case <-time.After(10 * time.Second):
		n.log.Warn("admin requests still running after 10s; closing without them")
	}
}

// inflight counts the requests being served, refuses new ones once closed, and tells when the
// last one has returned. The zero value is ready.
type inflight struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when n reaches 0 after close
}

// track serves h's requests under the count.
func (f *inflight) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			http.Error(w, "the node is stopping", http.StatusServiceUnavailable)
			return
		}
		f.n++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.n--
			if f.n == 0 && f.idle != nil {
				close(f.idle)
				f.idle = nil
			}
			f.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

// close refuses new requests and returns a channel closed once none is being served.
func (f *inflight) close() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	ch := make(chan struct{})
	if f.n == 0 {
		close(ch)
	} else {
		f.idle = ch
	}
	return ch
}

func (n *Node) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.met.Handler())
	mux.HandleFunc("GET /debug/pprof/", servePprof)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		n.mu.Lock()
		ready := n.servingLocked()
		n.mu.Unlock()
		if !ready {
			http.Error(w, "not ready: the node has not joined its group or is restoring partitions", http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprintln(w, "ok") })
	n.registerConsole(mux) // the console at / and /console, its JSON API under /api/v1/
	return mux
}

// servePprof serves Go's profiles the way net/http/pprof does, at /debug/pprof/ (index),
// /debug/pprof/<profile>?debug=N (heap, goroutine, allocs, block, mutex, threadcreate),
// /debug/pprof/profile?seconds=N (CPU), /debug/pprof/trace?seconds=N and /debug/pprof/cmdline.
// It is written here rather than imported because net/http/pprof registers itself on
// http.DefaultServeMux when imported, which would expose profiles on any default-mux server of a
// program that embeds kstate.
func servePprof(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch name {
	case "":
		pprofIndex(w)
	case "cmdline":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprint(w, strings.Join(os.Args, "\x00"))
	case "profile":
		secs := pprofSeconds(r, 30)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="profile"`)
		if err := pprof.StartCPUProfile(w); err != nil {
			pprofError(w, http.StatusInternalServerError, "could not enable CPU profiling: "+err.Error())
			return
		}
		pprofSleep(r.Context(), secs)
		pprof.StopCPUProfile()
	case "trace":
		secs := pprofSeconds(r, 1)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="trace"`)
		if err := trace.Start(w); err != nil {
			pprofError(w, http.StatusInternalServerError, "could not enable tracing: "+err.Error())
			return
		}
		pprofSleep(r.Context(), secs)
		trace.Stop()
	default:
		p := pprof.Lookup(name)
		if p == nil {
			pprofError(w, http.StatusNotFound, "unknown profile "+strconv.Quote(name))
			return
		}
		debug, _ := strconv.Atoi(r.FormValue("debug"))
		if name == "heap" && r.FormValue("gc") != "" {
			runtime.GC()
		}
		if debug != 0 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
		}
		_ = p.WriteTo(w, debug)
	}
}

func pprofIndex(w http.ResponseWriter) {
	profiles := pprof.Profiles()
	sort.Slice(profiles, func(i, j int) bool { return profiles[i].Name() < profiles[j].Name() })
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintln(w, "profiles (add ?debug=1 for text; go tool pprof http://<admin>/debug/pprof/<name>):")
	for _, p := range profiles {
		_, _ = fmt.Fprintf(w, "  %-14s %d\n", p.Name(), p.Count())
	}
	_, _ = fmt.Fprintln(w, "  profile        CPU profile, ?seconds=30")
	_, _ = fmt.Fprintln(w, "  trace          execution trace, ?seconds=1")
	_, _ = fmt.Fprintln(w, "  cmdline        the command line")
}

// pprofSeconds reads ?seconds=, at most 10 minutes.
func pprofSeconds(r *http.Request, def int) time.Duration {
	s, err := strconv.Atoi(r.FormValue("seconds"))
	if err != nil || s <= 0 {
		s = def
	}
	return time.Duration(min(s, 600)) * time.Second
}

// pprofSleep waits d or until the request ends (the client left, or the listener closed).
func pprofSleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func pprofError(w http.ResponseWriter, code int, msg string) {
	w.Header().Del("Content-Disposition")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, msg)
}
