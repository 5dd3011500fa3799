package processor

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/processor/internal/proctest"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
)

// Tests of a node that regains a partition whose Pebble image it kept from an earlier ownership
// (partition.Lineage, owner.checkLineage): the image may be continued from its checkpoints only
// if nothing it cannot see in the log has happened since — compaction removing a delete's
// tombstone, or the topic being deleted and created again.

// logLines keeps what a node logged, so a test can look for a line.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(b))
	return len(b), nil
}

// find returns the first line holding every one of subs, or "".
func (l *logLines) find(subs ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		return line
	}
	return ""
}

// imageNode names a node whose data dir outlives it: started again with the same dir, it finds
// the Pebble image (checkpoints and lineage) it left.
type imageNode struct {
	id      string
	dataDir string
	logs    *logLines
}

func newImageNode(t *testing.T, id string) *imageNode {
	return &imageNode{id: id, dataDir: t.TempDir(), logs: &logLines{}}
}

// runningNode is a started imageNode; stop closes it (idempotent, also run when the test ends).
type runningNode struct {
	n    *Node
	cc   *grpc.ClientConn
	once sync.Once
}

func (r *runningNode) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		_ = r.cc.Close()
		if err := r.n.Close(); err != nil {
			t.Errorf("close node %s: %v", r.n.cfg.NodeID, err)
		}
	})
}

// start runs the node (value-entity test services, 4 partitions, namespace ns and app) and waits
// until it serves every partition. It logs at warn at least (the discard of an image is a
// warning), to the test output and to in.logs.
func (in *imageNode) start(t *testing.T, brokers []string, ns, app, ufAddr string) *runningNode {
	t.Helper()
	lvl := hclog.LevelFromString(os.Getenv("KSTATE_TEST_LOG"))
	if lvl == hclog.NoLevel || lvl > hclog.Warn {
		lvl = hclog.Warn
	}
	cfg := DefaultConfig()
	cfg.NodeID = in.id
	cfg.DataDir = in.dataDir
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.UserFunction = ufAddr
	cfg.Broker.Brokers = brokers
	cfg.Broker.Namespace = ns
	cfg.Broker.App = app
	cfg.Broker.Partitions = 4
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: lvl, Output: io.MultiWriter(proctest.LogWriter(t), in.logs)})
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start node %s: %v", in.id, err)
	}
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		_ = n.Close()
		t.Fatal(err)
	}
	r := &runningNode{n: n, cc: cc}
	t.Cleanup(func() { r.stop(t) })
	waitServing(t, cc)
	return r
}

// valueCall sends one command to a value entity with no open stream, returns the state its init
// carried (nil: none) and answers it with act (nil: no state change). It returns the entity's
// stream, which stays open (no passivation) for valueNext.
func valueCall(t *testing.T, cc *grpc.ClientConn, uf *fakeUF, id string, act *valueentitypb.ValueEntityAction) ([]string, *ufValueStream) {
	t.Helper()
	ch := callValue(cc, id)
	vs := uf.nextValue(t)
	init := expectValueInit(t, vs, id)
	expectValueCommand(t, vs, 1)
	vs.send(valueReply(t, 1, "ok", act))
	if r := wait(t, ch); r.err != nil {
		t.Fatalf("command to %s: %v", id, r.err)
	}
	return stateOf(t, init), vs
}

// valueNext sends command cmd to the entity of an open stream and answers it with act.
func valueNext(t *testing.T, cc *grpc.ClientConn, vs *ufValueStream, id string, cmd int64, act *valueentitypb.ValueEntityAction) {
	t.Helper()
	ch := callValue(cc, id)
	expectValueCommand(t, vs, cmd)
	vs.send(valueReply(t, cmd, "ok", act))
	if r := wait(t, ch); r.err != nil {
		t.Fatalf("command %d to %s: %v", cmd, id, r.err)
	}
}

// stateRecords reads partition p of the state topic from its start, read_committed, and returns
// the records of key id and the end offset.
func stateRecords(t *testing.T, cfg broker.Config, p int32, id string) ([]broker.Record, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	topic := cfg.StateTopic(valuePID)
	var recs []broker.Record
	next, err := broker.ReadToEnd(ctx, cfg, []broker.TopicPartitionFrom{{Topic: topic, Partition: p, From: -1}}, func(r broker.Record) error {
		if string(r.Key) == id {
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read %s/%d: %v", topic, p, err)
	}
	return recs, next[topic]
}

// idIn returns an entity id with the given prefix in partition p of n partitions.
func idIn(prefix string, p, n int32) string {
	for i := 0; ; i++ {
		if id := prefix + strconv.Itoa(i); broker.Partition([]byte(id), n) == p {
			return id
		}
	}
}

// verifyNoLeaks checks, when t ends (after every cleanup registered later: nodes, user function,
// broker), that t left no goroutine behind.
func verifyNoLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, before)
		}
	})
}

