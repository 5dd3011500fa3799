package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/examples/validator/validatorpb"
	"github.com/kstatehq/kstate/examples/valuecart"
	"github.com/kstatehq/kstate/examples/valuecart/valuecartpb"
	"github.com/kstatehq/kstate/internal/bench"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
	"github.com/kstatehq/kstate/sdk"
)

// benchModes are the workloads of `kstate bench`, in the order "all" runs them.
var benchModes = []string{"bare", "es", "es-remote", "value", "action", "http", "seq", "mem", "restore", "failover"}

// benchModeHelp describes each mode for --help.
const benchModeHelp = `modes:
  bare       the bare reference: a minimal gRPC server producing one record per AddItem with
             kstate's per-partition transactions and group commit (the floor to compare with)
  es         event-sourced shopping cart AddItem, Go entity in the node's process
  es-remote  the same, with the entity in a separate user-function process
  value      value-entity cart AddItem (in-process)
  action     CartValidator/AddItem, an action that forwards to the event-sourced cart
  http       the event-sourced AddItem as HTTP/JSON POST /cart/{user_id}/items/add (HTTP/1.1 keep-alive)
  seq        es with one client in sequence (latency)
  mem        memory per active entity: activate N entities (--mem-entities), in-process and remote
  restore    fill the topics through a node, then time a fresh node acquiring every partition
  failover   3 nodes, kill -9 one, time until each of its partitions serves again (--failover-rounds)`

// benchOpts are `kstate bench`'s flags.
type benchOpts struct {
	duration        time.Duration
	warmup          time.Duration
	entities        int
	seqEntities     int
	concurrency     int
	modes           []string
	json            bool
	jsonFile        string
	broker          string
	brokerPID       int
	partitions      int32
	opTimeout       time.Duration
	memEntities     []int
	restoreCommands int
	repeat          int
	failoverRounds  int
	sessionTimeout  time.Duration
	nodeArgs        []string
	profileDir      string
	workDir         string
	keep            bool
	exe             string
}

func newBenchCmd(lo *logOpts) *cobra.Command {
	o := &benchOpts{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure kstate end to end: throughput, latency, CPU, memory, restore and failover",
		Long: `Run load against kstate processes started from this binary (a node, a user function, the
embedded broker, the bare reference server), over gRPC or HTTP from this process, and report
commands/s, latency percentiles, CPU time per command and memory of the processes under test,
errors by gRPC code, and the ratio to the bare reference.

` + benchModeHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var args []string
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if f.Name != "exe" {
					args = append(args, "--"+f.Name+"="+f.Value.String())
				}
			})
			return runBench(cmd.Context(), o, append([]string{"bench"}, args...), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.duration, "duration", 20*time.Second, "measured time per mode")
	f.DurationVar(&o.warmup, "warmup", 3*time.Second, "unmeasured load before each measure")
	f.IntVar(&o.entities, "entities", 10000, "entities the load spreads over (round robin)")
	f.IntVar(&o.seqEntities, "seq-entities", 100, "entities of the seq mode (all active after the warmup)")
	f.IntVar(&o.concurrency, "concurrency", 64, "commands in flight")
	f.StringSliceVar(&o.modes, "mode", []string{"all"}, "modes to run, repeatable or comma separated: all, "+strings.Join(benchModes, ", "))
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.StringVar(&o.jsonFile, "json-file", "", "also write the report as JSON to this file")
	f.StringVar(&o.broker, "broker", "embedded", `"embedded" (a fresh embedded broker per mode) or the address of a Kafka broker`)
	f.IntVar(&o.brokerPID, "broker-pid", 0, "pid of the --broker ADDR process, to report its CPU time and memory too")
	f.Int32Var(&o.partitions, "partitions", 16, "partitions of the app's topics")
	f.DurationVar(&o.opTimeout, "op-timeout", 10*time.Second, "deadline of each command")
	f.IntSliceVar(&o.memEntities, "mem-entities", []int{10000, 20000}, "entity counts of the mem mode")
	f.IntVar(&o.restoreCommands, "restore-commands", 100000, "commands the restore mode writes before restoring (at most 3× --duration of load)")
	f.IntVar(&o.repeat, "repeat", 1, "run the throughput modes this many times, interleaved, and report the median run")
	f.IntVar(&o.failoverRounds, "failover-rounds", 5, "kill -9 rounds of the failover mode")
	f.DurationVar(&o.sessionTimeout, "session-timeout", 3*time.Second, "group session timeout of the failover mode's nodes")
	f.StringArrayVar(&o.nodeArgs, "node-arg", nil, "extra flag for every kstate node, repeatable (e.g. --node-arg=--commit-linger=2ms)")
	f.StringVar(&o.profileDir, "profile-dir", "", "write CPU profiles of the processes under test (and heap and goroutine profiles of the mem mode) here")
	f.StringVar(&o.workDir, "work-dir", "", "keep the processes' data and logs in a run-<id> folder here (default: a temporary folder, removed)")
	f.BoolVar(&o.keep, "keep", false, "keep the work folder (data and logs) after the run")
	f.StringVar(&o.exe, "exe", "", "kstate binary to start the processes under test from (default: this one)")
	_ = f.MarkHidden("exe")
	cmd.AddCommand(newBenchExecCmd(), newBenchUserFunctionCmd(lo), newBenchRefServerCmd(lo), newBenchBrokerCmd(lo), newBenchReportCmd())
	return cmd
}

