package partition

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

func TestStep(t *testing.T) {
	type want struct {
		meta      Meta
		event     *kstatev1.StoredEvent
		snapshot  *kstatev1.StoredSnapshot
		deletes   EventRange
		value     *kstatev1.StoredValue
		delValue  bool
		ignored   string
		seqErr    *SequenceError
		malformed bool
	}
	noDel := EventRange{}
	tests := []struct {
		name string
		meta Meta
		rec  Record
		want want
	}{
		{"first event", Meta{}, eventRec(0, "e", 1, 10),
			want{meta: Meta{LastSequence: 1}, event: storedEvent("e", 1, 10), deletes: noDel}},
		{"next event", Meta{LastSequence: 4}, eventRec(0, "e", 5, 10),
			want{meta: Meta{LastSequence: 5}, event: storedEvent("e", 5, 10), deletes: noDel}},
		{"event after snapshot", Meta{LastSequence: 4, SnapshotSequence: 4}, eventRec(0, "e", 5, 10),
			want{meta: Meta{LastSequence: 5, SnapshotSequence: 4}, event: storedEvent("e", 5, 10), deletes: noDel}},
		{"event after snapshot with later events", Meta{LastSequence: 6, SnapshotSequence: 4}, eventRec(0, "e", 7, 10),
			want{meta: Meta{LastSequence: 7, SnapshotSequence: 4}, event: storedEvent("e", 7, 10), deletes: noDel}},
		{"gap", Meta{LastSequence: 4}, eventRec(0, "e", 6, 10),
			want{meta: Meta{LastSequence: 4}, seqErr: &SequenceError{PersistenceID: testPID, EntityID: "e", Want: 5, Got: 6}}},
		{"first event missing", Meta{}, eventRec(0, "e", 2, 10),
			want{seqErr: &SequenceError{PersistenceID: testPID, EntityID: "e", Want: 1, Got: 2}}},
		{"duplicate", Meta{LastSequence: 4}, eventRec(0, "e", 4, 10),
			want{meta: Meta{LastSequence: 4}, seqErr: &SequenceError{PersistenceID: testPID, EntityID: "e", Want: 5, Got: 4}}},
		{"older duplicate", Meta{LastSequence: 4}, eventRec(0, "e", 1, 10),
			want{meta: Meta{LastSequence: 4}, seqErr: &SequenceError{PersistenceID: testPID, EntityID: "e", Want: 5, Got: 1}}},
		{"duplicate above snapshot", Meta{LastSequence: 6, SnapshotSequence: 4}, eventRec(0, "e", 5, 10),
			want{meta: Meta{LastSequence: 6, SnapshotSequence: 4}, seqErr: &SequenceError{PersistenceID: testPID, EntityID: "e", Want: 7, Got: 5}}},
		{"gap after snapshot", Meta{LastSequence: 4, SnapshotSequence: 4}, eventRec(0, "e", 6, 10),
			want{meta: Meta{LastSequence: 4, SnapshotSequence: 4}, seqErr: &SequenceError{PersistenceID: testPID, EntityID: "e", Want: 5, Got: 6}}},
		{"event covered by snapshot", Meta{LastSequence: 4, SnapshotSequence: 4}, eventRec(0, "e", 3, 10),
			want{meta: Meta{LastSequence: 4, SnapshotSequence: 4}, ignored: IgnoredCoveredBySnapshot, deletes: noDel}},
		{"event equal to snapshot", Meta{LastSequence: 4, SnapshotSequence: 4}, eventRec(0, "e", 4, 10),
			want{meta: Meta{LastSequence: 4, SnapshotSequence: 4}, ignored: IgnoredCoveredBySnapshot, deletes: noDel}},
		{"snapshot on empty entity", Meta{}, snapRec(0, "e", 5, 3),
			want{meta: Meta{LastSequence: 5, SnapshotSequence: 5},
				snapshot: &kstatev1.StoredSnapshot{Sequence: 5, Snapshot: snapPayload("e", 5), Offset: 3},
				deletes:  EventRange{}}},
		{"snapshot behind events", Meta{LastSequence: 7}, snapRec(0, "e", 5, 3),
			want{meta: Meta{LastSequence: 7, SnapshotSequence: 5},
				snapshot: &kstatev1.StoredSnapshot{Sequence: 5, Snapshot: snapPayload("e", 5), Offset: 3},
				deletes:  EventRange{After: 0, Through: 5}}},
		{"snapshot ahead of events", Meta{LastSequence: 3}, snapRec(0, "e", 5, 3),
			want{meta: Meta{LastSequence: 5, SnapshotSequence: 5},
				snapshot: &kstatev1.StoredSnapshot{Sequence: 5, Snapshot: snapPayload("e", 5), Offset: 3},
				deletes:  EventRange{After: 0, Through: 3}}},
		{"newer snapshot", Meta{LastSequence: 9, SnapshotSequence: 4}, snapRec(0, "e", 8, 3),
			want{meta: Meta{LastSequence: 9, SnapshotSequence: 8},
				snapshot: &kstatev1.StoredSnapshot{Sequence: 8, Snapshot: snapPayload("e", 8), Offset: 3},
				deletes:  EventRange{After: 4, Through: 8}}},
		{"older snapshot", Meta{LastSequence: 9, SnapshotSequence: 8}, snapRec(0, "e", 4, 3),
			want{meta: Meta{LastSequence: 9, SnapshotSequence: 8}, ignored: IgnoredOlderSnapshot, deletes: noDel}},
		{"same snapshot", Meta{LastSequence: 9, SnapshotSequence: 8}, snapRec(0, "e", 8, 3),
			want{meta: Meta{LastSequence: 9, SnapshotSequence: 8}, ignored: IgnoredOlderSnapshot, deletes: noDel}},
		{"snapshot tombstone", Meta{LastSequence: 9, SnapshotSequence: 8},
			Record{Kind: Snapshots, PersistenceID: testPID, Topic: snapsTopic, Key: []byte("e"), Tombstone: true},
			want{meta: Meta{LastSequence: 9, SnapshotSequence: 8}, ignored: IgnoredSnapshotTombstone, deletes: noDel}},
		{"state", Meta{}, stateRec(0, "v", "hello", 12),
			want{value: &kstatev1.StoredValue{Value: &anypb.Any{TypeUrl: valueTypeURL, Value: []byte("hello")}, Offset: 12}, deletes: noDel}},
		{"state tombstone", Meta{}, stateRec(0, "v", "", 12),
			want{delValue: true, deletes: noDel}},
		{"empty state value is not a tombstone", Meta{},
			Record{Kind: State, PersistenceID: valuePID, Key: []byte("v"), Offset: 4, Value: []byte{}, Headers: []Header{{Key: kstatev1.HeaderType, Value: []byte(valueTypeURL)}}},
			want{value: &kstatev1.StoredValue{Value: &anypb.Any{TypeUrl: valueTypeURL}, Offset: 4}, deletes: noDel}},
		{"null event is an empty payload", Meta{},
			func() Record { r := eventRec(0, "e", 1, 10); r.Value, r.Tombstone = nil, true; return r }(),
			want{meta: Meta{LastSequence: 1}, deletes: noDel,
				event: &kstatev1.StoredEvent{Sequence: 1, Payload: &anypb.Any{TypeUrl: eventTypeURL}, Offset: 10, CommandId: "cmd-e-1"}}},
		{"last header wins", Meta{},
			func() Record {
				r := eventRec(0, "e", 1, 10)
				r.Headers = append([]Header{{Key: kstatev1.HeaderSequence, Value: []byte("9")}}, r.Headers...)
				return r
			}(),
			want{meta: Meta{LastSequence: 1}, event: storedEvent("e", 1, 10), deletes: noDel}},
		{"event without command id", Meta{},
			func() Record { r := eventRec(0, "e", 1, 10); r.Headers = r.Headers[:2]; return r }(),
			want{meta: Meta{LastSequence: 1}, deletes: noDel,
				event: func() *kstatev1.StoredEvent { e := storedEvent("e", 1, 10); e.CommandId = ""; return e }()}},
		{"event without key", Meta{}, func() Record { r := eventRec(0, "", 1, 10); return r }(), want{malformed: true}},
		{"event without seq", Meta{}, func() Record { r := eventRec(0, "e", 1, 10); r.Headers = r.Headers[1:]; return r }(), want{malformed: true}},
		{"event with bad seq", Meta{}, func() Record { r := eventRec(0, "e", 1, 10); r.Headers[0].Value = []byte("x1"); return r }(), want{malformed: true}},
		{"event with zero seq", Meta{}, func() Record { r := eventRec(0, "e", 1, 10); r.Headers[0].Value = []byte("0"); return r }(), want{malformed: true}},
		{"event without type", Meta{}, func() Record { r := eventRec(0, "e", 1, 10); r.Headers = r.Headers[:1]; return r }(), want{malformed: true}},
		{"snapshot garbage", Meta{}, func() Record { r := snapRec(0, "e", 1, 10); r.Value = []byte{0xff, 0xff}; return r }(), want{malformed: true}},
		{"snapshot without sequence", Meta{}, func() Record { r := snapRec(0, "e", 1, 10); r.Value = nil; return r }(), want{malformed: true}},
		{"state without type", Meta{}, func() Record { r := stateRec(0, "v", "x", 1); r.Headers = nil; return r }(), want{malformed: true}},
		{"unknown kind", Meta{}, Record{Kind: 42, PersistenceID: testPID, Key: []byte("e")}, want{malformed: true}},
		{"no persistence id", Meta{}, func() Record { r := eventRec(0, "e", 1, 10); r.PersistenceID = ""; return r }(), want{malformed: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			eff, err := Step(tc.meta, &rec)
			switch {
			case tc.want.malformed:
				if !errors.Is(err, ErrMalformedRecord) {
					t.Fatalf("want ErrMalformedRecord, got %v", err)
				}
				return
			case tc.want.seqErr != nil:
				var se *SequenceError
				if !errors.As(err, &se) || *se != *tc.want.seqErr || !errors.Is(err, ErrSequence) {
					t.Fatalf("want %v, got %v", tc.want.seqErr, err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if eff.Meta != tc.want.meta {
				t.Errorf("meta %+v, want %+v", eff.Meta, tc.want.meta)
			}
			if eff.Ignored != tc.want.ignored {
				t.Errorf("ignored %q, want %q", eff.Ignored, tc.want.ignored)
			}
			if !protoEq(eff.Event, tc.want.event) {
				t.Errorf("event %v, want %v", eff.Event, tc.want.event)
			}
			if !protoEq(eff.Snapshot, tc.want.snapshot) {
				t.Errorf("snapshot %v, want %v", eff.Snapshot, tc.want.snapshot)
			}
			if eff.DeleteEvents != tc.want.deletes {
				t.Errorf("deletes %+v, want %+v", eff.DeleteEvents, tc.want.deletes)
			}
			if !protoEq(eff.Value, tc.want.value) {
				t.Errorf("value %v, want %v", eff.Value, tc.want.value)
			}
			if eff.DeleteValue != tc.want.delValue {
				t.Errorf("delete value %v, want %v", eff.DeleteValue, tc.want.delValue)
			}
			if eff.EntityID != string(tc.rec.Key) {
				t.Errorf("entity %q, want %q", eff.EntityID, tc.rec.Key)
			}
		})
	}
}

// model folds Step effects over an in-memory image, to check order independence without IO.
type model struct {
	meta   Meta
	snap   *kstatev1.StoredSnapshot
	events map[int64]*kstatev1.StoredEvent
}

func (m *model) apply(t *testing.T, rec Record) {
	t.Helper()
	eff, err := Step(m.meta, &rec)
	if err != nil {
		t.Fatalf("step %v@%d: %v", rec.Kind, rec.Offset, err)
	}
	if eff.Ignored != "" {
		return
	}
	if m.events == nil {
		m.events = map[int64]*kstatev1.StoredEvent{}
	}
	if eff.Event != nil {
		m.events[eff.Event.Sequence] = eff.Event
	}
	if eff.Snapshot != nil {
		m.snap = eff.Snapshot
	}
	for s := eff.DeleteEvents.After + 1; s <= eff.DeleteEvents.Through; s++ {
		if _, ok := m.events[s]; !ok {
			t.Fatalf("snapshot deletes event %d that is not stored", s)
		}
		delete(m.events, s)
	}
	m.meta = eff.Meta
	// The invariant of Meta: exactly the events in (SnapshotSequence, LastSequence] are stored.
	if int64(len(m.events)) != m.meta.LastSequence-m.meta.SnapshotSequence {
		t.Fatalf("meta %+v with %d events stored", m.meta, len(m.events))
	}
	for s := m.meta.SnapshotSequence + 1; s <= m.meta.LastSequence; s++ {
		if m.events[s] == nil {
			t.Fatalf("meta %+v but event %d missing", m.meta, s)
		}
	}
}

func TestStepSnapshotOrderIndependence(t *testing.T) {
	const n = 12
	var events []Record
	for s := int64(1); s <= n; s++ {
		events = append(events, eventRec(0, "e", s, 100+s))
	}
	for _, snaps := range [][]int64{nil, {5}, {3, 9}, {12}, {4, 8, 12}, {9, 3}} {
		var snapRecs []Record
		for i, s := range snaps {
			snapRecs = append(snapRecs, snapRec(0, "e", s, int64(i)))
		}
		orders := map[string][]Record{
			"snapshots first": append(append([]Record{}, snapRecs...), events...),
			"events first":    append(append([]Record{}, events...), snapRecs...),
		}
		// Every interleaving that keeps each topic's order: place the snapshots after event k.
		for k := 0; k <= n; k++ {
			var rs []Record
			rs = append(rs, events[:k]...)
			rs = append(rs, snapRecs...)
			rs = append(rs, events[k:]...)
			orders["interleaved"+string(rune('a'+k))] = rs
		}
		var ref *model
		for name, recs := range orders {
			m := &model{}
			for _, r := range recs {
				m.apply(t, r)
			}
			if ref == nil {
				ref = m
				continue
			}
			if m.meta != ref.meta || !protoEq(m.snap, ref.snap) || len(m.events) != len(ref.events) {
				t.Fatalf("snapshots %v, %s: meta %+v snap %v events %d; reference meta %+v snap %v events %d",
					snaps, name, m.meta, m.snap, len(m.events), ref.meta, ref.snap, len(ref.events))
			}
			for s, ev := range ref.events {
				if !protoEq(m.events[s], ev) {
					t.Fatalf("snapshots %v, %s: event %d differs", snaps, name, s)
				}
			}
		}
		top := int64(0)
		for _, s := range snaps {
			top = max(top, s)
		}
		if ref.meta != (Meta{LastSequence: n, SnapshotSequence: top}) {
			t.Fatalf("snapshots %v: meta %+v", snaps, ref.meta)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Events: "events", Snapshots: "snapshots", State: "state", Kind(9): "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("%d: %q, want %q", int(k), got, want)
		}
	}
}
