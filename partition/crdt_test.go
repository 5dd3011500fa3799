package partition

import "testing"

func TestCrdtReplicas(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ApplyCrdt(2, []CrdtReplica{{PersistenceID: "c", EntityID: "a", State: []byte("sa")}, {PersistenceID: "c", EntityID: "b", State: []byte("sb")}},
		map[string]int64{"kstate.c.crdt": 7}); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyCrdt(5, nil, map[string]int64{"kstate.c.crdt": 3, "kstate.d.crdt": 1}); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.LoadCrdt(2, "c", "a"); err != nil || !ok || string(v) != "sa" {
		t.Fatalf("load a: %q %v %v", v, ok, err)
	}
	// An ordinary image of the partition, then a drop: the replicas and their offsets survive.
	if err := s.Apply(2, []Record{stateRec(2, "v", "x", 0)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DropPartition(2); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.LoadValue(2, valuePID, "v"); ok {
		t.Fatal("the partition's image survived the drop")
	}
	if v, ok, err := s.LoadCrdt(2, "c", "b"); err != nil || !ok || string(v) != "sb" {
		t.Fatalf("replica after drop: %q %v %v", v, ok, err)
	}
	offs, err := s.CrdtOffsets()
	if err != nil || offs["kstate.c.crdt"][2] != 7 || offs["kstate.c.crdt"][5] != 3 || offs["kstate.d.crdt"][5] != 1 || len(offs["kstate.d.crdt"]) != 1 {
		t.Fatalf("offsets %v %v", offs, err)
	}
	if reps, err := s.CrdtReplicas(2, "c"); err != nil || len(reps) != 2 || reps[0].EntityID != "a" || string(reps[1].State) != "sb" {
		t.Fatalf("replicas of c in 2: %v %v", reps, err)
	}
	if reps, err := s.CrdtReplicas(2, "d"); err != nil || len(reps) != 0 {
		t.Fatalf("replicas of d in 2: %v %v", reps, err)
	}
	// A nil state deletes.
	if err := s.ApplyCrdt(2, []CrdtReplica{{PersistenceID: "c", EntityID: "a"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.LoadCrdt(2, "c", "a"); ok {
		t.Fatal("deleted replica still there")
	}
}
