package partition

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

func openMem(t testing.TB, fs vfs.FS) *Store {
	t.Helper()
	if fs == nil {
		fs = vfs.NewMem()
	}
	s, err := Open(Config{Dir: "db", FS: fs})
	mustNoErr(t, err)
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// dump renders every key and value of the store, for exact comparisons.
func dump(t testing.TB, s *Store) string {
	t.Helper()
	it, err := s.db.NewIter(nil)
	mustNoErr(t, err)
	var b strings.Builder
	for valid := it.First(); valid; valid = it.Next() {
		fmt.Fprintf(&b, "%x=%x\n", it.Key(), it.Value())
	}
	mustNoErr(t, it.Close())
	return b.String()
}

func load(t testing.TB, s *Store, p int32, id string) EventSourcedImage {
	t.Helper()
	img, err := s.LoadEventSourced(p, testPID, id)
	mustNoErr(t, err)
	return img
}

func offsets(t testing.TB, s *Store, p int32) map[string]int64 {
	t.Helper()
	o, err := s.Offsets(p)
	mustNoErr(t, err)
	return o
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("empty Dir: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Dir = "x"
	mustNoErr(t, cfg.Validate())
	cfg.CacheSize = -1
	cfg.MemTableSize = 5 << 30
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "CacheSize") || !strings.Contains(err.Error(), "MemTableSize") {
		t.Fatalf("want both problems reported: %v", err)
	}
	if _, err := Open(Config{}); err == nil {
		t.Fatal("Open accepted an invalid config")
	}
	// A block cache that the memtables would fill entirely is refused.
	err = Config{Dir: "x", CacheSize: 64 << 20, MemTableSize: 32 << 20}.Validate()
	if err == nil || !strings.Contains(err.Error(), "reserves memtables") {
		t.Fatalf("small cache: %v", err)
	}
	mustNoErr(t, Config{Dir: "x", CacheSize: 128 << 20, MemTableSize: 32 << 20}.Validate())
}

func TestStoreApplyAndLoad(t *testing.T) {
	s := openMem(t, nil)
	if img := load(t, s, 3, "e1"); img.Snapshot != nil || img.Events != nil || img.LastSequence != 0 {
		t.Fatalf("new entity: %+v", img)
	}
	if o := offsets(t, s, 3); len(o) != 0 {
		t.Fatalf("new partition has offsets %v", o)
	}
	recs := []Record{
		eventRec(3, "e1", 1, 0), eventRec(3, "e2", 1, 1), eventRec(3, "e1", 2, 2),
		eventRec(3, "e1", 3, 4), // a commit marker sat at 3
		snapRec(3, "e1", 2, 0),
		stateRec(3, "v1", "one", 0), stateRec(3, "v2", "two", 1),
	}
	mustNoErr(t, s.Apply(3, recs, map[string]int64{eventsTopic: 6}))

	img := load(t, s, 3, "e1")
	wantSnap := &kstatev1.StoredSnapshot{Sequence: 2, Snapshot: snapPayload("e1", 2), Offset: 0}
	if !protoEq(img.Snapshot, wantSnap) || len(img.Events) != 1 || !protoEq(img.Events[0], storedEvent("e1", 3, 4)) || img.LastSequence != 3 {
		t.Fatalf("e1 image: %+v", img)
	}
	img = load(t, s, 3, "e2")
	if img.Snapshot != nil || len(img.Events) != 1 || !protoEq(img.Events[0], storedEvent("e2", 1, 1)) || img.LastSequence != 1 {
		t.Fatalf("e2 image: %+v", img)
	}
	// Other partitions do not see it.
	if img := load(t, s, 4, "e1"); img.LastSequence != 0 {
		t.Fatalf("partition 4 sees partition 3: %+v", img)
	}
	want := map[string]int64{eventsTopic: 6, snapsTopic: 1, stateTopic: 2}
	if o := offsets(t, s, 3); !reflect.DeepEqual(o, want) {
		t.Fatalf("offsets %v, want %v", o, want)
	}

	v, ok, err := s.LoadValue(3, valuePID, "v1")
	mustNoErr(t, err)
	if !ok || !protoEq(v, &kstatev1.StoredValue{Value: &anypb.Any{TypeUrl: valueTypeURL, Value: []byte("one")}, Offset: 0}) {
		t.Fatalf("v1: %v %v", v, ok)
	}
	// Tombstone deletes, update replaces.
	mustNoErr(t, s.Apply(3, []Record{stateRec(3, "v1", "", 2), stateRec(3, "v2", "two'", 3)}, nil))
	if _, ok, err := s.LoadValue(3, valuePID, "v1"); err != nil || ok {
		t.Fatalf("v1 after tombstone: %v %v", ok, err)
	}
	v, ok, err = s.LoadValue(3, valuePID, "v2")
	mustNoErr(t, err)
	if !ok || string(v.GetValue().GetValue()) != "two'" || v.GetOffset() != 3 {
		t.Fatalf("v2: %v", v)
	}
	// A value entity and an event-sourced entity of the same id do not meet.
	if _, ok, _ := s.LoadValue(3, testPID, "e1"); ok {
		t.Fatal("event-sourced entity visible as a value")
	}

	// The next snapshot covers event 3; events continue at 4.
	mustNoErr(t, s.Apply(3, []Record{snapRec(3, "e1", 3, 1), eventRec(3, "e1", 4, 6)}, nil))
	img = load(t, s, 3, "e1")
	if img.Snapshot.GetSequence() != 3 || len(img.Events) != 1 || img.Events[0].GetSequence() != 4 || img.LastSequence != 4 {
		t.Fatalf("e1 after second snapshot: %+v", img)
	}
	if o := offsets(t, s, 3); o[eventsTopic] != 7 || o[snapsTopic] != 2 || o[stateTopic] != 4 {
		t.Fatalf("offsets %v", o)
	}
	// Only the snapshot and event 4 remain: covered events were deleted, not hidden.
	lower, upper := entityBounds(3, testPID, "e1")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	mustNoErr(t, err)
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		n++
	}
	mustNoErr(t, it.Close())
	if n != 3 { // meta, snapshot, event 4
		t.Fatalf("%d keys stored for e1, want 3", n)
	}
}

