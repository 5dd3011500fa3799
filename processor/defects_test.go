package processor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// These tests reproduce, end to end on the embedded broker, the defects of the review behind the
// partition core: each one wedged a partition, resurrected state or answered wrong before.

// serveOne answers the next command on fs with reply and events, and checks the call's outcome.
func serveOne(t *testing.T, fs *fakeStream, id int64, events []*anypb.Any) {
	t.Helper()
	expectCommand(t, fs, id, "Process")
	fs.send(replyOut(id, &testpb.Response{Message: "ok"}, events, nil))
}

// A Forward with an empty, mismatched or foreign entity id is refused before it reaches a
// partition: before the fix `entity_id: ""` reached the journal and killed the partition.
func TestForwardIsValidatedLikeTheIngress(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	entities := append(esEntities(0), &cloudstatepb.Entity{EntityType: "cloudstate.action.ActionProtocol", ServiceName: actionService})
	uf := startFakeUF(t, entities...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "fwd"), uf.addr)
	// The public port does not serve node-to-node forwarding at all.
	if _, err := kstatev1.NewNodeClient(cc).Forward(context.Background(), &kstatev1.ForwardRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("Forward on the public port: %v, want UNIMPLEMENTED", err)
	}
	pc, err := grpc.NewClient(n.PeerAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	node := kstatev1.NewNodeClient(pc)
	payload, _ := proto.Marshal(&testpb.Request{Id: "cart-1", Payload: "x"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		req  *kstatev1.ForwardRequest
		want codes.Code
	}{
		{"empty entity id", &kstatev1.ForwardRequest{Service: esService, Method: "Process", EntityId: "", Payload: payload}, codes.InvalidArgument},
		{"id not the payload's key", &kstatev1.ForwardRequest{Service: esService, Method: "Process", EntityId: "cart-2", Payload: payload}, codes.InvalidArgument},
		{"empty key in the payload", &kstatev1.ForwardRequest{Service: esService, Method: "Process", EntityId: "", Payload: nil}, codes.InvalidArgument},
		{"wrong partition", &kstatev1.ForwardRequest{Service: esService, Method: "Process", EntityId: "cart-1", Payload: payload,
			Partition: (broker.Partition([]byte("cart-1"), n.cfg.Broker.Partitions) + 1) % n.cfg.Broker.Partitions}, codes.InvalidArgument},
		{"an action method", &kstatev1.ForwardRequest{Service: actionService, Method: "Unary", Payload: payload}, codes.InvalidArgument},
		{"unknown method", &kstatev1.ForwardRequest{Service: esService, Method: "Nope", Payload: payload}, codes.Unimplemented},
	} {
		_, err := node.Forward(ctx, tc.req)
		if status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// The partition serves on, and a well-formed Forward works.
	req := &kstatev1.ForwardRequest{Service: esService, Method: "Process", EntityId: "cart-1", Payload: payload,
		Partition: broker.Partition([]byte("cart-1"), n.cfg.Broker.Partitions)}
	done := make(chan error, 1)
	go func() {
		_, err := node.Forward(ctx, req)
		done <- err
	}()
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-1")
	serveOne(t, fs, 1, []*anypb.Any{event(t, "e1")})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	uf.noMoreInteractions(t)
}

// An event whose type URL is empty would be rejected by restore: it fails its own command
// (INTERNAL, a user-function protocol error), never enters the journal, and the partition and the
// entity (reopened from durable state) serve on.
func TestInvalidEventFailsOnlyItsCommand(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	n, cc := testNode(t, brokers, kafkatest.Unique(t, "bad"), uf.addr)

	ch := call(cc, "cart-bad", "1")
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-bad")
	serveOne(t, fs, 1, []*anypb.Any{event(t, "good")})
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	ch = call(cc, "cart-bad", "2")
	expectCommand(t, fs, 2, "Process")
	fs.send(replyOut(2, &testpb.Response{Message: "ok"}, []*anypb.Any{{TypeUrl: "", Value: []byte("x")}}, nil))
	r := wait(t, ch)
	if st := status.Convert(r.err); st.Code() != codes.Internal || !strings.Contains(st.Message(), "protocol error") {
		t.Fatalf("empty type URL: got %v, want INTERNAL protocol error", r.err)
	}
	fs.waitClosed(t, 5*time.Second) // the entity restarts from durable state

	// Another entity of the same partition, and the same entity again, serve on.
	ch = call(cc, "cart-bad", "3")
	fs2 := uf.next(t)
	expectInit(t, fs2, esService, "cart-bad")
	if ev := fs2.recv(t).GetEvent(); ev == nil || ev.GetSequence() != 1 {
		t.Fatalf("replay: %v", ev)
	}
	serveOne(t, fs2, 1, []*anypb.Any{event(t, "after")})
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	var seqs []int64
	for _, rec := range journal(t, n, testPID) {
		if string(rec.Key) == "cart-bad" {
			seqs = append(seqs, seqOf(t, rec))
		}
	}
	if len(seqs) > 2 || (len(seqs) > 0 && seqs[0] != 1) {
		t.Fatalf("journal of cart-bad has sequences %v, want 1, 2", seqs)
	}
	uf.noMoreInteractions(t)
}

// A 1.5 MB event can never be committed (records are capped near 1 MB): it fails its own command
// with INVALID_ARGUMENT, not the whole batch with a retryable UNAVAILABLE.
func TestOversizeEventFailsOnlyItsCommand(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	_, cc := testNode(t, brokers, kafkatest.Unique(t, "big"), uf.addr)

	chBig := call(cc, "big", "1")
	fsBig := uf.next(t)
	expectInit(t, fsBig, esService, "big")
	chSmall := call(cc, "small", "1")
	fsSmall := uf.next(t)
	expectInit(t, fsSmall, esService, "small")
	expectCommand(t, fsBig, 1, "Process")
	huge := anyOf(t, &testpb.Event{Payload: strings.Repeat("x", 1_500_000)})
	fsBig.send(replyOut(1, &testpb.Response{Message: "big"}, []*anypb.Any{huge}, nil))
	serveOne(t, fsSmall, 1, []*anypb.Any{event(t, "small")})
	if r := wait(t, chBig); status.Code(r.err) != codes.InvalidArgument || !strings.Contains(status.Convert(r.err).Message(), "too large") {
		t.Fatalf("oversize event: got %v, want INVALID_ARGUMENT record too large", r.err)
	}
	if r := wait(t, chSmall); r.err != nil {
		t.Fatalf("the other entity's command failed: %v", r.err)
	}
	fsBig.waitClosed(t, 5*time.Second)
	uf.noMoreInteractions(t)
}

// Two event-sourced services sharing one persistence id would write sequence 1 twice into one
// journal key: discovery refuses the spec, tells the user function, and the node does not start.
func TestDuplicatePersistenceIDIsRefused(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t,
		&cloudstatepb.Entity{EntityType: esEntity, ServiceName: esService, PersistenceId: "shared"},
		&cloudstatepb.Entity{EntityType: esEntity, ServiceName: esTwo, PersistenceId: "shared"})
	_, err := startNode(t, testConfig(t, brokers, kafkatest.Unique(t, "dup"), uf.addr))
	if !errors.Is(err, catalog.ErrInvalidSpec) || !strings.Contains(err.Error(), `persistence_id "shared" is already used`) {
		t.Fatalf("Start: %v, want a spec error naming the shared persistence id", err)
	}
	select {
	case msg := <-uf.errors:
		if !strings.Contains(msg, "shared") {
			t.Fatalf("reportError: %q", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the user function was not told (reportError)")
	}
}

// When the user function ends an idle entity's stream (it restarted), the next command reopens the
// stream from durable state and runs: no call fails.
func TestBrokenIdleStreamIsReopened(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	_, cc := testNode(t, brokers, kafkatest.Unique(t, "reopen"), uf.addr)

	ch := call(cc, "cart-r", "1")
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-r")
	serveOne(t, fs, 1, []*anypb.Any{event(t, "e1")})
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	close(fs.end) // the user function goes away while the entity is idle
	fs.waitClosed(t, 5*time.Second)

	ch = call(cc, "cart-r", "2")
	// The command may have been sent on the broken stream before the break was seen; either way
	// it is run on a fresh stream with the persisted events replayed.
	fs2 := uf.next(t)
	expectInit(t, fs2, esService, "cart-r")
	if ev := fs2.recv(t).GetEvent(); ev == nil || ev.GetSequence() != 1 {
		t.Fatalf("replay: %v", ev)
	}
	serveOne(t, fs2, 1, nil)
	if r := wait(t, ch); r.err != nil {
		t.Fatalf("the first call after the user function's restart failed: %v", r.err)
	}
	uf.noMoreInteractions(t)
}

// After a failure with restart=true the entity is reopened at once, with init and replay, before
// any further command (Cloudstate's proxy does so and its TCK expects it).
func TestRestartFailureReopensAtOnce(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	_, cc := testNode(t, brokers, kafkatest.Unique(t, "restart"), uf.addr)

	ch := call(cc, "cart-x", "1")
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-x")
	expectCommand(t, fs, 1, "Process")
	fs.send(&eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{Reply: &eventsourcedpb.EventSourcedReply{
		CommandId:    1,
		ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{CommandId: 1, Description: "again", Restart: true}}},
	}}})
	if r := wait(t, ch); status.Code(r.err) != codes.Unknown {
		t.Fatalf("got %v", r.err)
	}
	fs.waitClosed(t, 5*time.Second)
	fs2 := uf.next(t) // reopened without a new command
	expectInit(t, fs2, esService, "cart-x")
	uf.noMoreInteractions(t)
}