// validate checks the flags and expands "all".
func (o *benchOpts) validate() error {
	var modes []string
	for _, m := range o.modes {
		for _, m := range strings.Split(m, ",") {
			m = strings.TrimSpace(m)
			switch {
			case m == "":
			case m == "all":
				modes = append(modes, benchModes...)
			case slices.Contains(benchModes, m):
				modes = append(modes, m)
			default:
				return fmt.Errorf("--mode %q: choose from all, %s", m, strings.Join(benchModes, ", "))
			}
		}
	}
	if len(modes) == 0 {
		return errors.New("--mode: no mode given")
	}
	// Run in the canonical order (bare first), each once.
	o.modes = nil
	for _, m := range benchModes {
		if slices.Contains(modes, m) {
			o.modes = append(o.modes, m)
		}
	}
	switch {
	case o.duration <= 0:
		return fmt.Errorf("--duration %v: want more than 0", o.duration)
	case o.warmup < 0:
		return fmt.Errorf("--warmup %v is negative", o.warmup)
	case o.entities < 1 || o.seqEntities < 1:
		return errors.New("--entities and --seq-entities: want at least 1")
	case o.concurrency < 1:
		return fmt.Errorf("--concurrency %d: want at least 1", o.concurrency)
	case o.partitions < 1:
		return fmt.Errorf("--partitions %d: want at least 1", o.partitions)
	case o.opTimeout <= 0:
		return fmt.Errorf("--op-timeout %v: want more than 0", o.opTimeout)
	case o.failoverRounds < 1:
		return fmt.Errorf("--failover-rounds %d: want at least 1", o.failoverRounds)
	case o.sessionTimeout < time.Second:
		return fmt.Errorf("--session-timeout %v: want at least 1s", o.sessionTimeout)
	case o.repeat < 1:
		return fmt.Errorf("--repeat %d: want at least 1", o.repeat)
	case o.restoreCommands < 1:
		return fmt.Errorf("--restore-commands %d: want at least 1", o.restoreCommands)
	}
	for _, n := range o.memEntities {
		if n < 1 {
			return fmt.Errorf("--mem-entities %d: want at least 1", n)
		}
	}
	if o.broker != "embedded" {
		if _, _, err := net.SplitHostPort(o.broker); err != nil {
			return fmt.Errorf(`--broker %q: want "embedded" or host:port`, o.broker)
		}
	}
	if o.brokerPID != 0 && o.broker == "embedded" {
		return errors.New("--broker-pid is for --broker ADDR (the embedded broker's process is known)")
	}
	if _, err := bench.ReadProc(os.Getpid()); err != nil {
		return fmt.Errorf("kstate bench samples CPU time and memory from /proc: %w", err)
	}
	return nil
}

// runBench runs every mode of o and prints the report to out; progress goes to errOut.
func runBench(ctx context.Context, o *benchOpts, args []string, out, errOut io.Writer) (err error) {
	if err := o.validate(); err != nil {
		return err
	}
	h := &harness{o: o, progress: errOut, runID: strconv.FormatInt(time.Now().Unix(), 36)}
	if h.exe = o.exe; h.exe == "" {
		if h.exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find this binary to start the processes under test: %w", err)
		}
	}
	if h.dir = o.workDir; h.dir == "" {
		if h.dir, err = os.MkdirTemp("", "kstate-bench-"); err != nil {
			return err
		}
	} else {
		// A folder of its own per run: two runs never share data directories or logs.
		h.dir = filepath.Join(o.workDir, "run-"+h.runID)
		if err := os.MkdirAll(h.dir, 0o755); err != nil {
			return err
		}
	}
	if o.keep || o.workDir != "" {
		h.logf("work folder (data and logs): %s", h.dir)
	} else {
		defer os.RemoveAll(h.dir)
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	rep := &bench.Report{Machine: bench.DescribeMachine(), Started: time.Now(), Args: args}
	var failed []string
	fail := func(mode string, err error) {
		h.logf("%s: FAILED: %v", mode, err)
		if !slices.Contains(failed, mode) {
			failed = append(failed, mode)
		}
	}
	// Throughput modes, --repeat times round robin (so that a busy spell of a shared machine
	// hits every mode alike); the median run of each is reported.
	runs := map[string][]bench.Result{}
	for i := 0; i < o.repeat && ctx.Err() == nil; i++ {
		for _, mode := range o.modes {
			if !isThroughputMode(mode) || ctx.Err() != nil {
				continue
			}
			if o.repeat > 1 {
				h.logf("%s: run %d of %d", mode, i+1, o.repeat)
			}
			r, err := h.runThroughput(ctx, mode)
			if err != nil {
				fail(mode, err)
				continue
			}
			runs[mode] = append(runs[mode], r)
		}
	}
	for _, mode := range o.modes {
		if len(runs[mode]) > 0 {
			rep.Results = append(rep.Results, bench.Median(runs[mode]))
		}
	}
	for _, mode := range o.modes {
		if isThroughputMode(mode) || ctx.Err() != nil {
			continue
		}
		if err := h.run(ctx, mode, rep); err != nil {
			fail(mode, err)
		}
	}
	rep.Machine.LoadEnd, _ = bench.LoadAverage()
	rep.Finish()
	if o.jsonFile != "" {
		var buf bytes.Buffer
		if err := rep.WriteJSON(&buf); err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonFile, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if o.json {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteText(out)
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(failed) > 0 {
		return fmt.Errorf("modes failed: %s (see above)", strings.Join(failed, ", "))
	}
	return nil
}

// harness starts and measures the processes under test of one `kstate bench` run.
type harness struct {
	o        *benchOpts
	exe      string
	dir      string
	runID    string
	progress io.Writer
	seq      atomic.Int64 // unique names
	mu       sync.Mutex   // serializes progress lines
}

func (h *harness) logf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.progress, "bench: "+format+"\n", args...)
}

