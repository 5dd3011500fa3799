package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sut is a system under test: a broker (started here or given), and the server processes.
type sut struct {
	h        *harness
	mode     string
	dir      string
	brokers  []string
	broker   *child // the embedded broker, when started here
	ns, app  string
	servers  []*child  // processes whose CPU and memory are the server side
	children []*child  // every process started, stopped in reverse order
	addr     string    // the entry point for clients
	env      []string  // added to the environment of the children started from now on
	sink     *otlpSink // es-traced: where the node exports its spans
}

// newSUT prepares a system for mode: a fresh embedded broker, or a fresh namespace on the
// given broker.
func (h *harness) newSUT(ctx context.Context, mode string) (*sut, error) {
	n := h.seq.Add(1)
	s := &sut{h: h, mode: mode, dir: filepath.Join(h.dir, fmt.Sprintf("%02d-%s", n, mode)), app: "b"}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	if h.cfg.Broker != "embedded" {
		s.brokers = []string{h.cfg.Broker}
		// A namespace of its own per run and mode: fresh topics, groups and transactional ids.
		s.ns = fmt.Sprintf("kb%s-%02d-%s", h.runID, n, mode)
		return s, nil
	}
	s.ns = "bench"
	addr, err := freeLoopback()
	if err != nil {
		return nil, err
	}
	b, err := s.start("broker", "bench", "broker", "--addr", addr, "--data-dir", filepath.Join(s.dir, "kafka"), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	s.broker = b
	s.brokers = []string{addr}
	if err := s.waitDial(ctx, b, addr); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// start spawns a child of the system (named after the system's folder).
func (s *sut) start(name string, args ...string) (*child, error) {
	c, err := s.h.spawn(filepath.Base(s.dir)+"-"+name, s.env, args...)
	if err != nil {
		return nil, err
	}
	s.children = append(s.children, c)
	return c, nil
}

// startServer spawns a server process, under `bench exec` when it is profiled or its memory
// statistics are wanted (debugAddr).
func (s *sut) startServer(name, debugAddr string, args ...string) (*child, error) {
	var wrap []string
	if s.h.cfg.ProfileDir != "" {
		wrap = append(wrap, "--cpuprofile", filepath.Join(s.h.cfg.ProfileDir, fmt.Sprintf("%s-%s-%s.cpu.pprof", s.mode, name, s.h.runID)))
	}
	if debugAddr != "" {
		wrap = append(wrap, "--debug-addr", debugAddr)
	}
	if len(wrap) > 0 {
		args = append(append(append([]string{"bench", "exec"}, wrap...), "--"), args...)
	}
	c, err := s.start(name, args...)
	if err != nil {
		return nil, err
	}
	s.servers = append(s.servers, c)
	return c, nil
}

// nodeArgs are the flags of a `kstate serve` node of the system.
func (s *sut) nodeArgs(name, listen string, extra ...string) []string {
	return append([]string{"serve",
		"--brokers", strings.Join(s.brokers, ","),
		"--namespace", s.ns, "--app", s.app,
		"--partitions", strconv.Itoa(int(s.h.cfg.Partitions)),
		"--listen", listen,
		"--node-id", name,
		"--data-dir", filepath.Join(s.dir, name),
		"--log-level", "info",
	}, append(slices.Clone(s.h.cfg.NodeArgs), extra...)...)
}

// startNode starts a node serving on a free port and returns it with its address.
func (s *sut) startNode(name, debugAddr string, extra ...string) (*child, string, error) {
	listen, err := freeLoopback()
	if err != nil {
		return nil, "", err
	}
	c, err := s.startServer(name, debugAddr, s.nodeArgs(name, listen, extra...)...)
	return c, listen, err
}

// startUserFunction starts the shopping cart as a separate user-function process.
func (s *sut) startUserFunction(ctx context.Context, debugAddr string) (string, error) {
	addr, err := freeLoopback()
	if err != nil {
		return "", err
	}
	c, err := s.startServer("user-function", debugAddr, "bench", "user-function", "--listen", addr, "--example", "shoppingcart")
	if err != nil {
		return "", err
	}
	return addr, s.waitDial(ctx, c, addr)
}

// kafka names the system's Kafka, for the functions of Kstate.
func (s *sut) kafka() Kafka {
	return Kafka{Brokers: s.brokers, Namespace: s.ns, App: s.app, Partitions: s.h.cfg.Partitions}
}

// brokerPID is the broker's process, or 0 when unknown.
func (s *sut) brokerPID() int {
	if s.broker != nil {
		return s.broker.pid()
	}
	return s.h.cfg.BrokerPID
}

func (s *sut) serverPIDs() []int {
	pids := make([]int, 0, len(s.servers))
	for _, c := range s.servers {
		if c.alive() {
			pids = append(pids, c.pid())
		}
	}
	return pids
}

// check fails if a process of the system has exited.
func (s *sut) check() error {
	for _, c := range s.children {
		if !c.alive() {
			return fmt.Errorf("%s exited (%v); last log lines:\n%s", c.name, c.err, c.tail(20))
		}
	}
	return nil
}

// forget drops a process that was stopped or killed on purpose from the system.
func (s *sut) forget(c *child) {
	s.children = slices.DeleteFunc(s.children, func(x *child) bool { return x == c })
	s.servers = slices.DeleteFunc(s.servers, func(x *child) bool { return x == c })
}

// close stops every process of the system, servers first, the broker last.
func (s *sut) close() {
	for i := len(s.children) - 1; i >= 0; i-- {
		if err := s.children[i].stop(10 * time.Second); err != nil {
			s.h.logf("%v", err)
		}
	}
	if s.sink != nil {
		s.sink.close()
	}
}

// waitDial waits until addr accepts TCP connections (or c exits).
func (s *sut) waitDial(ctx context.Context, c *child, addr string) error {
	return Poll(ctx, 2*time.Minute, func() (bool, error) {
		if !c.alive() {
			return false, fmt.Errorf("%s exited (%v):\n%s", c.name, c.err, c.tail(20))
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
}

// waitReady waits until a command succeeds for an entity of every partition: every partition is
// owned, restored and serving.
func (s *sut) waitReady(ctx context.Context, w *workload) error {
	start := time.Now()
	for p := range s.h.cfg.Partitions {
		id := entityOf(s.h.k.Partition, fmt.Sprintf("ready-%d", p), p, s.h.cfg.Partitions)
		var last error
		err := Poll(ctx, 3*time.Minute, func() (bool, error) {
			if err := s.check(); err != nil {
				return false, err
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			last = w.call(cctx, id)
			return last == nil, nil
		})
		if err != nil {
			return fmt.Errorf("partition %d not serving: %w (last error: %v)", p, err, last)
		}
	}
	s.h.logf("%s: all %d partitions serve (%v)", s.mode, s.h.cfg.Partitions, time.Since(start).Round(time.Millisecond))
	return nil
}

// Poll calls cond every 50ms until it reports done or an error, or timeout passes (tests use it
// too: a bounded wait, never a bare sleep).
func Poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeLoopback returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// entityOf returns an entity id with prefix whose partition is p.
func entityOf(partition func(key []byte, partitions int32) int32, prefix string, p, partitions int32) string {
	for k := 0; ; k++ {
		id := prefix + "-" + strconv.Itoa(k)
		if partition([]byte(id), partitions) == p {
			return id
		}
	}
}

// startSystem starts the processes a throughput-style mode needs on s and returns the entry
// address. debugAddr, if set, serves the node's memory statistics.
func (s *sut) startSystem(ctx context.Context, mode, debugAddr string) error {
	var (
		node *child
		err  error
	)
	switch mode {
	case "bare":
		listen, lerr := freeLoopback()
		if lerr != nil {
			return lerr
		}
		node, err = s.startServer("ref-server", debugAddr, "bench", "ref-server",
			"--brokers", strings.Join(s.brokers, ","), "--namespace", s.ns, "--app", "ref",
			"--partitions", strconv.Itoa(int(s.h.cfg.Partitions)), "--listen", listen, "--log-level", "warn")
		s.addr = listen
	case "es-remote", "mem-remote":
		uf, uerr := s.startUserFunction(ctx, "")
		if uerr != nil {
			return uerr
		}
		node, s.addr, err = s.startNode("node", debugAddr, "--user-function", uf)
	case "es-traced":
		// es with tracing on as an operator turns it on: the OTEL_* variables, OTLP/HTTP to a
		// collector (the sink), 1% of the traces sampled.
		if s.sink, err = startOTLPSink(); err != nil {
			return err
		}
		s.env = s.sink.env()
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "shoppingcart")
	case "value":
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "valuecart")
	case "action":
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "validator")
	case "crdt":
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "chat")
	default:
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "shoppingcart")
	}
	if err != nil {
		return err
	}
	return s.waitDial(ctx, node, s.addr)
}
