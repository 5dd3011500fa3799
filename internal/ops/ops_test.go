package ops

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

func TestBuildStatusStates(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 12, 8, 1, 2, 3, 0, time.UTC))
	in := StatusInput{
		Namespace: "kstate", App: "shop", Group: "kstate.shop", GroupState: "Stable", ClientIDPrefix: "kstate", Partitions: 5,
		Members: []Member{{ID: "m1", ClientID: "kstate-n1", Partitions: []int32{0, 1, 2}}, {ID: "m2", ClientID: "kstate-n2", Partitions: []int32{3}}},
		Owners: map[int32]*kstatev1.OwnerRecord{
			0: {Partition: 0, NodeId: "n1", Address: "10.0.0.1:9001", ProducerEpoch: 3, AcquiredAt: at},
			1: {Partition: 1, NodeId: "n2", Address: "10.0.0.2:9001"}, // the group moved it to n1
			2: {Partition: 2, NodeId: "n1", Address: "10.0.0.1:9001"},
			3: {Partition: 3, NodeId: "n2", Address: "10.0.0.2:9001", Released: true},
			4: {Partition: 4, NodeId: "n3", Address: "10.0.0.3:9001"},
		},
		Topics:   []Topic{{Name: "kstate.cart.events", EndOffsets: []int64{4, 0, 2, 0, 0}}, {Name: "kstate.prof.state", EndOffsets: []int64{1}}},
		Restores: map[int32]Restore{2: {Restoring: true, Done: 5, Total: 20}},
	}
	s := BuildStatus(in)
	want := []string{StateServing, StateMoving, StateRestoring, StateMoving, StateUnassigned}
	for p, w := range want {
		if got := s.Partitions[p].State; got != w {
			t.Errorf("partition %d: %s, want %s", p, got, w)
		}
	}
	if s.Partitions[0].EndOffsets != 5 || s.Partitions[0].Epoch != 3 || s.Partitions[0].AcquiredAt == nil || s.Partitions[2].RestoreTotal != 20 {
		t.Errorf("partition 0 %+v, 2 %+v", s.Partitions[0], s.Partitions[2])
	}
	if len(s.Nodes) != 2 || s.Nodes[0].Node != "n1" || s.Nodes[0].Address != "10.0.0.1:9001" || s.Nodes[1].Address != "10.0.0.2:9001" {
		t.Errorf("nodes %+v", s.Nodes)
	}
	var buf bytes.Buffer
	if err := s.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"2 moving", "1 restoring", "n1    10.0.0.1:9001", "0-2", "5/20 (25%)", "n2 (released)", "2026-12-08T01:02:03Z"} {
		if !strings.Contains(buf.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, buf.String())
		}
	}
}

func TestPartListAndNodeID(t *testing.T) {
	if got := partList([]int32{7, 0, 1, 2, 5, 8}); got != "0-2 5 7-8" {
		t.Errorf("partList = %q", got)
	}
	if NodeID("kstate-n-1", "kstate") != "n-1" || NodeID("other", "kstate") != "other" {
		t.Error("NodeID")
	}
}

func rec(topic string, off int64, value []byte, headers ...string) Record {
	hs := map[string]string{}
	for i := 0; i+1 < len(headers); i += 2 {
		hs[headers[i]] = headers[i+1]
	}
	return Record{Topic: topic, Offset: off, Key: []byte("e1"), Value: value, Headers: hs, Partition: 1}
}