func (h *harness) brokerLabel() string { return h.o.broker }

// isThroughputMode reports whether mode is a closed-loop load measured by runThroughput.
func isThroughputMode(mode string) bool {
	return mode != "mem" && mode != "restore" && mode != "failover"
}

// run runs one of the modes mem, restore and failover and adds its results to rep.
func (h *harness) run(ctx context.Context, mode string, rep *bench.Report) error {
	switch mode {
	case "mem":
		for _, variant := range []string{"in-process", "remote"} {
			for _, n := range h.o.memEntities {
				m, err := h.runMem(ctx, variant, n)
				if err != nil {
					return fmt.Errorf("%s, %d entities: %w", variant, n, err)
				}
				rep.Memory = append(rep.Memory, m)
			}
		}
		return nil
	case "restore":
		r, err := h.runRestore(ctx)
		if err != nil {
			return err
		}
		rep.Restore = append(rep.Restore, r)
		return nil
	case "failover":
		f, err := h.runFailover(ctx)
		if err != nil {
			return err
		}
		rep.Failover = append(rep.Failover, f)
		return nil
	}
	return fmt.Errorf("mode %s is not measured by run", mode)
}

// --- processes ----------------------------------------------------------------------------

// child is a process under test: this binary with a subcommand, its output in a log file.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error // valid after exited is closed
}

// spawn starts `exe args...` as child name, its stdout and stderr in <dir>/<name>.log.
func (h *harness) spawn(name string, args ...string) (*child, error) {
	logPath := filepath.Join(h.dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(h.exe, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = bench.ChildAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		lf.Close()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// stop asks the process to shut down (SIGTERM) and kills it if it has not exited after grace.
func (c *child) stop(grace time.Duration) error {
	if !c.alive() {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
		return nil
	case <-t.C:
		// SIGQUIT makes a Go process print every goroutine's stack to its log before it exits.
		_ = c.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			c.kill()
		}
		return fmt.Errorf("%s did not stop within %v of SIGTERM; sent SIGQUIT (goroutine dump in %s)", c.name, grace, c.logPath)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// tail returns the last lines of the child's log, for error messages.
func (c *child) tail(lines int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// sut is a system under test: a broker (started here or given), and the server processes.
type sut struct {
	h        *harness
	mode     string
	dir      string
	brokers  []string
	broker   *child // the embedded broker, when started here
	ns, app  string
	servers  []*child // processes whose CPU and memory are the server side
	children []*child // every process started, stopped in reverse order
	addr     string   // the entry point for clients
}

// newSUT prepares a system for mode: a fresh embedded broker, or a fresh namespace on the
// given broker.
func (h *harness) newSUT(ctx context.Context, mode string) (*sut, error) {
	n := h.seq.Add(1)
	s := &sut{h: h, mode: mode, dir: filepath.Join(h.dir, fmt.Sprintf("%02d-%s", n, mode)), app: "b"}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	if h.o.broker != "embedded" {
		s.brokers = []string{h.o.broker}
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
	c, err := s.h.spawn(filepath.Base(s.dir)+"-"+name, args...)
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
	if s.h.o.profileDir != "" {
		wrap = append(wrap, "--cpuprofile", filepath.Join(s.h.o.profileDir, fmt.Sprintf("%s-%s-%s.cpu.pprof", s.mode, name, s.h.runID)))
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
		"--partitions", strconv.Itoa(int(s.h.o.partitions)),
		"--listen", listen,
		"--node-id", name,
		"--data-dir", filepath.Join(s.dir, name),
		"--log-level", "info",
	}, append(slices.Clone(s.h.o.nodeArgs), extra...)...)
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

// brokerPID is the broker's process, or 0 when unknown.
func (s *sut) brokerPID() int {
	if s.broker != nil {
		return s.broker.pid()
	}
	return s.h.o.brokerPID
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
}

// waitDial waits until addr accepts TCP connections (or c exits).
func (s *sut) waitDial(ctx context.Context, c *child, addr string) error {
	return poll(ctx, 2*time.Minute, func() (bool, error) {
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
	for p := range s.h.o.partitions {
		id := entityOf(fmt.Sprintf("ready-%d", p), p, s.h.o.partitions)
		var last error
		err := poll(ctx, 3*time.Minute, func() (bool, error) {
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
	s.h.logf("%s: all %d partitions serve (%v)", s.mode, s.h.o.partitions, time.Since(start).Round(time.Millisecond))
	return nil
}

// poll calls cond every 50ms until it reports done or an error, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
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
func entityOf(prefix string, p, partitions int32) string {
	for k := 0; ; k++ {
		id := prefix + "-" + strconv.Itoa(k)
		if broker.Partition([]byte(id), partitions) == p {
			return id
		}
	}
}

// --- workloads ----------------------------------------------------------------------------

// clientConns is the number of gRPC connections a workload spreads its calls over.
const clientConns = 4

// workload is the call a mode makes: call runs one command for an entity.
type workload struct {
	call  func(ctx context.Context, entityID string) error
	close func()
}

// dialConns opens n gRPC client connections to addr.
func dialConns(addr string, n int) ([]*grpc.ClientConn, func(), error) {
	var conns []*grpc.ClientConn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, cc)
	}
	return conns, closeAll, nil
}

// newWorkload returns the workload of a mode against addr: AddItem of one item to a cart.
func newWorkload(mode, addr string, concurrency int) (*workload, error) {
	if mode == "http" {
		return httpWorkload(addr, concurrency), nil
	}
	conns, closeAll, err := dialConns(addr, min(clientConns, concurrency))
	if err != nil {
		return nil, err
	}
	var next atomic.Uint64
	pick := func() grpc.ClientConnInterface { return conns[next.Add(1)%uint64(len(conns))] }
	w := &workload{close: closeAll}
	switch mode {
	case "value":
		clients := make([]valuecartpb.ShoppingCartClient, len(conns))
		for i, c := range conns {
			clients[i] = valuecartpb.NewShoppingCartClient(c)
		}
		w.call = func(ctx context.Context, id string) error {
			_, err := clients[next.Add(1)%uint64(len(clients))].AddItem(ctx, &valuecartpb.AddLineItem{UserId: id, ProductId: "apple", Name: "Apple", Quantity: 1})
			return err
		}
	case "action":
		w.call = func(ctx context.Context, id string) error {
			_, err := validatorpb.NewCartValidatorClient(pick()).AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: id, ProductId: "apple", Name: "Apple", Quantity: 1})
			return err
		}
	default: // bare, es, es-remote, seq, mem, restore, failover: the event-sourced cart
		w.call = func(ctx context.Context, id string) error {
			_, err := shoppingcartpb.NewShoppingCartClient(pick()).AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: id, ProductId: "apple", Name: "Apple", Quantity: 1})
			return err
		}
	}
	return w, nil
}

// httpWorkload posts AddItem as JSON over HTTP/1.1 keep-alive connections, one per command in
// flight.
func httpWorkload(addr string, concurrency int) *workload {
	tr := &http.Transport{
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		MaxConnsPerHost:     concurrency,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: tr}
	body := []byte(`{"productId":"apple","name":"Apple","quantity":1}`)
	return &workload{
		close: tr.CloseIdleConnections,
		call: func(ctx context.Context, id string) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/cart/"+id+"/items/add", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return &bench.HTTPError{Status: resp.StatusCode, Body: string(b)}
			}
			return nil
		},
	}
}

// entityIDs returns n entity ids "<prefix><i>".
func entityIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}

// --- throughput modes -----------------------------------------------------------------------

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
			"--partitions", strconv.Itoa(int(s.h.o.partitions)), "--listen", listen, "--log-level", "warn")
		s.addr = listen
	case "es-remote", "mem-remote":
		uf, uerr := s.startUserFunction(ctx, "")
		if uerr != nil {
			return uerr
		}
		node, s.addr, err = s.startNode("node", debugAddr, "--user-function", uf)
	case "value":
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "valuecart")
	case "action":
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "validator")
	default:
		node, s.addr, err = s.startNode("node", debugAddr, "--example", "shoppingcart")
	}
	if err != nil {
		return err
	}
	return s.waitDial(ctx, node, s.addr)
}

