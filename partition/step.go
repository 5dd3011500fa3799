package partition

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// Meta is the sequence state of one event-sourced entity's stored image. The image always holds
// exactly the events with SnapshotSequence < seq ≤ LastSequence, and the snapshot at
// SnapshotSequence when it is above 0; LastSequence ≥ SnapshotSequence.
type Meta struct {
	// LastSequence is the highest sequence covered by a stored event or by the snapshot.
	LastSequence int64
	// SnapshotSequence is the sequence of the stored snapshot; 0 when there is none.
	SnapshotSequence int64
}

// next is the only sequence an incoming event may carry to be appended.
func (m Meta) next() int64 { return max(m.LastSequence, m.SnapshotSequence) + 1 }

// EventRange holds the event sequences seq with After < seq ≤ Through; the zero value is empty.
type EventRange struct {
	After, Through int64
}

// Empty reports whether the range holds no sequence.
func (r EventRange) Empty() bool { return r.Through <= r.After }

// Effect is what one record does to the stored image of its entity. The zero parts do nothing.
// Its byte slices alias the record's.
type Effect struct {
	// EntityID is the record key.
	EntityID string
	// Meta is the entity's meta after the record; for State records it is the input meta.
	Meta Meta
	// Event, when set, is stored under its sequence.
	Event *kstatev1.StoredEvent
	// Snapshot, when set, replaces the stored snapshot.
	Snapshot *kstatev1.StoredSnapshot
	// DeleteEvents are stored events that Snapshot covers.
	DeleteEvents EventRange
	// Value, when set, replaces the stored value of a value entity.
	Value *kstatev1.StoredValue
	// DeleteValue deletes the stored value of a value entity.
	DeleteValue bool
	// Idempotency, when set, is a remembered command outcome to store (RawIdempotency holds its
	// record bytes, stored as they are).
	Idempotency    *kstatev1.IdempotencyRecord
	RawIdempotency []byte
	// Ignored, when not empty, says why the record changes nothing.
	Ignored string
}

// Reasons a record changes nothing.
const (
	// IgnoredCoveredBySnapshot marks an event whose sequence the stored snapshot already covers.
	IgnoredCoveredBySnapshot = "event covered by snapshot"
	// IgnoredOlderSnapshot marks a snapshot not newer than the stored one.
	IgnoredOlderSnapshot = "snapshot not newer than the stored one"
	// IgnoredSnapshotTombstone marks a null value on a snapshots topic: the events the stored
	// snapshot covered may be gone from the store, so the snapshot is kept.
	IgnoredSnapshotTombstone = "snapshot tombstone"
)

// Step is the pure transition of one entity's stored image: given the entity's current meta and a
// record, it returns the mutations the record implies. It does no IO and keeps no state.
//
//   - Events: an event with seq ≤ meta.SnapshotSequence is ignored (the snapshot covers it);
//     otherwise seq must be max(LastSequence, SnapshotSequence)+1, else a *SequenceError — a gap
//     or duplicate is a split-brain symptom (RELIABILITY F6).
//   - Snapshots: a snapshot with sequence S > meta.SnapshotSequence replaces the stored one and
//     deletes the stored events with seq ≤ S; older ones are ignored. LastSequence becomes
//     max(LastSequence, S).
//   - State: a value replaces the stored value; a tombstone deletes it.
//   - Idempotency: the remembered outcome is stored under its persistence id, entity and key
//     (a later one with the same key replaces it); a tombstone is malformed.
//
// Restoring a snapshots topic before or after the events topic yields the same image: snapshot
// first skips the events it covers; events first stores them, and the snapshot deletes them.
//
// Errors are *SequenceError or wrap ErrMalformedRecord; Store.Apply wraps them in a *RecordError.
func Step(meta Meta, rec *Record) (Effect, error) {
	eff := Effect{EntityID: string(rec.Key), Meta: meta}
	if len(rec.Key) == 0 {
		return eff, fmt.Errorf("%w: no entity id key", ErrMalformedRecord)
	}
	if rec.Kind == Idempotency {
		return stepIdempotency(eff, rec)
	}
	if rec.PersistenceID == "" {
		return eff, fmt.Errorf("%w: no persistence id", ErrMalformedRecord)
	}
	switch rec.Kind {
	case Events:
		return stepEvent(eff, meta, rec)
	case Snapshots:
		return stepSnapshot(eff, meta, rec)
	case State:
		return stepState(eff, rec)
	default:
		return eff, fmt.Errorf("%w: unknown kind %v", ErrMalformedRecord, rec.Kind)
	}
}

// Validate checks a record as Step checks it on restore, without the entity's stored image: every
// check except the sequence's continuity, which only the stored image can tell. The runtime
// validates each record of a command before its transaction, so nothing that restore would
// reject becomes durable.
func Validate(rec *Record) error {
	var meta Meta
	if rec.Kind == Events {
		if raw, ok := rec.Header(kstatev1.HeaderSequence); ok {
			if seq, err := strconv.ParseInt(string(raw), 10, 64); err == nil && seq > 0 {
				meta.LastSequence = seq - 1
			}
		}
	}
	_, err := Step(meta, rec)
	return err
}