func TestStoreApplyIsAllOrNothing(t *testing.T) {
	s := openMem(t, nil)
	mustNoErr(t, s.Apply(0, []Record{eventRec(0, "e", 1, 0), stateRec(0, "v", "x", 0)}, nil))
	before := dump(t, s)

	// A gap in the middle of a batch: nothing of the batch is written, not even the good records
	// before it or the checkpoints.
	err := s.Apply(0, []Record{eventRec(0, "e", 2, 1), stateRec(0, "v", "", 1), eventRec(0, "f", 1, 2), eventRec(0, "e", 4, 3)},
		map[string]int64{eventsTopic: 10})
	var se *SequenceError
	var re *RecordError
	if !errors.As(err, &se) || *se != (SequenceError{PersistenceID: testPID, EntityID: "e", Want: 3, Got: 4}) {
		t.Fatalf("want a SequenceError, got %v", err)
	}
	if !errors.As(err, &re) || re.Offset != 3 || re.Topic != eventsTopic || re.Partition != 0 {
		t.Fatalf("want the record located, got %v", err)
	}
	if after := dump(t, s); after != before {
		t.Fatalf("failed Apply wrote:\n%s\nwas:\n%s", after, before)
	}

	// A duplicate (the split-brain symptom) is as loud.
	err = s.Apply(0, []Record{eventRec(0, "e", 1, 5)}, nil)
	if !errors.As(err, &se) || se.Want != 2 || se.Got != 1 {
		t.Fatalf("want duplicate SequenceError, got %v", err)
	}
	// Malformed records too.
	bad := eventRec(0, "e", 2, 5)
	bad.Headers = nil
	if err := s.Apply(0, []Record{bad}, nil); !errors.Is(err, ErrMalformedRecord) {
		t.Fatalf("want ErrMalformedRecord, got %v", err)
	}
	noTopic := eventRec(0, "e", 2, 5)
	noTopic.Topic = ""
	if err := s.Apply(0, []Record{noTopic}, nil); !errors.Is(err, ErrMalformedRecord) {
		t.Fatalf("want ErrMalformedRecord for a record without topic, got %v", err)
	}
	if after := dump(t, s); after != before {
		t.Fatal("failed Apply wrote")
	}
}