// runThroughput measures one closed-loop mode: bare, es, es-remote, value, action, http, seq.
func (h *harness) runThroughput(ctx context.Context, mode string) (bench.Result, error) {
	res := bench.Result{Mode: mode, Broker: h.brokerLabel(), Concurrency: h.o.concurrency, Entities: h.o.entities}
	if mode == "seq" {
		res.Concurrency, res.Entities = 1, h.o.seqEntities
	}
	s, err := h.newSUT(ctx, mode)
	if err != nil {
		return res, err
	}
	defer s.close()
	if err := s.startSystem(ctx, mode, ""); err != nil {
		return res, err
	}
	w, err := newWorkload(mode, s.addr, res.Concurrency)
	if err != nil {
		return res, err
	}
	defer w.close()
	if err := s.waitReady(ctx, w); err != nil {
		return res, err
	}
	ids := entityIDs("c", res.Entities)
	var (
		server, brk, self [2]bench.ProcSample
		sampleErr         error
	)
	sample := func(i int) {
		var err error
		if server[i], err = bench.Procs(s.serverPIDs()...); err != nil {
			sampleErr = err
		}
		if brk[i], err = bench.Procs(s.brokerPID()); err != nil {
			sampleErr = err
		}
		if self[i], err = bench.ReadProc(os.Getpid()); err != nil {
			sampleErr = err
		}
	}
	h.logf("%s: %d in flight over %d entities: %v warmup, %v measured", mode, res.Concurrency, res.Entities, h.o.warmup, h.o.duration)
	lr, err := bench.RunLoad(ctx, bench.LoadConfig{
		Concurrency: res.Concurrency,
		Warmup:      h.o.warmup,
		Duration:    h.o.duration,
		OpTimeout:   h.o.opTimeout,
		Op: func(ctx context.Context, _ int, seq uint64) error {
			return w.call(ctx, ids[seq%uint64(len(ids))])
		},
		OnStart: func() { sample(0) },
		OnStop:  func() { sample(1) },
	})
	if err != nil {
		return res, err
	}
	if err := s.check(); err != nil {
		return res, err
	}
	if sampleErr != nil {
		return res, sampleErr
	}
	end, err := bench.Procs(s.serverPIDs()...)
	if err != nil {
		return res, err
	}
	res.Commands, res.Seconds, res.PerSecond = lr.Ops, lr.Elapsed.Seconds(), lr.Throughput()
	res.P50, res.P99, res.P999 = lr.Latency.Quantile(0.5), lr.Latency.Quantile(0.99), lr.Latency.Quantile(0.999)
	res.Errors, res.WarmupErrors = lr.Errors, lr.WarmupErrors
	res.ServerRSS = end.RSS
	if lr.Ops > 0 {
		per := func(a [2]bench.ProcSample) time.Duration { return (a[1].CPU - a[0].CPU) / time.Duration(lr.Ops) }
		res.ServerCPU, res.ClientCPU = per(server), per(self)
		if s.brokerPID() != 0 {
			res.BrokerCPU = per(brk)
		}
	}
	if pid := s.brokerPID(); pid != 0 {
		if b, err := bench.ReadProc(pid); err == nil {
			res.BrokerRSS = b.RSS
		}
	}
	if res.RecordsPerTxn, err = s.recordsPerTxn(ctx, mode); err != nil {
		h.logf("%s: counting transactions: %v", mode, err)
	}
	h.logf("%s: %s commands/s, p50 %s, p99 %s, server CPU %s/command, errors: %s", mode, bench.FormatRate(res.PerSecond),
		bench.FormatDuration(res.P50), bench.FormatDuration(res.P99), bench.FormatDuration(res.ServerCPU), bench.FormatErrors(res.Errors))
	return res, nil
}

