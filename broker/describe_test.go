package broker

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/broker/kafkatest"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// TestDescribeHelpers: ReadKey finds an entity's records in its partition, CountRecords counts
// records where end offsets also count transaction markers, ReadOwners keeps the latest record of
// each partition, ReadClaims names the app of each persistence id, and DescribeGroup lists the
// members with their partitions.
func TestDescribeHelpers(t *testing.T) {
	cfg := testConfig(t, target{name: "kfake", brokers: kafkatest.Kfake(t)})
	ctx := ctxFor(t, time.Minute)
	ensure(t, cfg, cfg.AppTopics(map[string]EntityKind{"cart": EventSourced}))
	if err := ClaimPersistenceIDs(ctx, cfg, []string{"cart"}); err != nil {
		t.Fatal(err)
	}
	events := cfg.EventsTopic("cart")
	pa, pb := Partition([]byte("ann"), cfg.Partitions), Partition([]byte("bob"), cfg.Partitions)

	// Two transactions on ann's partition: two records of ann, one of bob when they share it.
	tp := acquire(t, cfg, pa, "n1")
	ownerVal := func(node string, epoch int32) []byte {
		b, _ := proto.Marshal(&kstatev1.OwnerRecord{Partition: pa, NodeId: node, Address: node + ":9001", ProducerEpoch: epoch})
		return b
	}
	if _, err := tp.Commit(ctx, []Record{
		{Topic: events, Partition: pa, Key: []byte("ann"), Value: []byte("e1")},
		{Topic: cfg.OwnersTopic(), Partition: 0, Key: []byte("p"), Value: ownerVal("n1", 1)},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Commit(ctx, []Record{
		{Topic: events, Partition: pa, Key: []byte("ann"), Value: []byte("e2")},
		{Topic: cfg.OwnersTopic(), Partition: 0, Key: []byte("p"), Value: ownerVal("n2", 2)},
	}); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadKey(ctx, cfg, []TopicInfo{{Name: events, Partitions: cfg.Partitions}}, []byte("ann"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || string(recs[0].Value) != "e1" || string(recs[1].Value) != "e2" || recs[0].Partition != pa {
		t.Fatalf("ReadKey(ann) = %v", recs)
	}
	if pb != pa {
		if recs, err := ReadKey(ctx, cfg, []TopicInfo{{Name: events, Partitions: cfg.Partitions}}, []byte("bob")); err != nil || len(recs) != 0 {
			t.Fatalf("ReadKey(bob) = %v, %v", recs, err)
		}
	}

	adm, err := NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	infos, err := adm.ListTopics(ctx, events)
	if err != nil || len(infos) != 1 {
		t.Fatalf("ListTopics: %v, %v", infos, err)
	}
	counts, err := CountRecords(ctx, cfg, infos)
	if err != nil {
		t.Fatal(err)
	}
	if counts[events][pa] != 2 || infos[0].EndOffsets[pa] != 4 {
		t.Fatalf("partition %d: %d records, end offset %d; want 2 records and 4 (two commit markers)", pa, counts[events][pa], infos[0].EndOffsets[pa])
	}

	owners, err := ReadOwners(ctx, cfg)
	if err != nil || owners[pa].GetNodeId() != "n2" || owners[pa].GetProducerEpoch() != 2 {
		t.Fatalf("ReadOwners = %v, %v; want the latest record (n2)", owners, err)
	}
	claims, err := ReadClaims(ctx, cfg)
	if err != nil || claims["cart"] != cfg.App {
		t.Fatalf("ReadClaims = %v, %v", claims, err)
	}

	g, err := JoinGroup(ctx, cfg, "n1", GroupCallbacks{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		gs, err := adm.DescribeGroup(ctx)
		if err == nil && gs.State == "Stable" && len(gs.Members) == 1 && len(gs.Members[0].Partitions) == int(cfg.Partitions) {
			if !strings.HasSuffix(gs.Members[0].ClientID, "-n1") || gs.Group != cfg.GroupID() {
				t.Fatalf("DescribeGroup = %+v", gs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DescribeGroup = %+v, %v; want one stable member with every partition", gs, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a bounded wait
	}
}
