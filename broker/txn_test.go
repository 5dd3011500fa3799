package broker

// Transaction outcomes that need injected faults, so kfake only (a real broker cannot be told to
// lose an EndTxn answer).

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kstatehq/kstate/broker/kafkatest"
)

// TestTxnIndefiniteNotApplied: the coordinator answers EndTxn with UNKNOWN_SERVER_ERROR. The
// outcome is unknown to us, so Commit reports ErrIndefinite and refuses further commits until
// Acquire, which fences our own old epoch; here the transaction had not committed, and the
// re-acquire aborts it.
func TestTxnIndefiniteNotApplied(t *testing.T) {
	c := newKfake(t)
	cfg := testConfig(t, target{brokers: c.ListenAddrs()})
	ctx := ctxFor(t, time.Minute)
	ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
	events := cfg.EventsTopic("cart")
	tp := acquire(t, cfg, 0, "node")
	if _, err := tp.Commit(ctx, []Record{rec(events, 0, "k", "c1")}); err != nil {
		t.Fatal(err)
	}
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, TxnID: cfg.TransactionalID(0), TopLevel: true, Err: kerr.UnknownServerError})
	_, err := tp.Commit(ctx, []Record{rec(events, 0, "k", "unknown")})
	if !errors.Is(err, ErrIndefinite) || !errors.Is(err, kerr.UnknownServerError) {
		t.Fatalf("want ErrIndefinite wrapping UNKNOWN_SERVER_ERROR, got %v", err)
	}
	if _, err := tp.Commit(ctx, []Record{rec(events, 0, "k", "after")}); !errors.Is(err, ErrIndefinite) {
		t.Fatalf("commit after an indefinite outcome must refuse until Acquire, got %v", err)
	}
	if err := tp.Acquire(ctx, owner(cfg, 0, "node")); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Commit(ctx, []Record{rec(events, 0, "k", "c2")}); err != nil {
		t.Fatal(err)
	}
	got, _ := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 0})
	if !slices.Equal(values(got), []string{"c1", "c2"}) {
		t.Fatalf("log %v, want [c1 c2]", values(got))
	}
}

// TestTxnIndefiniteApplied: EndTxn(commit) is delayed past the caller's deadline and then
// applied (RELIABILITY.md F3, T7). Commit reports ErrIndefinite, yet the records do become
// visible: that is why the caller must reload rather than assume either outcome.
func TestTxnIndefiniteApplied(t *testing.T) {
	c := newKfake(t)
	cfg := testConfig(t, target{brokers: c.ListenAddrs()})
	ctx := ctxFor(t, time.Minute)
	ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
	events := cfg.EventsTopic("cart")
	tp := acquire(t, cfg, 0, "node")
	if _, err := tp.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	c.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.SleepControl(func() { <-release })
		return nil, nil, false // then handle it normally
	})
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := tp.Commit(short, []Record{rec(events, 0, "k", "late-commit")})
	cancel()
	if !errors.Is(err, ErrIndefinite) {
		t.Fatalf("want ErrIndefinite, got %v", err)
	}
	close(release)
	for {
		got, _ := mustRead(t, cfg, TopicPartitionFrom{Topic: events, Partition: 0})
		if slices.Equal(values(got), []string{"late-commit"}) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the delayed commit never became visible: %v", values(got))
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Re-acquiring works from the bumped epoch on.
	if err := tp.Acquire(ctx, owner(cfg, 0, "node")); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Commit(ctx, []Record{rec(events, 0, "k", "next")}); err != nil {
		t.Fatal(err)
	}
}

// TestTxnCancelledContext: a Commit whose context is already done has an unknown outcome.
func TestTxnCancelledContext(t *testing.T) {
	cfg := testConfig(t, target{brokers: kafkatest.Kfake(t)})
	ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
	tp := acquire(t, cfg, 0, "node")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := tp.Commit(ctx, []Record{rec(cfg.EventsTopic("cart"), 0, "k", "v")})
	if !errors.Is(err, ErrIndefinite) || !errors.Is(err, context.Canceled) {
		t.Fatalf("want ErrIndefinite wrapping context.Canceled, got %v", err)
	}
}

// TestTxnNotAcquired: Commit before Acquire is refused.
func TestTxnNotAcquired(t *testing.T) {
	tp, err := NewTxnProducer(Config{Brokers: []string{"127.0.0.1:1"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.Commit(context.Background(), nil); !errors.Is(err, ErrNotAcquired) {
		t.Fatalf("got %v", err)
	}
	if id, epoch := tp.Epoch(); id != -1 || epoch != -1 {
		t.Fatalf("Epoch before Acquire: %d %d", id, epoch)
	}
}

// TestTxnUnauthorized: a principal without Write on the transactional id cannot acquire; the
// error is ErrFenced (the partition cannot be owned) and names the authorization failure.
func TestTxnUnauthorized(t *testing.T) {
	allow := func(res kmsg.ACLResourceType, name string, pat kmsg.ACLResourcePatternType, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: pat, Operation: op, Allow: true}
	}
	brokers := kafkatest.Kfake(t, kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin"),
		kfake.User("PLAIN", "app", "app",
			allow(kmsg.ACLResourceTypeTopic, "kst", kmsg.ACLResourcePatternTypePrefixed, kmsg.ACLOperationAll),
			allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLResourcePatternTypeLiteral, kmsg.ACLOperationIdempotentWrite)))
	cfg := testConfig(t, target{brokers: brokers})
	cfg.SASL = SASLConfig{Mechanism: SASLPlain, Username: "admin", Password: "admin"}
	ensure(t, cfg, cfg.AppTopics(nil))
	cfg.SASL = SASLConfig{Mechanism: SASLPlain, Username: "app", Password: "app"}
	tp, err := NewTxnProducer(cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	err = tp.Acquire(ctxFor(t, 30*time.Second), owner(cfg, 0, "node"))
	if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "TRANSACTIONAL_ID_AUTHORIZATION_FAILED") {
		t.Fatalf("want ErrFenced naming TRANSACTIONAL_ID_AUTHORIZATION_FAILED, got %v", err)
	}
}
