package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/domainpb"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/internal/bench"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

func validBenchOpts() *benchOpts {
	return &benchOpts{duration: time.Second, entities: 10, seqEntities: 10, concurrency: 1, modes: []string{"all"},
		broker: "embedded", partitions: 16, opTimeout: time.Second, memEntities: []int{10}, restoreCommands: 1, repeat: 1,
		failoverRounds: 1, sessionTimeout: 3 * time.Second}
}

func TestBenchOptsValidate(t *testing.T) {
	o := validBenchOpts()
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.modes, bench.Modes) {
		t.Fatalf("all expands to %v, want %v", o.modes, bench.Modes)
	}
	o = validBenchOpts()
	o.modes = []string{"seq,es", "bare", "es"}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"bare", "es", "seq"}; !slices.Equal(o.modes, want) {
		t.Fatalf("modes %v, want %v (canonical order, once each)", o.modes, want)
	}
	for name, mut := range map[string]func(*benchOpts){
		"unknown mode":    func(o *benchOpts) { o.modes = []string{"es,turbo"} },
		"no mode":         func(o *benchOpts) { o.modes = []string{","} },
		"duration":        func(o *benchOpts) { o.duration = 0 },
		"warmup":          func(o *benchOpts) { o.warmup = -time.Second },
		"entities":        func(o *benchOpts) { o.entities = 0 },
		"concurrency":     func(o *benchOpts) { o.concurrency = 0 },
		"broker":          func(o *benchOpts) { o.broker = "kafka" },
		"broker pid":      func(o *benchOpts) { o.brokerPID = 42 },
		"mem entities":    func(o *benchOpts) { o.memEntities = []int{10, 0} },
		"session timeout": func(o *benchOpts) { o.sessionTimeout = 10 * time.Millisecond },
		"rounds":          func(o *benchOpts) { o.failoverRounds = 0 },
		"repeat":          func(o *benchOpts) { o.repeat = 0 },
	} {
		o := validBenchOpts()
		mut(o)
		if err := o.validate(); err == nil {
			t.Errorf("%s: validate accepted %+v", name, o)
		}
	}
	o = validBenchOpts()
	o.broker, o.brokerPID = "127.0.0.1:19092", 42
	if err := o.validate(); err != nil {
		t.Errorf("--broker ADDR with --broker-pid: %v", err)
	}
}

