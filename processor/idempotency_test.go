package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/frontdoor"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// callKey runs EventSourcedTest/Process with idempotency key key (none when empty) and the given
// timeout, asynchronously.
func callKey(cc *grpc.ClientConn, id, payload, key string, timeout time.Duration) chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if key != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, kstatev1.IdempotencyKeyHeader, key)
		}
		r, err := testpb.NewEventSourcedTestClient(cc).Process(ctx, &testpb.Request{Id: id, Payload: payload})
		ch <- callResult{r, err}
	}()
	return ch
}

// eventsOf returns the journal's events of entity id.
func eventsOf(t *testing.T, n *Node, id string) int {
	t.Helper()
	c := 0
	for _, r := range journal(t, n, testPID) {
		if string(r.Key) == id {
			c++
		}
	}
	return c
}

func TestRecall(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	hash := []byte("h")
	rec := &kstatev1.IdempotencyRecord{RequestHash: hash, ExpiresAt: timestamppb.New(now.Add(time.Second))}
	for _, tc := range []struct {
		name  string
		ir    *kstatev1.IdempotencyRecord
		found bool
		now   time.Time
		hash  []byte
		want  remembered
	}{
		{"nothing remembered", nil, false, now, hash, runCommand},
		{"remembered", rec, true, now, hash, replayOutcome},
		{"another request", rec, true, now, []byte("other"), keyReused},
		{"expired", rec, true, now.Add(time.Second), hash, runCommand},
		{"expired, another request", rec, true, now.Add(time.Hour), []byte("other"), runCommand},
	} {
		if got := recall(tc.ir, tc.found, tc.now, tc.hash); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestIdempotencyKeyValidation(t *testing.T) {
	md := func(vals ...string) *cloudstatepb.Metadata {
		m := &cloudstatepb.Metadata{}
		for _, v := range vals {
			m.Entries = append(m.Entries, &cloudstatepb.MetadataEntry{Key: kstatev1.IdempotencyKeyHeader, Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: v}})
		}
		return m
	}
	if k, err := idempotencyKey(nil); k != "" || err != nil {
		t.Fatalf("no metadata: %q %v", k, err)
	}
	if k, err := idempotencyKey(md("order-17")); k != "order-17" || err != nil {
		t.Fatalf("a key: %q %v", k, err)
	}
	for name, m := range map[string]*cloudstatepb.Metadata{
		"two keys":  md("a", "b"),
		"empty":     md(""),
		"too long":  md(strings.Repeat("k", maxIdempotencyKeyBytes+1)),
		"control":   md("a\x01b"),
		"non-ascii": md("schlüssel"),
	} {
		if _, err := idempotencyKey(m); status.Code(frontdoor.ToStatus(err)) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if derivedKey("k", "forward") == derivedKey("k", "effect/0") || derivedKey("k", "forward") != forwardKey("k") {
		t.Fatal("derived keys must differ by use and be deterministic")
	}
	if len(forwardKey(strings.Repeat("k", 256))) > 64 {
		t.Fatal("derived keys must not grow with their base")
	}
}

// A retry with the same key gets the first reply without running again, on the same node; the
// same key for another request is refused; a failure is remembered too.
func TestIdempotentRetryGetsTheFirstOutcome(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "idem"), uf.addr)

	ch := callKey(cc, "cart-1", "add", "k1", 20*time.Second)
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-1")
	expectCommand(t, fs, 1, "Process")
	// A retry that arrives while the first attempt runs waits behind it.
	dup := callKey(cc, "cart-1", "add", "k1", 20*time.Second)
	fs.send(replyOut(1, &testpb.Response{Message: "first"}, []*anypb.Any{event(t, "e1")}, nil))
	for _, c := range []chan callResult{ch, dup} {
		if r := wait(t, c); r.err != nil || r.resp.GetMessage() != "first" {
			t.Fatalf("got %v %v, want the first reply", r.resp, r.err)
		}
	}
	// And one after it finished.
	if r := wait(t, callKey(cc, "cart-1", "add", "k1", 20*time.Second)); r.err != nil || r.resp.GetMessage() != "first" {
		t.Fatalf("retry: %v %v", r.resp, r.err)
	}
	uf.noMoreInteractions(t)
	if c := eventsOf(t, n, "cart-1"); c != 1 {
		t.Fatalf("%d events, want 1", c)
	}
	// One remembered outcome, in a few hundred bytes of Pebble (docs/idempotency.md "Cost").
	p := broker.Partition([]byte("cart-1"), n.cfg.Broker.Partitions)
	entries, size, err := n.store.IdempotencyFootprint(p)
	if err != nil || entries != 1 || size <= 0 || size > 512 {
		t.Fatalf("footprint of one remembered outcome: %d entries, %d bytes, %v", entries, size, err)
	}
	t.Logf("one remembered outcome: %d bytes of Pebble keys and values", size)

	// The same key for another request is refused, and nothing runs.
	if r := wait(t, callKey(cc, "cart-1", "other payload", "k1", 20*time.Second)); status.Code(r.err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(r.err).Message(), "another request") {
		t.Fatalf("reused key: %v, want INVALID_ARGUMENT", r.err)
	}
	uf.noMoreInteractions(t)

	// Another key runs; a failure is remembered and replayed.
	ch = callKey(cc, "cart-1", "bad", "k2", 20*time.Second)
	expectCommand(t, fs, 2, "Process")
	fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
		CommandId:    2,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{CommandId: 2, Description: "out of stock"}}},
	}}})
	for i := 0; i < 2; i++ {
		r := wait(t, ch)
		if st := status.Convert(r.err); st.Message() != "out of stock" {
			t.Fatalf("attempt %d: %v, want the failure", i, r.err)
		}
		ch = callKey(cc, "cart-1", "bad", "k2", 20*time.Second)
	}
	wait(t, ch)
	uf.noMoreInteractions(t)

	// Without a key every call runs.
	ch = callKey(cc, "cart-1", "add", "", 20*time.Second)
	expectCommand(t, fs, 3, "Process")
	fs.send(replyOut(3, &testpb.Response{Message: "third"}, []*anypb.Any{event(t, "e2")}, nil))
	if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "third" {
		t.Fatal(r.resp, r.err)
	}
	uf.noMoreInteractions(t)
}

