package partition

import (
	"testing"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// TestTraceHeadersIgnored: a traced node adds W3C trace context headers to every record a command
// writes (docs/operations.md). Validate accepts such records and restore stores them exactly as
// records without them: unknown headers are ignored, whatever their position.
func TestTraceHeadersIgnored(t *testing.T) {
	trace := func(r Record) Record {
		r.Headers = append(append([]Header{{Key: kstatev1.HeaderTraceState, Value: []byte("vendor=x")}}, r.Headers...),
			Header{Key: kstatev1.HeaderTraceParent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
			Header{Key: kstatev1.HeaderTraceState, Value: []byte("vendor=y")})
		return r
	}
	recs := []Record{
		trace(eventRec(0, "a", 1, 10)),
		trace(eventRec(0, "a", 2, 11)),
		trace(snapRec(0, "a", 2, 5)),
		trace(eventRec(0, "a", 3, 12)),
		trace(stateRec(0, "v", "one", 20)),
		trace(stateRec(0, "w", "", 21)), // a tombstone with trace headers
	}
	for i := range recs {
		if err := Validate(&recs[i]); err != nil {
			t.Fatalf("Validate(%s@%d) with trace headers: %v", recs[i].Topic, recs[i].Offset, err)
		}
	}

	traced, plain := openMem(t, nil), openMem(t, nil)
	mustNoErr(t, traced.Apply(0, recs, map[string]int64{eventsTopic: 13, snapsTopic: 6, stateTopic: 22}))
	mustNoErr(t, plain.Apply(0, []Record{
		eventRec(0, "a", 1, 10), eventRec(0, "a", 2, 11), snapRec(0, "a", 2, 5), eventRec(0, "a", 3, 12),
		stateRec(0, "v", "one", 20), stateRec(0, "w", "", 21),
	}, map[string]int64{eventsTopic: 13, snapsTopic: 6, stateTopic: 22}))

	got, err := traced.LoadEventSourced(0, testPID, "a")
	mustNoErr(t, err)
	want, err := plain.LoadEventSourced(0, testPID, "a")
	mustNoErr(t, err)
	if got.LastSequence != 3 || got.LastSequence != want.LastSequence || !protoEq(got.Snapshot, want.Snapshot) || len(got.Events) != len(want.Events) {
		t.Fatalf("traced image %+v, want %+v", got, want)
	}
	for i := range got.Events {
		if !protoEq(got.Events[i], want.Events[i]) {
			t.Fatalf("event %d: %v, want %v", i, got.Events[i], want.Events[i])
		}
	}
	v, ok, err := traced.LoadValue(0, valuePID, "v")
	mustNoErr(t, err)
	wv, _, _ := plain.LoadValue(0, valuePID, "v")
	if !ok || !protoEq(v, wv) {
		t.Fatalf("traced value %v (found %v), want %v", v, ok, wv)
	}
	if _, ok, err := traced.LoadValue(0, valuePID, "w"); err != nil || ok {
		t.Fatalf("tombstoned value: found %v, err %v", ok, err)
	}
}
