package partition

import (
	"errors"
	"reflect"
	"testing"
)

func TestRestoreProgress(t *testing.T) {
	r, err := NewRestoreProgress(
		map[string]int64{"a": 5, "c": 3, "unrelated": 99},
		map[string]int64{"a": 10, "b": 4, "c": 3},
	)
	mustNoErr(t, err)
	if r.Done() {
		t.Fatal("done before reading")
	}
	if got := r.Remaining(); got != 5+4 {
		t.Fatalf("remaining %d", got)
	}
	want := []TopicProgress{{"a", 5, 10}, {"b", 0, 4}}
	if got := r.Pending(); !reflect.DeepEqual(got, want) {
		t.Fatalf("pending %v, want %v", got, want)
	}

	// Records with gaps: a marker at 7, a compacted hole at 2.
	mustNoErr(t, r.Observe("a", 5))
	mustNoErr(t, r.Observe("a", 6))
	mustNoErr(t, r.Observe("a", 8))
	mustNoErr(t, r.Observe("b", 0))
	mustNoErr(t, r.Observe("b", 3)) // the last record of b is at end-1: b is done
	if r.Done() {
		t.Fatal("a is at 9 of 10")
	}
	// The last offset of a is a commit marker that returns no record: the consumer reports its
	// fetch position instead. Never "offset+1 of the last record".
	mustNoErr(t, r.AdvanceTo("a", 10))
	if !r.Done() || r.Remaining() != 0 || len(r.Pending()) != 0 {
		t.Fatalf("not done: %v", r.Topics())
	}
	if got := r.Positions(); !reflect.DeepEqual(got, map[string]int64{"a": 10, "b": 4, "c": 3}) {
		t.Fatalf("positions %v", got)
	}
	// Going back is ignored by AdvanceTo and an error for Observe.
	mustNoErr(t, r.AdvanceTo("a", 2))
	if err := r.Observe("a", 9); !errors.Is(err, ErrOffsetRegression) {
		t.Fatalf("redelivery: %v", err)
	}
	if err := r.Observe("zzz", 1); err == nil {
		t.Fatal("unknown topic accepted")
	}
	if err := r.AdvanceTo("zzz", 1); err == nil {
		t.Fatal("unknown topic accepted")
	}
}

func TestRestoreProgressEmptyTopicsAreDone(t *testing.T) {
	r, err := NewRestoreProgress(nil, map[string]int64{"a": 0, "b": 0})
	mustNoErr(t, err)
	if !r.Done() {
		t.Fatal("empty topics must be done")
	}
	r, err = NewRestoreProgress(nil, nil)
	mustNoErr(t, err)
	if !r.Done() {
		t.Fatal("no topics must be done")
	}
}

func TestRestoreProgressCheckpointAhead(t *testing.T) {
	_, err := NewRestoreProgress(map[string]int64{"a": 11}, map[string]int64{"a": 10})
	var ahead *CheckpointAheadError
	if !errors.As(err, &ahead) || !errors.Is(err, ErrCheckpointAhead) || *ahead != (CheckpointAheadError{Topic: "a", Checkpoint: 11, End: 10}) {
		t.Fatalf("want CheckpointAheadError, got %v", err)
	}
	if _, err := NewRestoreProgress(nil, map[string]int64{"a": -1}); err == nil {
		t.Fatal("negative end accepted")
	}
	if _, err := NewRestoreProgress(map[string]int64{"a": -1}, map[string]int64{"a": 1}); err == nil {
		t.Fatal("negative position accepted")
	}
}