func TestBuildEntity(t *testing.T) {
	sv := func(s string) []byte { b, _ := proto.Marshal(wrapperspb.String(s)); return b }
	const str = "type.googleapis.com/google.protobuf.StringValue"
	snap, _ := proto.Marshal(&kstatev1.SnapshotRecord{Sequence: 2, Snapshot: &anypb.Any{TypeUrl: str, Value: sv("snap")}})
	now := time.Now()
	idem := func(key string, expires time.Time) Record {
		b, _ := proto.Marshal(&kstatev1.IdempotencyRecord{PersistenceId: "cart", Key: key, ExpiresAt: timestamppb.New(expires)})
		return Record{Topic: "ns.app.idempotency", Value: b}
	}
	in := EntityInput{
		Service: "shop.Cart", EntityID: "e1", Namespace: "ns",
		Records: []Record{
			rec("ns.cart.events", 0, sv("a"), kstatev1.HeaderSequence, "1", kstatev1.HeaderType, str, kstatev1.HeaderEntityType, "shop.Cart"),
			rec("ns.cart.events", 2, []byte{1, 2}, kstatev1.HeaderSequence, "2", kstatev1.HeaderType, "type.googleapis.com/shop.Unknown", kstatev1.HeaderEntityType, "shop.Cart"),
			rec("ns.cart.snapshots", 1, snap),
			rec("ns.other.events", 0, sv("x"), kstatev1.HeaderEntityType, "shop.Other"),
		},
		Idempotency: []Record{idem("k1", now.Add(time.Hour)), idem("k2", now.Add(-time.Hour)), idem("k1", now.Add(2*time.Hour))},
		Now:         now,
	}
	e, err := BuildEntity(in, protoregistry.GlobalTypes)
	if err != nil {
		t.Fatal(err)
	}
	if e.PersistenceID != "cart" || e.Kind != KindEventSourced || len(e.Events) != 2 || string(e.Events[0].JSON) != `"a"` {
		t.Fatalf("entity %+v", e)
	}
	if ev := e.Events[1]; ev.JSON != nil || !bytes.Equal(ev.Bytes, []byte{1, 2}) || ev.Type != "shop.Unknown" || !strings.Contains(ev.Error, "no descriptor") {
		t.Errorf("undecodable event %+v", ev)
	}
	if e.Snapshot == nil || e.Snapshot.Seq != 2 || string(e.Snapshot.JSON) != `"snap"` {
		t.Errorf("snapshot %+v", e.Snapshot)
	}
	if e.Idempotency != (Idempotency{Remembered: 1, Expired: 1}) {
		t.Errorf("idempotency %+v", e.Idempotency)
	}
	var buf bytes.Buffer
	if err := e.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `bytes "AQI="`) || !strings.Contains(buf.String(), "snapshot at seq 2") {
		t.Errorf("text:\n%s", buf.String())
	}

	// The simple name finds the same; a service under two persistence ids must be chosen.
	in.Service = "Cart"
	if e, err := BuildEntity(in, protoregistry.GlobalTypes); err != nil || e.PersistenceID != "cart" {
		t.Errorf("simple name: %v %v", e.PersistenceID, err)
	}
	in.Service = "shop.Cart"
	in.Records = append(in.Records, rec("ns.cart2.state", 0, sv("v"), kstatev1.HeaderType, str, kstatev1.HeaderEntityType, "shop.Cart"))
	if _, err := BuildEntity(in, protoregistry.GlobalTypes); err == nil || !strings.Contains(err.Error(), "cart, cart2") {
		t.Errorf("two persistence ids: %v", err)
	}
	in.PersistenceID = "cart2"
	e, err = BuildEntity(in, protoregistry.GlobalTypes)
	if err != nil || e.Kind != KindValue || e.State == nil || e.State.Message == nil || string(e.State.JSON) != `"v"` {
		t.Errorf("value entity: %+v, %v", e.State, err)
	}
	in.PersistenceID, in.Service = "", "shop.None"
	if _, err := BuildEntity(in, protoregistry.GlobalTypes); err == nil || !strings.Contains(err.Error(), "no records") {
		t.Errorf("unknown service: %v", err)
	}
}

func TestScrapeRestores(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE kstate_partition_restoring gauge\nkstate_partition_restoring{partition=\"0\"} 0\nkstate_partition_restoring{partition=\"1\"} 1\n"+
			"# TYPE kstate_partition_restore_progress_records gauge\nkstate_partition_restore_progress_records{partition=\"1\"} 30\n"+
			"# TYPE kstate_partition_restore_target_records gauge\nkstate_partition_restore_target_records{partition=\"1\"} 120\n")
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	rs, err := ScrapeRestores(context.Background(), srv.Client(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Restoring || !rs[1].Restoring || rs[1].Done != 30 || rs[1].Total != 120 || rs[1].Admin != addr {
		t.Fatalf("restores %+v", rs)
	}
	m := MergeRestores(map[int32]Restore{1: {Admin: "a"}}, rs)
	if !m[1].Restoring {
		t.Errorf("merge keeps the restoring report: %+v", m)
	}
}