// The fence is the app's (transactional ids <ns>.<app>.p<N>) while journals are the namespace's
// (<ns>.<persistence id>.*): a second app — or a mistyped --app — writing the same journal would
// not be fenced. It is refused at start.
func TestSecondAppCannotWriteAnotherAppsJournal(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	app := kafkatest.Unique(t, "owner")
	testNode(t, brokers, app, uf.addr)

	_, err := startNode(t, testConfig(t, brokers, app+"-typo", uf.addr))
	var ce *broker.ClaimError
	if !errors.As(err, &ce) || ce.App != app || !strings.Contains(err.Error(), "--app "+app) {
		t.Fatalf("Start of a second app: %v, want a ClaimError naming app %s", err, app)
	}
}

// A bad record already in Kafka (another producer's, an older version's) used to wedge its
// partition on every node, forever: restore rejected it, the partition was given up and acquired
// again, and the restore hit it again. It is quarantined now: skipped, logged, counted and copied
// to the dead-letter topic with the reason, and the partition serves.
func TestBadRecordInKafkaIsQuarantined(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	app := kafkatest.Unique(t, "dlq")
	first, _ := testNode(t, brokers, app, uf.addr) // creates the topics
	bc := first.cfg.Broker
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	p := broker.Partition([]byte("cart-q"), bc.Partitions)
	prod, err := broker.NewTxnProducer(bc, p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := prod.Acquire(ctx, broker.Record{Topic: bc.OwnersTopic(), Partition: 0, Key: []byte("x"), Value: []byte("not an owner record")}); err != nil {
		t.Fatal(err)
	}
	typ := broker.Header{Key: kstatev1.HeaderType, Value: []byte("type.googleapis.com/kstate.test.v1.Event")}
	seq1 := broker.Header{Key: kstatev1.HeaderSequence, Value: []byte("1")}
	ev0, _ := proto.Marshal(&testpb.Event{Payload: "e0"})
	bad := broker.Record{Topic: bc.EventsTopic(testPID), Partition: p, Key: []byte("cart-q"), Value: []byte("x"),
		Headers: []broker.Header{typ}} // no sequence header
	good := broker.Record{Topic: bc.EventsTopic(testPID), Partition: p, Key: []byte("cart-q"), Value: ev0,
		Headers: []broker.Header{seq1, typ}}
	dup := good // a second writer's sequence 1: a duplicate
	if _, err := prod.Commit(ctx, []broker.Record{bad, good, dup}); err != nil {
		t.Fatal(err)
	}
	prod.Close()

	n, cc := testNode(t, brokers, app, uf.addr) // a fresh data dir: restores p from Kafka
	if got := n.quarantined.Load(); got != 2 {
		t.Fatalf("quarantined %d records, want 2", got)
	}
	checkQuarantineMetrics(t, n, p, 4) // the three records and their transaction's marker
	ch := call(cc, "cart-q", "1")
	fs := uf.next(t)
	expectInit(t, fs, esService, "cart-q")
	if ev := fs.recv(t).GetEvent(); ev == nil || ev.GetSequence() != 1 { // only the good event replays
		t.Fatalf("replay: %v", ev)
	}
	serveOne(t, fs, 1, []*anypb.Any{event(t, "e1")})
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	var dead []broker.Record
	if _, err := broker.ReadToEnd(ctx, bc, []broker.TopicPartitionFrom{{Topic: bc.DeadLettersTopic(), Partition: p}}, func(r broker.Record) error {
		dead = append(dead, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 || string(dead[0].Key) != "cart-q" || string(dead[1].Key) != "cart-q" {
		t.Fatalf("dead letters %v, want the two bad records", dead)
	}
	for i, want := range []string{"kstate-seq", "duplicate"} {
		reason, _ := dead[i].HeaderValue(kstatev1.HeaderDeadLetterReason)
		origin, _ := dead[i].HeaderValue(kstatev1.HeaderDeadLetterTopic)
		if !strings.Contains(string(reason), want) || string(origin) != bc.EventsTopic(testPID) {
			t.Fatalf("dead letter %d: reason %q origin %q, want %q", i, reason, origin, want)
		}
	}
	uf.noMoreInteractions(t)
}
