package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
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
	if !slices.Equal(o.modes, benchModes) {
		t.Fatalf("all expands to %v, want %v", o.modes, benchModes)
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

func TestParseAcquired(t *testing.T) {
	log := []byte(`2026-11-26T16:27:56.366Z [INFO]  kstate.node: partitions assigned: node=fresh partitions=[0, 1]
2026-11-26T16:27:56.382Z [INFO]  kstate.node.partition: partition acquired: node=fresh partition=0 restored_records=0 took=15ms
2026-11-26T16:27:56.389Z [INFO]  kstate.node.partition: partition acquired: node=fresh partition=1 restored_records=12345 took=1.5s
2026-11-26T16:27:57.000Z [INFO]  kstate.node.partition: partition acquired: node=fresh partition=0 restored_records=7 took=2ms
`)
	got, err := parseAcquired(log)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]acquisition{
		0: {partition: 0, records: 7, took: 2 * time.Millisecond}, // the latest line per partition
		1: {partition: 1, records: 12345, took: 1500 * time.Millisecond},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("parseAcquired = %+v, want %+v", got, want)
	}
	if _, err := parseAcquired([]byte("partition acquired: partition=1 restored_records=3 took=soon\n")); err == nil {
		t.Fatal("a bad duration was accepted")
	}
}

func TestEntityOf(t *testing.T) {
	for p := range int32(16) {
		id := entityOf("probe", p, 16)
		if got := broker.Partition([]byte(id), 16); got != p {
			t.Fatalf("entityOf(%d) = %q in partition %d", p, id, got)
		}
	}
}

func TestOwnerView(t *testing.T) {
	v := &ownerView{owner: map[int32]string{}}
	rec := func(p int32, node string, released bool) broker.Record {
		b, err := proto.Marshal(&kstatev1.OwnerRecord{Partition: p, NodeId: node, Released: released})
		if err != nil {
			t.Fatal(err)
		}
		return broker.Record{Value: b}
	}
	v.apply(rec(0, "a", false))
	v.apply(rec(1, "b", false))
	v.apply(rec(2, "a", false))
	v.apply(broker.Record{Value: []byte{0xff}}) // undecodable: ignored
	if got := v.ownedBy("a"); !slices.Equal(got, []int32{0, 2}) {
		t.Fatalf("ownedBy(a) = %v", got)
	}
	if !v.balanced(3, []string{"a", "b"}) {
		t.Fatal("3 partitions over a and b: balanced")
	}
	if v.balanced(3, []string{"a", "b", "c"}) {
		t.Fatal("c owns nothing: not balanced")
	}
	v.apply(rec(1, "b", true))
	if v.balanced(3, []string{"a", "b"}) {
		t.Fatal("partition 1 released: not balanced")
	}
	v.apply(rec(1, "c", false))
	if v.balanced(3, []string{"a", "b"}) {
		t.Fatal("partition 1 owned by c, which is not live: not balanced")
	}
}

func TestRecovery(t *testing.T) {
	r := &recovery{lastOK: map[int32]time.Time{}, pending: map[int32]bool{}}
	kill := time.Now()
	done := r.arm([]int32{3, 5}, kill)
	r.ok(3, kill.Add(-time.Millisecond), kill.Add(time.Second)) // started before the kill: not a sample
	r.ok(7, kill.Add(time.Millisecond), kill.Add(time.Second))  // not a partition of the killed node
	r.ok(3, kill.Add(2*time.Second), kill.Add(3*time.Second))
	r.ok(3, kill.Add(3*time.Second), kill.Add(4*time.Second)) // only the first success counts
	select {
	case <-done:
		t.Fatal("done before partition 5 recovered")
	default:
	}
	r.ok(5, kill.Add(time.Second), kill.Add(4500*time.Millisecond))
	select {
	case <-done:
	default:
		t.Fatal("not done after both partitions recovered")
	}
	if want := []time.Duration{3 * time.Second, 4500 * time.Millisecond}; !slices.Equal(r.samples, want) {
		t.Fatalf("samples %v, want %v", r.samples, want)
	}
	if r.disarm() != 0 {
		t.Fatal("nothing should be pending")
	}
	r.arm([]int32{1}, time.Now())
	if r.disarm() != 1 {
		t.Fatal("partition 1 never recovered: one unrecovered")
	}
	if r.fresh(8, time.Minute) {
		t.Fatal("partitions 0..7 have not all had a success")
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
		if err := poll(ctx, time.Minute, func() (bool, error) {
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
	topic := cfg.EventsTopic(shoppingcart.PersistenceID)
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
	slices.Sort(got)
	if !slices.Equal(got, users) {
		t.Fatalf("journal holds %v, want one record each for %v", got, users)
	}
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

func TestMergeReports(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, r *bench.Report) string {
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
	a := write("a.json", &bench.Report{Machine: bench.Machine{CPUs: 2}, Args: []string{"bench", "--mode=bare,es"}, Results: []bench.Result{
		{Mode: "bare", Broker: "embedded", Concurrency: 64, PerSecond: 1000},
		{Mode: "es", Broker: "embedded", Concurrency: 64, PerSecond: 800},
	}})
	b := write("b.json", &bench.Report{Machine: bench.Machine{CPUs: 8}, Args: []string{"bench", "--mode=failover"},
		Failover: []bench.FailoverResult{{Broker: "k:1", SessionTimeout: 3 * time.Second, Samples: []time.Duration{time.Second}, P99: time.Second}}})
	m, err := mergeReports([]string{a, b})
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
	if _, err := mergeReports([]string{filepath.Join(dir, "missing.json")}); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