func stepEvent(eff Effect, meta Meta, rec *Record) (Effect, error) {
	raw, ok := rec.Header(kstatev1.HeaderSequence)
	if !ok {
		return eff, fmt.Errorf("%w: event without %s header", ErrMalformedRecord, kstatev1.HeaderSequence)
	}
	seq, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || seq < 1 {
		return eff, fmt.Errorf("%w: event %s header %q is not a positive decimal", ErrMalformedRecord, kstatev1.HeaderSequence, raw)
	}
	typeURL, ok := rec.Header(kstatev1.HeaderType)
	if !ok || len(typeURL) == 0 {
		return eff, fmt.Errorf("%w: event without %s header", ErrMalformedRecord, kstatev1.HeaderType)
	}
	if seq <= meta.SnapshotSequence {
		eff.Ignored = IgnoredCoveredBySnapshot
		return eff, nil
	}
	if want := meta.next(); seq != want {
		return eff, &SequenceError{PersistenceID: rec.PersistenceID, EntityID: eff.EntityID, Want: want, Got: seq}
	}
	commandID, _ := rec.Header(kstatev1.HeaderCommandID)
	eff.Event = &kstatev1.StoredEvent{
		Sequence:  seq,
		Payload:   &anypb.Any{TypeUrl: string(typeURL), Value: rec.Value},
		Offset:    rec.Offset,
		CommandId: string(commandID),
	}
	eff.Meta.LastSequence = seq
	return eff, nil
}

func stepSnapshot(eff Effect, meta Meta, rec *Record) (Effect, error) {
	if rec.Tombstone {
		eff.Ignored = IgnoredSnapshotTombstone
		return eff, nil
	}
	var sr kstatev1.SnapshotRecord
	if err := proto.Unmarshal(rec.Value, &sr); err != nil {
		return eff, fmt.Errorf("%w: snapshot value: %v", ErrMalformedRecord, err)
	}
	if sr.GetSequence() < 1 {
		return eff, fmt.Errorf("%w: snapshot sequence %d is not positive", ErrMalformedRecord, sr.GetSequence())
	}
	if sr.GetSnapshot() == nil {
		return eff, fmt.Errorf("%w: snapshot %d without a snapshot payload", ErrMalformedRecord, sr.GetSequence())
	}
	s := sr.GetSequence()
	if s <= meta.SnapshotSequence {
		eff.Ignored = IgnoredOlderSnapshot
		return eff, nil
	}
	eff.Snapshot = &kstatev1.StoredSnapshot{Sequence: s, Snapshot: sr.GetSnapshot(), Offset: rec.Offset}
	eff.DeleteEvents = EventRange{After: meta.SnapshotSequence, Through: min(meta.LastSequence, s)}
	eff.Meta = Meta{LastSequence: max(meta.LastSequence, s), SnapshotSequence: s}
	return eff, nil
}

func stepState(eff Effect, rec *Record) (Effect, error) {
	if rec.Tombstone {
		eff.DeleteValue = true
		return eff, nil
	}
	typeURL, ok := rec.Header(kstatev1.HeaderType)
	if !ok || len(typeURL) == 0 {
		return eff, fmt.Errorf("%w: state without %s header", ErrMalformedRecord, kstatev1.HeaderType)
	}
	eff.Value = &kstatev1.StoredValue{
		Value:  &anypb.Any{TypeUrl: string(typeURL), Value: rec.Value},
		Offset: rec.Offset,
	}
	return eff, nil
}

func stepIdempotency(eff Effect, rec *Record) (Effect, error) {
	if rec.Tombstone {
		return eff, fmt.Errorf("%w: idempotency record without a value", ErrMalformedRecord)
	}
	ir := &kstatev1.IdempotencyRecord{}
	if err := proto.Unmarshal(rec.Value, ir); err != nil {
		return eff, fmt.Errorf("%w: idempotency record: %v", ErrMalformedRecord, err)
	}
	switch {
	case ir.GetPersistenceId() == "":
		return eff, fmt.Errorf("%w: idempotency record without a persistence id", ErrMalformedRecord)
	case ir.GetKey() == "":
		return eff, fmt.Errorf("%w: idempotency record without a key", ErrMalformedRecord)
	case !ir.GetExpiresAt().IsValid():
		return eff, fmt.Errorf("%w: idempotency record without a valid expiry", ErrMalformedRecord)
	case ir.GetOutcome() == nil:
		return eff, fmt.Errorf("%w: idempotency record without an outcome", ErrMalformedRecord)
	}
	eff.Idempotency, eff.RawIdempotency = ir, rec.Value
	return eff, nil
}