// recordsPerTxn reads the mode's journal (the cart's events, or the value cart's state) and
// returns records per transaction: in each partition every committed transaction that wrote to
// it left one commit marker, which takes an offset but is no record.
func (s *sut) recordsPerTxn(ctx context.Context, mode string) (float64, error) {
	cfg := broker.DefaultConfig()
	cfg.Brokers, cfg.Namespace, cfg.Partitions = s.brokers, s.ns, s.h.o.partitions
	topic := cfg.EventsTopic(shoppingcart.PersistenceID)
	if mode == "value" {
		topic = cfg.StateTopic(valuecart.PersistenceID)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var records, markers int64
	for p := range s.h.o.partitions {
		var n int64
		ends, err := broker.ReadToEnd(ctx, cfg, []broker.TopicPartitionFrom{{Topic: topic, Partition: p, From: -1}}, func(broker.Record) error {
			n++
			return nil
		})
		if err != nil {
			return 0, err
		}
		records += n
		markers += ends[topic] - n
	}
	adm, err := broker.NewAdmin(cfg)
	if err != nil {
		return 0, err
	}
	defer adm.Close()
	infos, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, err
	}
	for _, ti := range infos {
		if ti.Name == topic {
			for _, start := range ti.StartOffsets {
				markers -= start
			}
		}
	}
	if markers <= 0 {
		return 0, fmt.Errorf("%s: %d records and no transaction markers", topic, records)
	}
	return float64(records) / float64(markers), nil
}

// --- memory per active entity ---------------------------------------------------------------

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
func (h *harness) runMem(ctx context.Context, variant string, n int) (bench.MemResult, error) {
	res := bench.MemResult{Variant: variant, Broker: h.brokerLabel(), Entities: n, Errors: map[string]uint64{}}
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
	w, err := newWorkload(mode, s.addr, h.o.concurrency)
	if err != nil {
		return res, err
	}
	defer w.close()
	if err := s.waitReady(ctx, w); err != nil {
		return res, err
	}
	profile := func(tag string) string {
		if h.o.profileDir == "" {
			return ""
		}
		return filepath.Join(h.o.profileDir, fmt.Sprintf("%s-%d-%s-%s", mode, n, tag, h.runID))
	}
	before, err := fetchMemStats(ctx, debugAddr, profile("before"))
	if err != nil {
		return res, err
	}
	rssBefore, err := bench.ReadProc(node.pid())
	if err != nil {
		return res, err
	}
	var ufBefore bench.ProcSample
	if uf != nil {
		if ufBefore, err = bench.ReadProc(uf.pid()); err != nil {
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
	for range h.o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				for attempt := 0; attempt < 3; attempt++ {
					cctx, cancel := context.WithTimeout(ctx, h.o.opTimeout)
					err := w.call(cctx, ids[i])
					cancel()
					if err == nil {
						break
					}
					mu.Lock()
					res.Errors[bench.Code(err)]++
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
	rssAfter, err := bench.ReadProc(node.pid())
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
		ufAfter, err := bench.ReadProc(uf.pid())
		if err != nil {
			return res, err
		}
		res.UserFunctionPerEntity = float64(ufAfter.RSS-ufBefore.RSS) / fn
	}
	h.logf("%s: %d entities active in %v: node RSS %s → %s, %s per entity (heap %s, stacks %s, %.1f goroutines)", mode, n, took.Round(time.Millisecond),
		bench.FormatBytes(float64(res.RSSBefore)), bench.FormatBytes(float64(res.RSSAfter)), bench.FormatBytes(res.PerEntity),
		bench.FormatBytes(res.HeapPerEntity), bench.FormatBytes(res.StackPerEntity), res.GoroutinesPerEntity)
	return res, s.check()
}

// --- restore ----------------------------------------------------------------------------------

// acquiredLine matches a node's "partition acquired" log line (hclog text format).
var acquiredLine = regexp.MustCompile(`partition acquired:.*?\bpartition=(\d+)\b.*?\brestored_records=(\d+)\b.*?\btook=(\S+)`)

// acquisition is one "partition acquired" log line.
type acquisition struct {
	partition int32
	records   int64
	took      time.Duration
}

// parseAcquired returns the "partition acquired" lines of a node's log, the latest per partition.
func parseAcquired(log []byte) (map[int32]acquisition, error) {
	out := make(map[int32]acquisition)
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := acquiredLine.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		p, err1 := strconv.ParseInt(string(m[1]), 10, 32)
		recs, err2 := strconv.ParseInt(string(m[2]), 10, 64)
		took, err3 := time.ParseDuration(string(m[3]))
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("log line %q: %w", sc.Text(), err)
		}
		out[int32(p)] = acquisition{partition: int32(p), records: recs, took: took}
	}
	return out, sc.Err()
}