// TestValueDeleteSurvivesCompaction: node A keeps the Pebble image of a partition it handed
// over; meanwhile node B deletes value entity v1 and the real broker's log cleaner removes the
// tombstone from the compacted state topic. When A owns the partition again, its image is older
// than delete.retention.ms, so it must re-read the partition from the start: continuing from its
// checkpoint would never see the delete, and v1 would come back (RELIABILITY F7). The broker
// scripts/kafka.sh starts looks for cleaning work every 250 ms (log.cleaner.backoff.ms), so the
// cleaner takes about a second, not minutes; on a broker with the default 15 s it still passes
// within the 90 s bound.
func TestValueDeleteSurvivesCompaction(t *testing.T) {
	if !kafkatest.IsReal() {
		t.Skipf("needs a real Kafka broker for log compaction: run `bash scripts/kafka.sh start` and export %s=127.0.0.1:19092 (TestValueDeleteSurvivesCompactionKfake is the kfake variant)", kafkatest.EnvBrokers)
	}
	verifyNoLeaks(t)
	// Segments roll every 100 ms (once a later record arrives), any dirt makes the log
	// cleanable, and a tombstone goes 500 ms after the cleaner first kept it (KIP-534).
	valueDeleteSurvivesCompaction(t, kafkatest.Real(t), map[string]string{
		"delete.retention.ms":       "500",
		"segment.ms":                "100",
		"min.cleanable.dirty.ratio": "0.01",
		"min.compaction.lag.ms":     "0",
	})
}

// TestValueDeleteSurvivesCompactionKfake is the same story on kfake, whose cleaner (every 250
// ms here) removes tombstones older than delete.retention.ms: it runs without a real broker.
func TestValueDeleteSurvivesCompactionKfake(t *testing.T) {
	verifyNoLeaks(t)
	valueDeleteSurvivesCompaction(t, kafkatest.KfakeCompacting(t, 250*time.Millisecond), map[string]string{
		"delete.retention.ms": "500",
	})
}

func valueDeleteSurvivesCompaction(t *testing.T, brokers []string, compaction map[string]string) {
	uf := startFakeUF(t, valueEntities(0)...)
	ns := kafkatest.Unique(t, "vdc") // the state topic <ns>.value-test.state is this test's alone
	app := "app"
	a, b := newImageNode(t, "node-a"), newImageNode(t, "node-b")

	// 1. A owns every partition and sets v1; its image keeps v1 and a checkpoint after it.
	ra := a.start(t, brokers, ns, app, uf.addr)
	bcfg := ra.n.cfg.Broker
	const parts = 4
	p := broker.Partition([]byte("v1"), parts)
	stateTopic := bcfg.StateTopic(valuePID)
	if st, _ := valueCall(t, ra.cc, uf, "v1", update(t, "from-a")); st != nil {
		t.Fatalf("new entity v1 init carried %v", st)
	}
	offs, err := ra.n.store.Offsets(p)
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := offs[stateTopic]
	ra.stop(t)
	t.Logf("A stopped; its image of %s/%d continues at offset %d", stateTopic, p, checkpoint)

	// 2. The state topic compacts within seconds; B deletes v1.
	kafkatest.AlterTopicConfigs(t, brokers, stateTopic, compaction)
	rb := b.start(t, brokers, ns, app, uf.addr)
	if st, _ := valueCall(t, rb.cc, uf, "v1", deleteState()); len(st) != 1 || st[0] != "from-a" {
		t.Fatalf("B restored v1 as %v, want [from-a]", st)
	}
	// The delete is a tombstone on the state topic (polled: a committed transaction's markers
	// may reach read_committed readers a moment after EndTxn; on kfake the cleaner may already
	// have removed A's update, never the tombstone that young).
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, _ := stateRecords(t, bcfg, p, "v1")
		if n := len(recs); n > 0 && recs[n-1].Value == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no tombstone of v1 on %s/%d: %v", stateTopic, p, recs)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a bounded wait
	}

	// 3. B keeps writing another entity of the same partition, which rolls segments and keeps the
	// log dirty, until the cleaner has removed every record of v1, its tombstone included.
	filler := idIn("filler-", p, parts)
	_, fs := valueCall(t, rb.cc, uf, filler, update(t, "f1"))
	writes := 1
	compactStart := time.Now()
	deadline = compactStart.Add(90 * time.Second)
	for {
		time.Sleep(150 * time.Millisecond) // poll interval of a bounded wait; > segment.ms
		writes++
		valueNext(t, rb.cc, fs, filler, int64(writes), update(t, "f"+strconv.Itoa(writes)))
		recs, end := stateRecords(t, bcfg, p, "v1")
		if len(recs) == 0 {
			t.Logf("the log cleaner removed v1's tombstone after %v (%d writes of %s; end offset %d)",
				time.Since(compactStart).Round(time.Millisecond), writes, filler, end)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v1's tombstone still on %s/%d after 90 s (%d records of v1); is log.cleaner.backoff.ms low on the broker (scripts/kafka/server.properties.template)?",
				stateTopic, p, len(recs))
		}
	}
	lastFiller := "f" + strconv.Itoa(writes)
	rb.stop(t)

	// 4. A owns the partition again with its old image. The image is older than the state
	// topic's delete.retention.ms: A must discard it and restore from the start, where v1 has
	// no record at all, so v1's init carries no state.
	ra = a.start(t, brokers, ns, app, uf.addr)
	if st, _ := valueCall(t, ra.cc, uf, "v1", nil); st != nil {
		t.Fatalf("deleted entity v1 came back on A as %v: A continued its stale image from offset %d and missed the compacted delete", st, checkpoint)
	}
	if line := a.logs.find("discarding the partition's stored image", fmt.Sprintf("partition=%d ", p), "delete.retention.ms"); line == "" {
		t.Errorf("A did not log that it discarded its image of partition %d", p)
	}
	// A follows the log: it serves what B wrote after A left.
	if st, _ := valueCall(t, ra.cc, uf, filler, nil); len(st) != 1 || st[0] != lastFiller {
		t.Fatalf("A restored %s as %v, want [%s]", filler, st, lastFiller)
	}
	ra.stop(t)
	uf.noMoreInteractions(t)
}