func TestStoreOffsetsNeverRegress(t *testing.T) {
	s := openMem(t, nil)
	mustNoErr(t, s.Apply(1, []Record{eventRec(1, "e", 1, 4)}, map[string]int64{snapsTopic: 7}))
	want := map[string]int64{eventsTopic: 5, snapsTopic: 7}
	if o := offsets(t, s, 1); !reflect.DeepEqual(o, want) {
		t.Fatalf("offsets %v, want %v", o, want)
	}
	before := dump(t, s)
	cases := []struct {
		name    string
		recs    []Record
		offsets map[string]int64
	}{
		{"checkpoint backwards", nil, map[string]int64{snapsTopic: 6}},
		{"record already applied", []Record{stateRec(1, "v", "x", 9), eventRec(1, "e", 2, 4)}, nil},
		{"checkpoint below a record of the batch", []Record{eventRec(1, "e", 2, 8)}, map[string]int64{eventsTopic: 8}},
		{"records out of order", []Record{eventRec(1, "e", 2, 9), eventRec(1, "f", 1, 8)}, nil},
		{"same offset twice", []Record{eventRec(1, "e", 2, 9), eventRec(1, "f", 1, 9)}, nil},
	}
	for _, tc := range cases {
		err := s.Apply(1, tc.recs, tc.offsets)
		var oe *OffsetError
		if !errors.As(err, &oe) || !errors.Is(err, ErrOffsetRegression) {
			t.Fatalf("%s: want OffsetError, got %v", tc.name, err)
		}
		if after := dump(t, s); after != before {
			t.Fatalf("%s: failed Apply wrote", tc.name)
		}
	}
	// Equal checkpoints are fine (nothing new), and offsets alone may advance past markers.
	mustNoErr(t, s.Apply(1, nil, map[string]int64{eventsTopic: 5, snapsTopic: 7}))
	mustNoErr(t, s.Apply(1, nil, map[string]int64{eventsTopic: 9}))
	if o := offsets(t, s, 1); o[eventsTopic] != 9 {
		t.Fatalf("offsets %v", o)
	}
	if err := s.Apply(1, nil, map[string]int64{"": 3}); err == nil {
		t.Fatal("empty topic accepted")
	}
}

func TestStoreInvalidPartition(t *testing.T) {
	s := openMem(t, nil)
	if err := s.Apply(-1, nil, map[string]int64{"t": 1}); !errors.Is(err, ErrInvalidPartition) {
		t.Fatalf("negative partition: %v", err)
	}
	if err := s.Apply(2, []Record{eventRec(3, "e", 1, 0)}, nil); !errors.Is(err, ErrInvalidPartition) {
		t.Fatalf("record of another partition: %v", err)
	}
	if _, err := s.Offsets(-2); !errors.Is(err, ErrInvalidPartition) {
		t.Fatal(err)
	}
	if _, err := s.LoadEventSourced(-2, "p", "e"); !errors.Is(err, ErrInvalidPartition) {
		t.Fatal(err)
	}
	if _, _, err := s.LoadValue(-2, "p", "e"); !errors.Is(err, ErrInvalidPartition) {
		t.Fatal(err)
	}
	if err := s.DropPartition(-2); !errors.Is(err, ErrInvalidPartition) {
		t.Fatal(err)
	}
}

// history is a random journal of several entities with snapshots, laid out as three topics of
// one partition (offsets with gaps, as transaction markers leave them).
type history struct {
	events, snaps, states []Record
	// ends are the end offsets of the topics.
	ends map[string]int64
}

func randomHistory(rng *rand.Rand, p int32, entities, eventsPer int) history {
	h := history{ends: map[string]int64{}}
	seq := map[string]int64{}
	var evOff, snOff, stOff int64
	for range entities * eventsPer {
		id := fmt.Sprintf("e%d", rng.IntN(entities))
		seq[id]++
		h.events = append(h.events, eventRec(p, id, seq[id], evOff))
		evOff += 1 + int64(rng.IntN(2)) // sometimes a marker
		if rng.IntN(4) == 0 {
			// A snapshot at the current sequence, or at an older one (not yet compacted away).
			s := seq[id] - int64(rng.IntN(int(seq[id])))
			h.snaps = append(h.snaps, snapRec(p, id, s, snOff))
			snOff += 1 + int64(rng.IntN(2))
		}
		if rng.IntN(3) == 0 {
			v := fmt.Sprintf("v%d", rng.IntN(entities))
			val := ""
			if rng.IntN(4) != 0 {
				val = fmt.Sprintf("val-%d", rng.Int())
			}
			h.states = append(h.states, stateRec(p, v, val, stOff))
			stOff += 1 + int64(rng.IntN(2))
		}
	}
	h.ends[eventsTopic], h.ends[snapsTopic], h.ends[stateTopic] = evOff+1, snOff+1, stOff+1
	return h
}

