package partition

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by every method of a Store after Close.
	ErrClosed = errors.New("partition: store closed")

	// ErrInvalidPartition is returned for a negative partition number or a record whose partition
	// differs from the one it is applied to.
	ErrInvalidPartition = errors.New("partition: invalid partition")

	// ErrMalformedRecord is wrapped by a RecordError when a record lacks what its kind needs (an
	// entity id key, a sequence header, a type header, a decodable snapshot).
	ErrMalformedRecord = errors.New("partition: malformed record")

	// ErrSequence is wrapped by every SequenceError: an event sequence gap or duplicate, a
	// split-brain symptom (RELIABILITY F6).
	ErrSequence = errors.New("partition: event sequence mismatch")

	// ErrOffsetRegression is wrapped by every OffsetError: a checkpoint would move backwards or a
	// record below its topic's checkpoint would be applied a second time (RELIABILITY F7).
	ErrOffsetRegression = errors.New("partition: offset regression")

	// ErrCheckpointAhead is wrapped by every CheckpointAheadError: the stored checkpoint is past the
	// topic's end offset, so the store reflects records the broker no longer has.
	ErrCheckpointAhead = errors.New("partition: checkpoint ahead of end offset")

	// ErrCorrupt is returned when stored data cannot be decoded or breaks an invariant of the image
	// (events not contiguous after the snapshot).
	ErrCorrupt = errors.New("partition: corrupt store")

	// ErrIncompatibleSchema is returned by Open for a store written with another key schema.
	ErrIncompatibleSchema = errors.New("partition: incompatible store schema")
)

// SequenceError reports an event whose sequence number is not the next one for its entity. A gap
// (Got > Want) or a duplicate (Got < Want) means two writers appended to one entity's journal, or
// the journal lost events: the entity's image cannot be trusted, so the error is fatal for the
// partition (RELIABILITY F6).
type SequenceError struct {
	PersistenceID string
	EntityID      string
	// Want is the only acceptable sequence: one past the highest stored event or snapshot.
	Want int64
	// Got is the sequence carried by the record.
	Got int64
}

// Error implements error.
func (e *SequenceError) Error() string {
	what := "gap"
	if e.Got < e.Want {
		what = "duplicate"
	}
	return fmt.Sprintf("partition: event sequence %s for %s/%q: want %d, got %d",
		what, e.PersistenceID, e.EntityID, e.Want, e.Got)
}

// Unwrap returns ErrSequence.
func (e *SequenceError) Unwrap() error { return ErrSequence }

// RecordError locates the record an Apply failed on. Err is ErrMalformedRecord (wrapped with
// detail) or a *SequenceError.
type RecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Err       error
}

// Error implements error.
func (e *RecordError) Error() string {
	return fmt.Sprintf("record %s/%d@%d: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

// Unwrap returns Err.
func (e *RecordError) Unwrap() error { return e.Err }

// OffsetError reports a checkpoint that would move backwards, or a record at an offset below the
// stored checkpoint of its topic (it was applied already).
type OffsetError struct {
	Topic     string
	Partition int32
	// Checkpoint is the stored next offset of Topic.
	Checkpoint int64
	// Offset is the offending record offset or requested checkpoint.
	Offset int64
}

// Error implements error.
func (e *OffsetError) Error() string {
	return fmt.Sprintf("partition: offset regression on %s/%d: checkpoint %d, got %d",
		e.Topic, e.Partition, e.Checkpoint, e.Offset)
}

// Unwrap returns ErrOffsetRegression.
func (e *OffsetError) Unwrap() error { return ErrOffsetRegression }

// CheckpointAheadError reports a stored checkpoint beyond the end offset of its topic: the topic
// was truncated or recreated, and the stored state must be dropped and restored from scratch.
type CheckpointAheadError struct {
	Topic      string
	Checkpoint int64
	End        int64
}

// Error implements error.
func (e *CheckpointAheadError) Error() string {
	return fmt.Sprintf("partition: checkpoint %d of %s is past its end offset %d", e.Checkpoint, e.Topic, e.End)
}

// Unwrap returns ErrCheckpointAhead.
func (e *CheckpointAheadError) Unwrap() error { return ErrCheckpointAhead }
