package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/examples/chat/chatpb"
	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/examples/validator/validatorpb"
	"github.com/kstatehq/kstate/examples/valuecart"
	"github.com/kstatehq/kstate/examples/valuecart/valuecartpb"
	"github.com/kstatehq/kstate/internal/bench"
	"github.com/kstatehq/kstate/sdk"
)

// benchModeHelp describes each mode for --help.
const benchModeHelp = `modes:
  bare       the bare reference: a minimal gRPC server producing one record per AddItem with
             kstate's per-partition transactions and group commit (the floor to compare with)
  es         event-sourced shopping cart AddItem, Go entity in the node's process
  es-idem    es with a fresh idempotency key on every command (the cost of remembering outcomes)
  es-traced  es with OpenTelemetry tracing on (OTEL_* variables, OTLP/HTTP to a sink in the bench, 1% sampled)
  es-remote  es with the entity in a separate user-function process
  value      value-entity cart AddItem (in-process)
  crdt       chat example Friends/Add: an ORSet add on a CRDT entity (LOCAL), in-process
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
	f.StringSliceVar(&o.modes, "mode", []string{"all"}, "modes to run, repeatable or comma separated: all, "+strings.Join(bench.Modes, ", "))
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
				modes = append(modes, bench.Modes...)
			case slices.Contains(bench.Modes, m):
				modes = append(modes, m)
			default:
				return fmt.Errorf("--mode %q: choose from all, %s", m, strings.Join(bench.Modes, ", "))
			}
		}
	}
	if len(modes) == 0 {
		return errors.New("--mode: no mode given")
	}
	// Run in the canonical order (bare first), each once.
	o.modes = nil
	for _, m := range bench.Modes {
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

// runBench validates o and runs the bench (internal/bench) with kstate's broker and examples
// wired in; the report goes to out, progress to errOut.
func runBench(ctx context.Context, o *benchOpts, args []string, out, errOut io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	return bench.Run(ctx, o.config(args), benchKstate, out, errOut)
}

// config maps the validated flags onto the bench's Config; args is the command line.
func (o *benchOpts) config(args []string) bench.Config {
	return bench.Config{
		Modes: o.modes, Duration: o.duration, Warmup: o.warmup,
		Entities: o.entities, SeqEntities: o.seqEntities, Concurrency: o.concurrency,
		JSON: o.json, JSONFile: o.jsonFile, Broker: o.broker, BrokerPID: o.brokerPID,
		Partitions: o.partitions, OpTimeout: o.opTimeout, MemEntities: o.memEntities,
		RestoreCommands: o.restoreCommands, Repeat: o.repeat, FailoverRounds: o.failoverRounds,
		SessionTimeout: o.sessionTimeout, NodeArgs: o.nodeArgs, ProfileDir: o.profileDir,
		WorkDir: o.workDir, Keep: o.keep, Exe: o.exe, Args: args,
	}
}

// benchKstate is what the bench needs of kstate's broker and examples.
var benchKstate = bench.Kstate{
	Partition:    broker.Partition,
	Call:         benchCall,
	CountJournal: benchCountJournal,
	FollowOwners: benchFollowOwners,
}

// benchCall returns the gRPC command of a mode over conns: AddItem of one item to a cart.
func benchCall(mode string, conns []*grpc.ClientConn) func(ctx context.Context, entityID string) error {
	var next atomic.Uint64
	pick := func() grpc.ClientConnInterface { return conns[next.Add(1)%uint64(len(conns))] }
	var call func(ctx context.Context, id string) error
	switch mode {
	case "value":
		clients := make([]valuecartpb.ShoppingCartClient, len(conns))
		for i, c := range conns {
			clients[i] = valuecartpb.NewShoppingCartClient(c)
		}
		call = func(ctx context.Context, id string) error {
			_, err := clients[next.Add(1)%uint64(len(clients))].AddItem(ctx, &valuecartpb.AddLineItem{UserId: id, ProductId: "apple", Name: "Apple", Quantity: 1})
			return err
		}
	case "crdt":
		// Friends/Add of the chat example: an ORSet add (LOCAL) with a fresh friend each time.
		var seq atomic.Uint64
		call = func(ctx context.Context, id string) error {
			_, err := chatpb.NewFriendsClient(pick()).Add(ctx, &chatpb.FriendRequest{User: id, Friend: &chatpb.Friend{User: "f" + strconv.FormatUint(seq.Add(1), 36)}})
			return err
		}
	case "action":
		call = func(ctx context.Context, id string) error {
			_, err := validatorpb.NewCartValidatorClient(pick()).AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: id, ProductId: "apple", Name: "Apple", Quantity: 1})
			return err
		}
	case "es-idem":
		// A fresh idempotency key on every command: the cost of remembering outcomes.
		var seq atomic.Uint64
		prefix := strconv.FormatInt(time.Now().UnixNano(), 36)
		call = func(ctx context.Context, id string) error {
			ctx = metadata.AppendToOutgoingContext(ctx, "idempotency-key", prefix+"-"+strconv.FormatUint(seq.Add(1), 36))
			_, err := shoppingcartpb.NewShoppingCartClient(pick()).AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: id, ProductId: "apple", Name: "Apple", Quantity: 1})
			return err
		}
	default: // bare, es, es-remote, seq, mem, restore, failover: the event-sourced cart
		call = func(ctx context.Context, id string) error {
			_, err := shoppingcartpb.NewShoppingCartClient(pick()).AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: id, ProductId: "apple", Name: "Apple", Quantity: 1})
			return err
		}
	}
	return call
}

// benchCountJournal reads the mode's journal (the cart's events, or the value cart's state)
// read_committed and counts its records and the offsets its partitions span.
func benchCountJournal(ctx context.Context, k bench.Kafka, mode string) (bench.JournalCount, error) {
	cfg := broker.DefaultConfig()
	cfg.Brokers, cfg.Namespace, cfg.Partitions = k.Brokers, k.Namespace, k.Partitions
	topic := cfg.EventsTopic(shoppingcart.PersistenceID)
	if mode == "value" {
		topic = cfg.StateTopic(valuecart.PersistenceID)
	}
	jc := bench.JournalCount{Topic: topic}
	for p := range k.Partitions {
		var n int64
		ends, err := broker.ReadToEnd(ctx, cfg, []broker.TopicPartitionFrom{{Topic: topic, Partition: p, From: -1}}, func(broker.Record) error {
			n++
			return nil
		})
		if err != nil {
			return jc, err
		}
		jc.Records += n
		jc.Offsets += ends[topic]
	}
	adm, err := broker.NewAdmin(cfg)
	if err != nil {
		return jc, err
	}
	defer adm.Close()
	infos, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return jc, err
	}
	for _, ti := range infos {
		if ti.Name == topic {
			for _, start := range ti.StartOffsets {
				jc.Offsets -= start
			}
		}
	}
	return jc, nil
}

// benchFollowOwners follows the owners topic of k, as the nodes' routers do.
func benchFollowOwners(ctx context.Context, k bench.Kafka, apply func(value []byte)) error {
	cfg := broker.DefaultConfig()
	cfg.Brokers, cfg.Namespace, cfg.App, cfg.Partitions = k.Brokers, k.Namespace, k.App, k.Partitions
	return broker.Follow(ctx, cfg, cfg.OwnersTopic(), func(r broker.Record) { apply(r.Value) })
}

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
			merged, err := bench.ReadReports(files...)
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
				stop, err := bench.ServeMemStats(debugAddr)
				if err != nil {
					return err
				}
				defer stop()
			}
			if cpuprofile != "" {
				stop, err := bench.StartCPUProfile(cmd.Context(), cpuprofile)
				if err != nil {
					return err
				}
				defer stop()
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