// interleave merges the topics in a random order that keeps each topic's own order.
func interleave(rng *rand.Rand, topics ...[]Record) []Record {
	var out []Record
	idx := make([]int, len(topics))
	for {
		var open []int
		for i, t := range topics {
			if idx[i] < len(t) {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			return out
		}
		i := open[rng.IntN(len(open))]
		out = append(out, topics[i][idx[i]])
		idx[i]++
	}
}

// restoreInto applies recs in random batches as a restore loop does, with RestoreProgress
// computing the checkpoints, and finishes at the ends.
func restoreInto(t *testing.T, rng *rand.Rand, s *Store, p int32, recs []Record, ends map[string]int64) {
	t.Helper()
	rp, err := NewRestoreProgress(offsets(t, s, p), ends)
	mustNoErr(t, err)
	for len(recs) > 0 {
		n := 1 + rng.IntN(min(len(recs), 40))
		for _, r := range recs[:n] {
			mustNoErr(t, rp.Observe(r.Topic, r.Offset))
		}
		mustNoErr(t, s.Apply(p, recs[:n], rp.Positions()))
		recs = recs[n:]
	}
	for topic, end := range ends {
		mustNoErr(t, rp.AdvanceTo(topic, end))
	}
	if !rp.Done() {
		t.Fatalf("restore not done: %v", rp.Pending())
	}
	mustNoErr(t, s.Apply(p, nil, rp.Positions()))
}

func TestStoreRestoreOrderIndependence(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	for round := range 20 {
		h := randomHistory(rng, 5, 1+rng.IntN(6), 1+rng.IntN(12))
		orders := map[string][]Record{
			"snapshots, events, state": append(append(append([]Record{}, h.snaps...), h.events...), h.states...),
			"state, events, snapshots": append(append(append([]Record{}, h.states...), h.events...), h.snaps...),
		}
		for i := range 4 {
			orders[fmt.Sprintf("interleaved %d", i)] = interleave(rng, h.events, h.snaps, h.states)
		}
		var refName, ref string
		for name, recs := range orders {
			// The writer's meta cache must not change the outcome: off, tiny (constant
			// eviction) and default.
			s, err := Open(Config{Dir: "db", FS: vfs.NewMem(), MetaCacheSize: []int{-1, 1, 2, 0}[rng.IntN(4)]})
			mustNoErr(t, err)
			restoreInto(t, rng, s, 5, recs, h.ends)
			got := dump(t, s)
			// The image is also what the pure model says.
			checkImages(t, s, 5, h)
			mustNoErr(t, s.Close())
			if ref == "" {
				refName, ref = name, got
				continue
			}
			if got != ref {
				t.Fatalf("round %d: %q restored a different store than %q:\n%s\nvs\n%s", round, name, refName, got, ref)
			}
		}
	}
}

// checkImages compares every entity's stored image with a fold of the history by the pure model.
func checkImages(t *testing.T, s *Store, p int32, h history) {
	t.Helper()
	models := map[string]*model{}
	for _, r := range append(append([]Record{}, h.snaps...), h.events...) {
		id := string(r.Key)
		if models[id] == nil {
			models[id] = &model{}
		}
		models[id].apply(t, r)
	}
	for id, m := range models {
		img := load(t, s, p, id)
		if img.LastSequence != m.meta.LastSequence || !protoEq(img.Snapshot, m.snap) || int64(len(img.Events)) != m.meta.LastSequence-m.meta.SnapshotSequence {
			t.Fatalf("%s: image %+v, model %+v", id, img, m)
		}
		for i, ev := range img.Events {
			if !protoEq(ev, m.events[m.meta.SnapshotSequence+1+int64(i)]) {
				t.Fatalf("%s: event %d differs", id, i)
			}
		}
	}
	values := map[string]*kstatev1.StoredValue{}
	for _, r := range h.states {
		if r.Tombstone {
			delete(values, string(r.Key))
			continue
		}
		values[string(r.Key)] = &kstatev1.StoredValue{Value: &anypb.Any{TypeUrl: valueTypeURL, Value: r.Value}, Offset: r.Offset}
	}
	for _, r := range h.states {
		v, ok, err := s.LoadValue(p, valuePID, string(r.Key))
		mustNoErr(t, err)
		want, wantOK := values[string(r.Key)]
		if ok != wantOK || !protoEq(v, want) {
			t.Fatalf("value %s: %v %v, want %v %v", r.Key, v, ok, want, wantOK)
		}
	}
	if o := offsets(t, s, p); !reflect.DeepEqual(o, h.ends) {
		t.Fatalf("offsets %v, want %v", o, h.ends)
	}
}

func TestStoreDropPartition(t *testing.T) {
	s := openMem(t, nil)
	rng := rand.New(rand.NewPCG(3, 3))
	hs := map[int32]history{}
	for _, p := range []int32{0, 1, 2, 1<<31 - 1} {
		hs[p] = randomHistory(rng, p, 4, 6)
		restoreInto(t, rng, s, p, interleave(rng, hs[p].events, hs[p].snaps, hs[p].states), hs[p].ends)
	}
	ps, err := s.Partitions()
	mustNoErr(t, err)
	if !reflect.DeepEqual(ps, []int32{0, 1, 2, 1<<31 - 1}) {
		t.Fatalf("partitions %v", ps)
	}
	mustNoErr(t, s.DropPartition(1))
	mustNoErr(t, s.DropPartition(1<<31-1))
	ps, err = s.Partitions()
	mustNoErr(t, err)
	if !reflect.DeepEqual(ps, []int32{0, 2}) {
		t.Fatalf("partitions after drop %v", ps)
	}
	for _, p := range []int32{1, 1<<31 - 1} {
		if o := offsets(t, s, p); len(o) != 0 {
			t.Fatalf("dropped partition %d keeps offsets %v", p, o)
		}
		for _, r := range hs[p].events {
			if img := load(t, s, p, string(r.Key)); img.LastSequence != 0 {
				t.Fatalf("dropped partition %d keeps %s", p, r.Key)
			}
		}
		for _, r := range hs[p].states {
			if _, ok, _ := s.LoadValue(p, valuePID, string(r.Key)); ok {
				t.Fatalf("dropped partition %d keeps value %s", p, r.Key)
			}
		}
	}
	checkImages(t, s, 0, hs[0])
	checkImages(t, s, 2, hs[2])
	// Restoring the dropped partition from the start works again: its checkpoints are gone.
	restoreInto(t, rng, s, 1, interleave(rng, hs[1].events, hs[1].snaps, hs[1].states), hs[1].ends)
	checkImages(t, s, 1, hs[1])
}

func TestStoreReopen(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open(Config{Dir: "db", FS: fs, Sync: true})
	mustNoErr(t, err)
	mustNoErr(t, s.Apply(0, []Record{eventRec(0, "e", 1, 0), eventRec(0, "e", 2, 1)}, nil))
	before := dump(t, s)
	mustNoErr(t, s.Close())
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Offsets(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("offsets after close: %v", err)
	}
	if err := s.Apply(0, nil, map[string]int64{"t": 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
	if _, err := s.LoadEventSourced(0, testPID, "e"); !errors.Is(err, ErrClosed) {
		t.Fatalf("load after close: %v", err)
	}
	if _, _, err := s.LoadValue(0, testPID, "e"); !errors.Is(err, ErrClosed) {
		t.Fatalf("load value after close: %v", err)
	}
	if err := s.DropPartition(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("drop after close: %v", err)
	}
	if _, err := s.Partitions(); !errors.Is(err, ErrClosed) {
		t.Fatalf("partitions after close: %v", err)
	}

	s = openMem(t, fs)
	if after := dump(t, s); after != before {
		t.Fatal("reopen changed the store")
	}
	mustNoErr(t, s.Apply(0, []Record{eventRec(0, "e", 3, 2)}, nil))
	if img := load(t, s, 0, "e"); img.LastSequence != 3 || len(img.Events) != 3 {
		t.Fatalf("after reopen: %+v", img)
	}

	// A store of another schema is refused.
	mustNoErr(t, s.db.Set(schemaKey, []byte("0"), pebble.Sync))
	mustNoErr(t, s.Close())
	if _, err := Open(Config{Dir: "db", FS: fs}); !errors.Is(err, ErrIncompatibleSchema) {
		t.Fatalf("want ErrIncompatibleSchema, got %v", err)
	}
}

func TestStoreDetectsCorruptImage(t *testing.T) {
	cases := map[string]func(s *Store){
		"event missing": func(s *Store) {
			mustNoErr(t, s.db.Delete(appendEventKey(nil, 0, testPID, "e", 2), pebble.Sync))
		},
		"extra event": func(s *Store) {
			mustNoErr(t, s.db.Set(appendEventKey(nil, 0, testPID, "e", 4), mustMarshal(t, storedEvent("e", 4, 9)), pebble.Sync))
		},
		"snapshot missing": func(s *Store) {
			mustNoErr(t, s.db.Delete(appendSnapshotKey(nil, 0, testPID, "e"), pebble.Sync))
			mustNoErr(t, s.db.Set(appendMetaKey(nil, 0, testPID, "e"), mustMarshal(t, &kstatev1.EntityMeta{LastSequence: 3, SnapshotSequence: 1}), pebble.Sync))
		},
		"meta missing": func(s *Store) {
			mustNoErr(t, s.db.Delete(appendMetaKey(nil, 0, testPID, "e"), pebble.Sync))
		},
		"garbage event": func(s *Store) {
			mustNoErr(t, s.db.Set(appendEventKey(nil, 0, testPID, "e", 2), []byte{0xff}, pebble.Sync))
		},
		"event under the wrong key": func(s *Store) {
			mustNoErr(t, s.db.Set(appendEventKey(nil, 0, testPID, "e", 2), mustMarshal(t, storedEvent("e", 3, 9)), pebble.Sync))
		},
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			s := openMem(t, nil)
			mustNoErr(t, s.Apply(0, []Record{eventRec(0, "e", 1, 0), eventRec(0, "e", 2, 1), eventRec(0, "e", 3, 2)}, nil))
			if img := load(t, s, 0, "e"); len(img.Events) != 3 {
				t.Fatalf("image %+v", img)
			}
			corrupt(s)
			if _, err := s.LoadEventSourced(0, testPID, "e"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	mustNoErr(t, err)
	return b
}

func TestStoreConcurrentPartitions(t *testing.T) {
	s := openMem(t, nil)
	const parts = 4
	var wg sync.WaitGroup
	errs := make(chan error, parts*2)
	for p := range int32(parts) {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for seq := int64(1); seq <= 200; seq++ {
				if err := s.Apply(p, []Record{eventRec(p, "e", seq, seq-1), stateRec(p, "v", fmt.Sprint(seq), seq-1)}, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				img, err := s.LoadEventSourced(p, testPID, "e")
				if err != nil {
					errs <- err
					return
				}
				if int64(len(img.Events)) != img.LastSequence {
					errs <- fmt.Errorf("torn image %+v", img)
					return
				}
				if _, err := s.Offsets(p); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// Two writers on one partition are serialised: exactly one of each duplicate pair wins.
	wg.Add(2)
	var mu sync.Mutex
	wins := 0
	for range 2 {
		go func() {
			defer wg.Done()
			err := s.Apply(parts, []Record{eventRec(parts, "e", 1, 0)}, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrOffsetRegression):
			default:
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if wins != 1 {
		t.Fatalf("%d writers won", wins)
	}
	for p := range int32(parts) {
		if img := load(t, s, p, "e"); img.LastSequence != 200 {
			t.Fatalf("partition %d: %d", p, img.LastSequence)
		}
	}
}

func TestPebbleLogger(t *testing.T) {
	var buf bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug})
	pl := pebbleLogger{l: l}
	pl.Infof("flushed %d", 3)
	pl.Errorf("bad %s", "thing")
	if out := buf.String(); !strings.Contains(out, "[DEBUG] flushed 3") || !strings.Contains(out, "[ERROR] bad thing") {
		t.Fatalf("log output %q", out)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "doom 1") {
			t.Fatalf("Fatalf must panic with the message, got %v", r)
		}
	}()
	pl.Fatalf("doom %d", 1)
}

func TestOpenLogsThroughHclog(t *testing.T) {
	var buf syncBuffer
	l := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug})
	s, err := Open(Config{Dir: "db", FS: vfs.NewMem(), Logger: l})
	mustNoErr(t, err)
	mustNoErr(t, s.Apply(0, []Record{eventRec(0, "e", 1, 0)}, nil))
	mustNoErr(t, s.db.Flush())
	mustNoErr(t, s.Close())
	if out := buf.String(); !strings.Contains(out, "partition.pebble") || !strings.Contains(out, "flush") {
		t.Fatalf("no pebble events logged: %q", out)
	}
}

// syncBuffer is a bytes.Buffer safe for Pebble's background goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