// The remembered outcome is durable in the command's transaction: a node that restores the
// partition from Kafka answers the retry without running it, and the HTTP header works alike.
func TestIdempotencySurvivesRestore(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	app := kafkatest.Unique(t, "idemr")
	n1, _ := testNode(t, brokers, app, uf.addr)

	body := []byte(`{"payload":"add"}`)
	post := func(addr, key string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/test/cart-9", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	done := make(chan string, 1)
	go func() {
		code, b := post(n1.Addr(), "http-key")
		done <- strings.Join([]string{http.StatusText(code), b}, " ")
	}()
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-9")
	expectCommand(t, fs, 1, "Process")
	fs.send(replyOut(1, &testpb.Response{Message: "once"}, []*anypb.Any{event(t, "e1")}, nil))
	if got := <-done; !strings.Contains(got, "OK") || !strings.Contains(got, `"once"`) {
		t.Fatalf("first POST: %s", got)
	}
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	fs.waitClosed(t, 5*time.Second)

	// A new node, with an empty store, restores the partition from Kafka.
	n2, cc2 := testNode(t, brokers, app, uf.addr)
	code, b := post(n2.Addr(), "http-key")
	var reply map[string]any
	if code != http.StatusOK || json.Unmarshal([]byte(b), &reply) != nil || reply["message"] != "once" {
		t.Fatalf("retry after restore: %d %s", code, b)
	}
	// The same key over gRPC names the same remembered outcome (the HTTP body and the gRPC
	// request encode the same message).
	if r := wait(t, callKey(cc2, "cart-9", "add", "http-key", 20*time.Second)); r.err != nil || r.resp.GetMessage() != "once" {
		t.Fatalf("gRPC retry after restore: %v %v", r.resp, r.err)
	}
	uf.noMoreInteractions(t)
	if c := eventsOf(t, n2, "cart-9"); c != 1 {
		t.Fatalf("%d events, want 1", c)
	}
}

// A forward of a keyed command carries a derived key: the retry re-sends the forward, and its
// target answers from its own remembered outcome — neither entity runs twice.
func TestIdempotentForwardIsNotRunTwice(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	_, cc := testNode(t, brokers, kafkatest.Unique(t, "idemf"), uf.addr)

	ch := callKey(cc, "cart-f", "fwd", "fk", 20*time.Second)
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-f")
	expectCommand(t, fs, 1, "Process")
	fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
		CommandId: 1,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: &cloudstatepb.Forward{
			ServiceName: esTwo, CommandName: "Call", Payload: anyOf(t, &testpb.Request{Id: "target", Payload: "p"}),
		}}},
		Events: []*anypb.Any{event(t, "forwarded")},
	}}})
	two := uf.next(t)
	expectInit(t, two, esTwo, "target")
	expectCommand(t, two, 1, "Call")
	two.send(replyOut(1, &testpb.Response{Message: "from two"}, []*anypb.Any{event(t, "target-ev")}, nil))
	if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "from two" {
		t.Fatalf("%v %v", r.resp, r.err)
	}
	if r := wait(t, callKey(cc, "cart-f", "fwd", "fk", 20*time.Second)); r.err != nil || r.resp.GetMessage() != "from two" {
		t.Fatalf("retry: %v %v, want the forward target's first reply", r.resp, r.err)
	}
	uf.noMoreInteractions(t)
}