// runRestore writes --restore-commands commands through node A, stops it, and times node B (an
// empty Pebble) acquiring every partition: each acquisition fences, publishes ownership and
// reads the partition's events and snapshots into Pebble.
func (h *harness) runRestore(ctx context.Context) (bench.RestoreResult, error) {
	res := bench.RestoreResult{Broker: h.brokerLabel(), Partitions: int(h.o.partitions)}
	s, err := h.newSUT(ctx, "restore")
	if err != nil {
		return res, err
	}
	defer s.close()
	if err := s.startSystem(ctx, "restore", ""); err != nil {
		return res, err
	}
	a := s.servers[0]
	w, err := newWorkload("restore", s.addr, h.o.concurrency)
	if err != nil {
		return res, err
	}
	defer w.close()
	if err := s.waitReady(ctx, w); err != nil {
		return res, err
	}
	ids := entityIDs("r", h.o.entities)
	h.logf("restore: writing %d commands (at most %v)", h.o.restoreCommands, 3*h.o.duration)
	lr, err := bench.RunLoad(ctx, bench.LoadConfig{
		Concurrency: h.o.concurrency, Duration: 3 * h.o.duration, MaxOps: uint64(h.o.restoreCommands), OpTimeout: h.o.opTimeout,
		Op: func(ctx context.Context, _ int, seq uint64) error { return w.call(ctx, ids[seq%uint64(len(ids))]) },
	})
	if err != nil {
		return res, err
	}
	h.logf("restore: %d commands written at %s/s; stopping the node", lr.Ops, bench.FormatRate(lr.Throughput()))
	w.close()
	if err := a.stop(10 * time.Second); err != nil {
		// It left the group before hanging, so its partitions are free; go on.
		h.logf("restore: %v", err)
	}
	s.forget(a)
	start := time.Now()
	b, _, err := s.startNode("fresh", "", "--example", "shoppingcart")
	if err != nil {
		return res, err
	}
	var acq map[int32]acquisition
	err = poll(ctx, 5*time.Minute, func() (bool, error) {
		if !b.alive() {
			return false, fmt.Errorf("fresh node exited (%v):\n%s", b.err, b.tail(20))
		}
		log, err := os.ReadFile(b.logPath)
		if err != nil {
			return false, err
		}
		if acq, err = parseAcquired(log); err != nil {
			return false, err
		}
		return len(acq) == int(h.o.partitions), nil
	})
	if err != nil {
		return res, fmt.Errorf("fresh node acquiring %d partitions: %w", h.o.partitions, err)
	}
	res.Wall = time.Since(start)
	rates := make([]float64, 0, len(acq))
	for _, a := range acq {
		res.Records += a.records
		res.Slowest = max(res.Slowest, a.took)
		if a.took > 0 {
			rates = append(rates, float64(a.records)/a.took.Seconds())
		}
	}
	if res.Slowest > 0 {
		res.PerSecond = float64(res.Records) / res.Slowest.Seconds()
	}
	if len(rates) > 0 {
		slices.Sort(rates)
		res.PartitionPerSecond = rates[(len(rates)-1)/2]
	}
	h.logf("restore: %d records in %d partitions, slowest partition %v: %s records/s", res.Records, len(acq),
		res.Slowest, bench.FormatRate(res.PerSecond))
	return res, nil
}

// --- failover ---------------------------------------------------------------------------------

// ownerView follows the owners topic: partition → owning node id.
type ownerView struct {
	mu    sync.Mutex
	owner map[int32]string
}

func (v *ownerView) apply(r broker.Record) {
	var rec kstatev1.OwnerRecord
	if proto.Unmarshal(r.Value, &rec) != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if rec.GetReleased() {
		delete(v.owner, rec.GetPartition())
		return
	}
	v.owner[rec.GetPartition()] = rec.GetNodeId()
}

// ownedBy returns the partitions node owns.
func (v *ownerView) ownedBy(node string) []int32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []int32
	for p, n := range v.owner {
		if n == node {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// balanced reports whether every partition is owned by one of nodes and each node owns one.
func (v *ownerView) balanced(partitions int32, nodes []string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	count := map[string]int{}
	for p := range partitions {
		n, ok := v.owner[p]
		if !ok || !slices.Contains(nodes, n) {
			return false
		}
		count[n]++
	}
	return len(count) == len(nodes)
}

// recovery tracks, in one round, the first success after the kill for each partition of the
// killed node.
type recovery struct {
	mu      sync.Mutex
	killed  time.Time
	pending map[int32]bool
	samples []time.Duration
	lastOK  map[int32]time.Time
	done    chan struct{}
}

// ok records a successful command for partition p that started at start and ended at end.
func (r *recovery) ok(p int32, start, end time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOK[p] = end
	if r.pending[p] && !start.Before(r.killed) {
		delete(r.pending, p)
		r.samples = append(r.samples, end.Sub(r.killed))
		if len(r.pending) == 0 {
			close(r.done)
		}
	}
}

// arm starts a round: parts lost their owner at killed.
func (r *recovery) arm(parts []int32, killed time.Time) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.killed, r.pending, r.done = killed, map[int32]bool{}, make(chan struct{})
	for _, p := range parts {
		r.pending[p] = true
	}
	if len(parts) == 0 {
		close(r.done)
	}
	return r.done
}

// disarm ends a round and returns the partitions that did not recover.
func (r *recovery) disarm() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.pending)
	r.pending = map[int32]bool{}
	return n
}