// TestValueStateTopicRecreated: node A keeps the Pebble image of a partition; meanwhile the
// state topic is deleted and created again, and node B writes a different value of v1 to the new
// topic, far enough that A's old checkpoint lies inside the new log. When A owns the partition
// again, the topic id differs from the one its image was read from: A must discard the image and
// read the new topic from the start, not apply new offsets to its old image (which would serve
// A's old value). Runs on kfake, or on the real broker when KSTATE_KAFKA_BROKERS is set.
func TestValueStateTopicRecreated(t *testing.T) {
	verifyNoLeaks(t)
	brokers := kafkatest.Cluster(t)
	uf := startFakeUF(t, valueEntities(0)...)
	ns := kafkatest.Unique(t, "vrc")
	app := "app"
	a, b := newImageNode(t, "node-a"), newImageNode(t, "node-b")

	ra := a.start(t, brokers, ns, app, uf.addr)
	bcfg := ra.n.cfg.Broker
	const parts = 4
	p := broker.Partition([]byte("v1"), parts)
	stateTopic := bcfg.StateTopic(valuePID)
	valueCall(t, ra.cc, uf, "v1", update(t, "old-topic"))
	offs, err := ra.n.store.Offsets(p)
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := offs[stateTopic]
	ra.stop(t)

	kafkatest.DeleteTopics(t, brokers, stateTopic)
	rb := b.start(t, brokers, ns, app, uf.addr) // creates the state topic again
	if st, _ := valueCall(t, rb.cc, uf, "v1", update(t, "new-topic")); st != nil {
		t.Fatalf("v1 on the new topic carried %v", st)
	}
	// More records in the partition until the new log reaches past A's checkpoint: a checkpoint
	// beyond the end would be caught anyway (offset out of range), one inside it only by the
	// topic id.
	filler := idIn("filler-", p, parts)
	_, fs := valueCall(t, rb.cc, uf, filler, update(t, "f1"))
	writes := 1
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, end := stateRecords(t, bcfg, p, "v1"); end > checkpoint {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new %s/%d did not reach offset %d", stateTopic, p, checkpoint)
		}
		writes++
		valueNext(t, rb.cc, fs, filler, int64(writes), update(t, "f"+strconv.Itoa(writes)))
	}
	rb.stop(t)

	ra = a.start(t, brokers, ns, app, uf.addr)
	if st, _ := valueCall(t, ra.cc, uf, "v1", nil); len(st) != 1 || st[0] != "new-topic" {
		t.Fatalf("A serves v1 as %v, want [new-topic]: it continued its image of the deleted topic from offset %d", st, checkpoint)
	}
	if line := a.logs.find("discarding the partition's stored image", fmt.Sprintf("partition=%d ", p), "deleted and created again"); line == "" {
		t.Errorf("A did not log that it discarded its image of partition %d", p)
	}
	ra.stop(t)
	uf.noMoreInteractions(t)
}
