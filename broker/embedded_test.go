package broker

import (
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestEmbeddedRestart: topics and committed records survive a restart of the embedded broker on
// the same data dir and address; aborted records stay invisible.
func TestEmbeddedRestart(t *testing.T) {
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	start := func() *Embedded {
		t.Helper()
		e, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Addr: addr, Sync: true, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Addrs(); !slices.Equal(got, []string{addr}) {
			t.Fatalf("Addrs() = %v, want [%s]", got, addr)
		}
		return e
	}
	e := start()
	cfg := testConfig(t, target{brokers: e.Addrs()})
	ctx := ctxFor(t, time.Minute)
	specs := cfg.AppTopics(map[string]EntityKind{"cart": EventSourced})
	ensure(t, cfg, specs)
	events := cfg.EventsTopic("cart")
	tp, err := NewTxnProducer(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Acquire(ctx, owner(cfg, 1, "dev")); err != nil {
		t.Fatal(err)
	}
	committed, err := tp.Commit(ctx, []Record{rec(events, 1, "a", "e1"), rec(events, 1, "b", "e2")})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Acquire(ctx, rec(events, 1, "c", "aborted")); err != nil {
		t.Fatal(err)
	}
	tp.Close() // aborts
	_, before := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 1})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = start()
	defer e.Close()
	// The topics exist with their settings: EnsureTopics finds no mismatch and creates nothing.
	adm, err := NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := adm.EnsureTopics(ctx, specs); err != nil {
		t.Fatal(err)
	}
	infos, err := adm.ListTopics(ctx, cfg.Namespace+".")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(specs) {
		t.Fatalf("after restart: %d topics, want %d: %+v", len(infos), len(specs), infos)
	}
	got, after := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 1})
	if !slices.Equal(values(got), []string{"e1", "e2"}) || got[1].Offset != committed[1].Offset || after[events] != before[events] {
		t.Fatalf("after restart read %v (end %d), want [e1 e2] at the same offsets (end %d)", values(got), after[events], before[events])
	}
	owners, _ := mustRead(t, cfg, TopicPartitionFrom{Topic: cfg.OwnersTopic(), Partition: 0})
	if !slices.Equal(values(owners), []string{"dev"}) {
		t.Fatalf("owners after restart: %v", values(owners))
	}
	// The transactional id survives too: a new producer fences from the persisted epoch on.
	tp2, err := NewTxnProducer(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.Close()
	if err := tp2.Acquire(ctx, owner(cfg, 1, "dev-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := tp2.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedConfigErrors(t *testing.T) {
	if _, err := StartEmbedded(EmbeddedConfig{Addr: "nonsense"}); err == nil {
		t.Fatal("bad address accepted")
	}
	if _, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", Sync: true}); err == nil {
		t.Fatal("Sync without DataDir accepted")
	}
	// Two brokers on one port: the second fails clearly.
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	e, err := StartEmbedded(EmbeddedConfig{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := StartEmbedded(EmbeddedConfig{Addr: addr}); err == nil {
		t.Fatal("second broker on a used port started")
	}
}