// fresh reports whether every partition had a success within the last d.
func (r *recovery) fresh(partitions int32, d time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range partitions {
		if time.Since(r.lastOK[p]) > d {
			return false
		}
	}
	return true
}

// runFailover runs three nodes with --session-timeout, background load and one probe per
// partition through the nodes that stay up, kills one node per round with SIGKILL, and measures
// for each partition the killed node owned the time from the kill to the first command that
// started after the kill and succeeded.
func (h *harness) runFailover(ctx context.Context) (bench.FailoverResult, error) {
	const nodes = 3
	res := bench.FailoverResult{Broker: h.brokerLabel(), Nodes: nodes, SessionTimeout: h.o.sessionTimeout, Rounds: h.o.failoverRounds, Errors: map[string]uint64{}}
	s, err := h.newSUT(ctx, "failover")
	if err != nil {
		return res, err
	}
	defer s.close()
	names := make([]string, nodes)
	addrs := make([]string, nodes)
	procs := make([]*child, nodes)
	args := make([][]string, nodes)
	for i := range nodes {
		names[i] = "n" + strconv.Itoa(i)
		if addrs[i], err = freeLoopback(); err != nil {
			return res, err
		}
		args[i] = s.nodeArgs(names[i], addrs[i], "--example", "shoppingcart", "--session-timeout", h.o.sessionTimeout.String())
		if procs[i], err = s.startServer(names[i], "", args[i]...); err != nil {
			return res, err
		}
	}
	for i := range nodes {
		if err := s.waitDial(ctx, procs[i], addrs[i]); err != nil {
			return res, err
		}
	}
	// Follow the owners topic, as the nodes' routers do.
	bcfg := broker.DefaultConfig()
	bcfg.Brokers, bcfg.Namespace, bcfg.App, bcfg.Partitions = s.brokers, s.ns, s.app, h.o.partitions
	view := &ownerView{owner: map[int32]string{}}
	fctx, stopFollow := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		stopFollow()
		bg.Wait()
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		if err := broker.Follow(fctx, bcfg, bcfg.OwnersTopic(), view.apply); err != nil && fctx.Err() == nil {
			h.logf("failover: following the owners topic: %v", err)
		}
	}()
	ws := make([]*workload, nodes)
	for i := range nodes {
		if ws[i], err = newWorkload("failover", addrs[i], 1); err != nil {
			return res, err
		}
		defer ws[i].close()
	}
	if err := s.waitReady(ctx, ws[0]); err != nil {
		return res, err
	}
	// Clients use the nodes that stay up: excluded is the node about to be killed (-1: none).
	var excluded atomic.Int32
	excluded.Store(-1)
	via := func(k int) *workload {
		i := k % nodes
		if int32(i) == excluded.Load() {
			i = (i + 1) % nodes
		}
		return ws[i]
	}
	rec := &recovery{lastOK: map[int32]time.Time{}, pending: map[int32]bool{}, done: make(chan struct{})}
	var (
		errMu   sync.Mutex
		samples = map[string]string{} // the first error of each kind, for the progress output
		// phase names the part of a round an error happened in.
		phase atomic.Value
		count = func(err error) {
			code := bench.Code(err) + " (" + phase.Load().(string) + ")"
			errMu.Lock()
			res.Errors[code]++
			if _, ok := samples[code]; !ok {
				samples[code] = err.Error()
			}
			errMu.Unlock()
		}
	)
	phase.Store("steady")
	// One probe per partition, back to back with a short deadline, and the background load.
	for p := range h.o.partitions {
		id := entityOf(fmt.Sprintf("probe-%d", p), p, h.o.partitions)
		bg.Add(1)
		go func() {
			defer bg.Done()
			for k := int(p); fctx.Err() == nil; k++ {
				cctx, cancel := context.WithTimeout(fctx, 2*time.Second)
				start := time.Now()
				err := via(k).call(cctx, id)
				end := time.Now()
				cancel()
				if err == nil {
					rec.ok(p, start, end)
				} else if fctx.Err() == nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	ids := entityIDs("f", h.o.entities)
	var loadSeq atomic.Uint64
	for wk := range h.o.concurrency {
		bg.Add(1)
		go func() {
			defer bg.Done()
			for fctx.Err() == nil {
				i := loadSeq.Add(1)
				cctx, cancel := context.WithTimeout(fctx, h.o.opTimeout)
				err := via(wk).call(cctx, ids[i%uint64(len(ids))])
				cancel()
				if err != nil && fctx.Err() == nil {
					count(err)
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	for round := range h.o.failoverRounds {
		live := slices.Clone(names)
		if err := poll(ctx, 3*time.Minute, func() (bool, error) {
			return view.balanced(h.o.partitions, live) && rec.fresh(h.o.partitions, time.Second), s.check()
		}); err != nil {
			return res, fmt.Errorf("round %d: waiting for every node to own partitions and every partition to serve: %w", round+1, err)
		}
		phase.Store("steady")
		victim := round % nodes
		phase.Store("victim excluded")
		excluded.Store(int32(victim))
		time.Sleep(500 * time.Millisecond) // commands already sent through the victim finish
		parts := view.ownedBy(names[victim])
		killed := time.Now()
		phase.Store("failover")
		procs[victim].kill()
		s.forget(procs[victim])
		done := rec.arm(parts, killed)
		h.logf("failover: round %d: killed %s (owned partitions %v)", round+1, names[victim], parts)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		lost := rec.disarm()
		res.Unrecovered += lost
		rec.mu.Lock()
		res.Samples = slices.Clone(rec.samples)
		rec.mu.Unlock()
		h.logf("failover: round %d: %d partitions serve again, %d did not within 60s; recovery times so far: %v",
			round+1, len(parts)-lost, lost, res.Samples)
		// Bring the victim back (same id, data and address) for the next round.
		phase.Store("victim restarting")
		c, err := s.startServer(names[victim], "", args[victim]...)
		if err != nil {
			return res, err
		}
		procs[victim] = c
		if err := s.waitDial(ctx, c, addrs[victim]); err != nil {
			return res, err
		}
		excluded.Store(-1)
		phase.Store("victim rejoining")
	}
	stopFollow()
	bg.Wait()
	for code, msg := range samples {
		h.logf("failover: load errors %s (%d), first: %s", code, res.Errors[code], msg)
	}
	res.Summarize()
	h.logf("failover: p50 %s, p99 %s, max %s over %d partitions", bench.FormatDuration(res.P50), bench.FormatDuration(res.P99),
		bench.FormatDuration(res.Max), len(res.Samples))
	return res, nil
}

// --- hidden helpers: report, exec, user-function ----------------------------------------------

// newBenchReportCmd is `kstate bench report FILE...`: it reads reports written by --json or
// --json-file, merges them (the machine of the first, the results of all), checks the targets
// again and prints the tables (or JSON).
func newBenchReportCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:    "report FILE.json...",
		Short:  "Print reports of earlier runs, merged, as tables",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			merged, err := mergeReports(files)
			if err != nil {
				return err
			}
			if asJSON {
				return merged.WriteJSON(cmd.OutOrStdout())
			}
			return merged.WriteText(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the merged report as JSON")
	return cmd
}

// mergeReports reads JSON reports and merges them into one, targets checked again.
func mergeReports(files []string) (*bench.Report, error) {
	var merged *bench.Report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r bench.Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if merged == nil {
			merged = &r
			continue
		}
		merged.Args = append(append(merged.Args, "+"), r.Args...)
		merged.Results = append(merged.Results, r.Results...)
		merged.Memory = append(merged.Memory, r.Memory...)
		merged.Failover = append(merged.Failover, r.Failover...)
		merged.Restore = append(merged.Restore, r.Restore...)
	}
	merged.Finish()
	return merged, nil
}

// newBenchExecCmd is `kstate bench exec [--cpuprofile F] [--debug-addr A] -- ARGS...`: it runs
// `kstate ARGS...` in this process, with a CPU profile and/or a memory statistics endpoint.
func newBenchExecCmd() *cobra.Command {
	var cpuprofile, debugAddr string
	cmd := &cobra.Command{
		Use:    "exec [--cpuprofile FILE] [--debug-addr HOST:PORT] -- COMMAND [ARGS...]",
		Short:  "Run a kstate command with a CPU profile or a memory statistics endpoint",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if debugAddr != "" {
				stop, err := serveDebug(debugAddr)
				if err != nil {
					return err
				}
				defer stop()
			}
			if cpuprofile != "" {
				f, err := os.Create(cpuprofile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return err
				}
				// The profile ends when shutdown begins, so a slow shutdown neither pads nor loses it.
				var once sync.Once
				stopProfile := func() {
					once.Do(func() {
						pprof.StopCPUProfile()
						f.Close()
					})
				}
				defer stopProfile()
				ctx := cmd.Context()
				done := make(chan struct{})
				defer close(done)
				go func() {
					select {
					case <-ctx.Done():
						stopProfile()
					case <-done:
					}
				}()
			}
			root := newRootCmd()
			root.SetArgs(args)
			root.SetOut(cmd.OutOrStdout())
			root.SetErr(cmd.ErrOrStderr())
			return root.ExecuteContext(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run here")
	cmd.Flags().StringVar(&debugAddr, "debug-addr", "", "serve /memstats (after a forced GC) on this address")
	return cmd
}

// serveDebug serves /memstats on addr: it collects garbage, returns free memory to the OS, and
// reports memStats; ?heapprofile=PATH and ?goroutineprofile=PATH also write those profiles.
func serveDebug(addr string) (func(), error) {
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
// Cloudstate user function, exactly as examples/*/cmd/*-uf serve it (sdk.Server over TCP).
func newBenchUserFunctionCmd(lo *logOpts) *cobra.Command {
	var listen, example string
	cmd := &cobra.Command{
		Use:    "user-function",
		Short:  "Serve an example as a separate user-function process",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			mk, ok := examples[example]
			if !ok {
				return fmt.Errorf("unknown example %q: choose one of %s", example, exampleNames())
			}
			srv := sdk.NewServer(sdk.WithLogger(log.Named("user-function")))
			if err := srv.Register(mk()...); err != nil {
				return err
			}
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			return srv.Serve(cmd.Context(), lis)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve on")
	cmd.Flags().StringVar(&example, "example", "shoppingcart", "example to serve: "+exampleNames())
	return cmd
}