// Value entities remember keyed outcomes the same way.
func TestIdempotentValueEntity(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, valueEntities(0)...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "idemv"), uf.addr)
	callV := func(key string) chan callResult {
		ch := make(chan callResult, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, kstatev1.IdempotencyKeyHeader, key)
			r, err := testpb.NewValueTestClient(cc).Process(ctx, &testpb.Request{Id: "v-1"})
			ch <- callResult{r, err}
		}()
		return ch
	}
	ch := callV("vk")
	vs := uf.nextValue(t)
	expectValueInit(t, vs, "v-1")
	expectValueCommand(t, vs, 1)
	vs.send(valueReply(t, 1, "set", update(t, "a")))
	if r := wait(t, ch); r.err != nil || r.resp.GetMessage() != "set" {
		t.Fatal(r.resp, r.err)
	}
	if r := wait(t, callV("vk")); r.err != nil || r.resp.GetMessage() != "set" {
		t.Fatalf("retry: %v %v", r.resp, r.err)
	}
	uf.noMoreInteractions(t)
	if recs := stateTopic(t, n, "v-1"); len(recs) != 1 {
		t.Fatalf("%d state records, want 1", len(recs))
	}
}

// A command whose deadline passes while it waits behind another command of its entity never
// runs and never reaches the journal (issue: an expired command still ran).
func TestExpiredCommandIsNeverInTheJournal(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "expired"), uf.addr)

	first := callKey(cc, "cart-x", "slow", "", 20*time.Second)
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-x")
	expectCommand(t, fs, 1, "Process")
	late := callKey(cc, "cart-x", "late", "", 300*time.Millisecond)
	if r := wait(t, late); status.Code(r.err) != codes.DeadlineExceeded {
		t.Fatalf("queued command: %v, want DEADLINE_EXCEEDED", r.err)
	}
	fs.send(replyOut(1, &testpb.Response{Message: "slow"}, []*anypb.Any{event(t, "slow")}, nil))
	if r := wait(t, first); r.err != nil {
		t.Fatal(r.err)
	}
	// The entity takes its next command: the expired one was dropped, not run.
	next := callKey(cc, "cart-x", "next", "", 20*time.Second)
	if c := expectCommand(t, fs, 2, "Process"); !strings.Contains(string(c.GetPayload().GetValue()), "next") {
		t.Fatalf("the entity ran %q after the expired command", c.GetPayload().GetValue())
	}
	fs.send(replyOut(2, &testpb.Response{Message: "next"}, []*anypb.Any{event(t, "next")}, nil))
	wait(t, next)
	for _, r := range journal(t, n, testPID) {
		if strings.Contains(string(r.Value), "late") {
			t.Fatal("the expired command is in the journal")
		}
	}
	if c := eventsOf(t, n, "cart-x"); c != 2 {
		t.Fatalf("%d events, want 2", c)
	}
	uf.noMoreInteractions(t)
}

func TestKeyFilter(t *testing.T) {
	f := &keyFilter{hashes: map[uint64]struct{}{}}
	if f.mayHave("a") {
		t.Fatal("an empty filter has a key")
	}
	f.add("a")
	if !f.mayHave("a") || f.mayHave("b") {
		t.Fatal("the filter must have exactly what was added")
	}
	for i := 0; i <= maxFilterKeys; i++ {
		f.add(strings.Repeat("k", i+2))
	}
	if !f.full || f.hashes != nil || !f.mayHave("never added") {
		t.Fatal("an overflowing filter must give up and say maybe to everything")
	}
}