// TestRefServer runs the bare reference against the embedded broker: AddItem answers after a
// transaction holding exactly its event record committed.
func TestRefServer(t *testing.T) {
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	cfg := broker.DefaultConfig()
	cfg.Brokers, cfg.Namespace, cfg.App, cfg.Partitions = emb.Addrs(), "reftest", "ref", 4
	listen, err := freeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srvCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- runRefServer(srvCtx, cfg, listen, nil) }()
	defer func() {
		stop()
		if err := <-errc; err != nil {
			t.Errorf("ref server: %v", err)
		}
	}()
	cc, err := grpc.NewClient(listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cart := shoppingcartpb.NewShoppingCartClient(cc)
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank"}
	for _, u := range users {
		if err := bench.Poll(ctx, time.Minute, func() (bool, error) {
			_, err := cart.AddItem(ctx, &shoppingcartpb.AddLineItem{UserId: u, ProductId: "apple", Name: "Apple", Quantity: 2})
			return err == nil, nil
		}); err != nil {
			t.Fatalf("AddItem(%s): %v", u, err)
		}
	}
	if _, err := cart.AddItem(ctx, &shoppingcartpb.AddLineItem{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("AddItem without user: %v, want InvalidArgument", err)
	}
	if _, err := cart.GetCart(ctx, &shoppingcartpb.GetShoppingCart{UserId: "alice"}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("GetCart: %v, want Unimplemented (only AddItem is the reference)", err)
	}
	// Read the journal read_committed: one ItemAdded per successful call, keyed and partitioned
	// by user id.
	// A committed transaction's markers may trail EndTxn by a moment: poll, bounded.
	topic := cfg.EventsTopic(shoppingcart.PersistenceID)
	var got []string
	if err := bench.Poll(ctx, 20*time.Second, func() (bool, error) {
		got = readJournal(t, ctx, cfg, topic)
		return len(got) >= len(users), nil
	}); err != nil {
		t.Logf("journal: %v", err)
	}
	slices.Sort(got)
	if !slices.Equal(got, users) {
		t.Fatalf("journal holds %v, want one record each for %v", got, users)
	}
}

// readJournal reads topic whole, read_committed, checking each ItemAdded record; it returns the
// records' keys.
func readJournal(t *testing.T, ctx context.Context, cfg broker.Config, topic string) []string {
	t.Helper()
	var got []string
	for p := range cfg.Partitions {
		if _, err := broker.ReadToEnd(ctx, cfg, []broker.TopicPartitionFrom{{Topic: topic, Partition: p}}, func(r broker.Record) error {
			var ev domainpb.ItemAdded
			if err := proto.Unmarshal(r.Value, &ev); err != nil {
				return err
			}
			if ev.GetItem().GetProductId() != "apple" || ev.GetItem().GetQuantity() != 2 {
				t.Errorf("event %v", &ev)
			}
			if want := broker.Partition(r.Key, cfg.Partitions); r.Partition != want {
				t.Errorf("record of %s in partition %d, want %d", r.Key, r.Partition, want)
			}
			for _, h := range []string{kstatev1.HeaderSequence, kstatev1.HeaderType, kstatev1.HeaderCommandID, kstatev1.HeaderEntityType} {
				if _, ok := r.HeaderValue(h); !ok {
					t.Errorf("record of %s lacks header %s", r.Key, h)
				}
			}
			got = append(got, string(r.Key))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// TestBenchEndToEnd runs `kstate bench --mode es,bare` as a user would: this package is built
// into a binary whose children (broker, node, reference server) the bench starts and measures.
func TestBenchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kstate and runs two load modes (about a minute)")
	}
	bin := filepath.Join(t.TempDir(), "kstate")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var stdout, stderr bytes.Buffer
	root := newRootCmd()
	root.SetArgs([]string{"bench", "--mode", "es,bare", "--duration", "2s", "--warmup", "0", "--entities", "100",
		"--concurrency", "4", "--json", "--exe", bin, "--work-dir", t.TempDir()})
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("kstate bench: %v\nprogress:\n%s", err, stderr.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	if len(rep.Results) != 2 || rep.Results[0].Mode != "bare" || rep.Results[1].Mode != "es" {
		t.Fatalf("results %+v, want bare then es", rep.Results)
	}
	for _, r := range rep.Results {
		if r.Broker != "embedded" || r.Concurrency != 4 || r.Entities != 100 {
			t.Errorf("%s: broker %q, concurrency %d, entities %d", r.Mode, r.Broker, r.Concurrency, r.Entities)
		}
		if r.Commands == 0 || r.PerSecond <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.P999 < r.P99 {
			t.Errorf("%s: commands %d, %v/s, p50 %v, p99 %v, p99.9 %v", r.Mode, r.Commands, r.PerSecond, r.P50, r.P99, r.P999)
		}
		if r.ServerCPU <= 0 || r.BrokerCPU <= 0 || r.ServerRSS < 1<<20 || r.BrokerRSS < 1<<20 {
			t.Errorf("%s: server CPU %v/cmd, broker CPU %v/cmd, server RSS %d, broker RSS %d", r.Mode, r.ServerCPU, r.BrokerCPU, r.ServerRSS, r.BrokerRSS)
		}
		if len(r.Errors) != 0 {
			t.Errorf("%s: errors %v", r.Mode, r.Errors)
		}
	}
	if es := rep.Results[1]; es.VsBare != es.PerSecond/rep.Results[0].PerSecond {
		t.Errorf("es vs bare %v, want %v", es.VsBare, es.PerSecond/rep.Results[0].PerSecond)
	}
	if len(rep.Targets) != 1 || !strings.Contains(rep.Targets[0].Name, "bare reference") {
		t.Errorf("targets %+v, want the in-process vs bare one", rep.Targets)
	}
	if !strings.Contains(stderr.String(), "all 16 partitions serve") {
		t.Errorf("no readiness in the progress output:\n%s", stderr.String())
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

func TestBenchOptsConfig(t *testing.T) {
	o := validBenchOpts()
	o.nodeArgs, o.profileDir, o.exe = []string{"--commit-linger=2ms"}, "prof", "/bin/kstate"
	o.broker, o.brokerPID = "127.0.0.1:19092", 7
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	c := o.config([]string{"bench", "--mode=all"})
	if !slices.Equal(c.Modes, bench.Modes) || c.Duration != o.duration || c.Partitions != 16 || c.OpTimeout != time.Second ||
		c.SessionTimeout != 3*time.Second || c.Broker != "127.0.0.1:19092" || c.BrokerPID != 7 || c.Exe != "/bin/kstate" || c.ProfileDir != "prof" ||
		!slices.Equal(c.NodeArgs, o.nodeArgs) || !slices.Equal(c.MemEntities, []int{10}) || !slices.Equal(c.Args, []string{"bench", "--mode=all"}) {
		t.Fatalf("config %+v from %+v", c, o)
	}
}
