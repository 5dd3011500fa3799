package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// Modes are the workloads of `kstate bench`, in the order a run of all of them takes.
var Modes = []string{"bare", "es", "es-idem", "es-traced", "es-remote", "value", "crdt", "action", "http", "seq", "mem", "restore", "failover"}

// Config is one `kstate bench` run: what to measure and how. cmd/kstate maps its flags onto it
// and validates them; Run takes it as it is.
type Config struct {
	// Modes are the modes to run, each once, in the order of Modes.
	Modes []string
	// Duration is the measured time per mode; Warmup the unmeasured load before it.
	Duration, Warmup time.Duration
	// Entities are the entities the load spreads over (round robin); SeqEntities those of the
	// seq mode.
	Entities, SeqEntities int
	// Concurrency is the number of commands in flight.
	Concurrency int
	// JSON prints the report as JSON instead of Markdown tables; JSONFile, if set, also writes
	// it as JSON to that file.
	JSON     bool
	JSONFile string
	// Broker is "embedded" (a fresh embedded broker per mode) or the address of a Kafka broker;
	// BrokerPID, for an address, is its process, whose CPU time and memory are then reported.
	Broker    string
	BrokerPID int
	// Partitions are the partitions of the app's topics.
	Partitions int32
	// OpTimeout is the deadline of each command.
	OpTimeout time.Duration
	// MemEntities are the entity counts of the mem mode.
	MemEntities []int
	// RestoreCommands are the commands the restore mode writes before restoring.
	RestoreCommands int
	// Repeat runs the throughput modes this many times, interleaved; the median run is reported.
	Repeat int
	// FailoverRounds are the kill -9 rounds of the failover mode, whose nodes use SessionTimeout.
	FailoverRounds int
	SessionTimeout time.Duration
	// NodeArgs are extra flags for every kstate node.
	NodeArgs []string
	// ProfileDir, if set, receives CPU profiles of the processes under test (and heap and
	// goroutine profiles of the mem mode).
	ProfileDir string
	// WorkDir, if set, keeps the processes' data and logs in a run-<id> folder there; Keep keeps
	// the work folder (by default a temporary one, removed) after the run.
	WorkDir string
	Keep    bool
	// Exe is the kstate binary the processes under test start from (empty: this one).
	Exe string
	// Args is the command line, recorded in the report.
	Args []string
}

// Kafka names the Kafka of one system under test: its brokers, and the namespace, app and
// partitions of its topics.
type Kafka struct {
	Brokers    []string
	Namespace  string
	App        string
	Partitions int32
}

// Kstate is what the harness needs of kstate's own packages (broker, the examples), which
// internal/ may not import: cmd/kstate wires it in.
type Kstate struct {
	// Partition returns the partition of an entity key among partitions, as kstate routes it.
	Partition func(key []byte, partitions int32) int32
	// Call returns the gRPC command of mode (AddItem of one item to the cart of an entity) over
	// conns, spread round robin. It is not called for the http mode.
	Call func(mode string, conns []*grpc.ClientConn) func(ctx context.Context, entityID string) error
	// CountJournal reads mode's journal on k (the topic its commands write) read_committed and
	// counts its records and the offsets they span.
	CountJournal func(ctx context.Context, k Kafka, mode string) (JournalCount, error)
	// FollowOwners reads the owners topic of k until ctx ends, passing each record's value (a
	// kstate.v1.OwnerRecord) to apply.
	FollowOwners func(ctx context.Context, k Kafka, apply func(value []byte)) error
}

// Run runs every mode of cfg and prints the report to out; progress goes to errOut. It returns
// an error naming the modes that failed, after printing the report of the others.
func Run(ctx context.Context, cfg Config, k Kstate, out, errOut io.Writer) (err error) {
	h := &harness{cfg: &cfg, k: k, progress: errOut, runID: strconv.FormatInt(time.Now().Unix(), 36)}
	if h.exe = cfg.Exe; h.exe == "" {
		if h.exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find this binary to start the processes under test: %w", err)
		}
	}
	if h.dir = cfg.WorkDir; h.dir == "" {
		if h.dir, err = os.MkdirTemp("", "kstate-bench-"); err != nil {
			return err
		}
	} else {
		// A folder of its own per run: two runs never share data directories or logs.
		h.dir = filepath.Join(cfg.WorkDir, "run-"+h.runID)
		if err := os.MkdirAll(h.dir, 0o755); err != nil {
			return err
		}
	}
	if cfg.Keep || cfg.WorkDir != "" {
		h.logf("work folder (data and logs): %s", h.dir)
	} else {
		defer os.RemoveAll(h.dir)
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	rep := &Report{Machine: DescribeMachine(), Started: time.Now(), Args: cfg.Args}
	var failed []string
	fail := func(mode string, err error) {
		h.logf("%s: FAILED: %v", mode, err)
		if !slices.Contains(failed, mode) {
			failed = append(failed, mode)
		}
	}
	// Throughput modes, --repeat times round robin (so that a busy spell of a shared machine
	// hits every mode alike); the median run of each is reported.
	runs := map[string][]Result{}
	for i := 0; i < cfg.Repeat && ctx.Err() == nil; i++ {
		for _, mode := range cfg.Modes {
			if !isThroughputMode(mode) || ctx.Err() != nil {
				continue
			}
			if cfg.Repeat > 1 {
				h.logf("%s: run %d of %d", mode, i+1, cfg.Repeat)
			}
			r, err := h.runThroughput(ctx, mode)
			if err != nil {
				fail(mode, err)
				continue
			}
			runs[mode] = append(runs[mode], r)
		}
	}
	for _, mode := range cfg.Modes {
		if len(runs[mode]) > 0 {
			rep.Results = append(rep.Results, Median(runs[mode]))
		}
	}
	for _, mode := range cfg.Modes {
		if isThroughputMode(mode) || ctx.Err() != nil {
			continue
		}
		if err := h.run(ctx, mode, rep); err != nil {
			fail(mode, err)
		}
	}
	rep.Machine.LoadEnd, _ = LoadAverage()
	rep.Finish()
	if cfg.JSONFile != "" {
		var buf bytes.Buffer
		if err := rep.WriteJSON(&buf); err != nil {
			return err
		}
		if err := os.WriteFile(cfg.JSONFile, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if cfg.JSON {
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
	cfg      *Config
	k        Kstate
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

func (h *harness) brokerLabel() string { return h.cfg.Broker }

// isThroughputMode reports whether mode is a closed-loop load measured by runThroughput.
func isThroughputMode(mode string) bool {
	return mode != "mem" && mode != "restore" && mode != "failover"
}

// run runs one of the modes mem, restore and failover and adds its results to rep.
func (h *harness) run(ctx context.Context, mode string, rep *Report) error {
	switch mode {
	case "mem":
		for _, variant := range []string{"in-process", "remote"} {
			for _, n := range h.cfg.MemEntities {
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
