package partition

import "fmt"

// Kind says which topic of a persistence id a record comes from, and so how it changes the image.
type Kind int

const (
	// Events is the `.events` journal: key entity id, value the raw event bytes, headers
	// HeaderSequence, HeaderType and HeaderCommandID.
	Events Kind = iota + 1
	// Snapshots is the compacted `.snapshots` topic: key entity id, value a SnapshotRecord.
	Snapshots
	// State is the compacted `.state` topic of value entities: key entity id, value the raw state
	// bytes with the type URL in HeaderType; a tombstone deletes the entity.
	State
	// Idempotency is the app's `.idempotency` topic: key entity id, value an IdempotencyRecord
	// (the outcome of a command that carried an idempotency key). Its persistence id is in the
	// value, so Record.PersistenceID may be empty.
	Idempotency
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case Events:
		return "events"
	case Snapshots:
		return "snapshots"
	case State:
		return "state"
	case Idempotency:
		return "idempotency"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Header is one Kafka record header. Keys may repeat; the last one wins.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record of a persistence id's topic, adapted by the processor from the
// client's record type so that this package never sees the Kafka client. Records given to
// Store.Apply must have been read read_committed, or be the processor's own records after their
// transaction committed (RELIABILITY F7).
type Record struct {
	// Kind is the role of Topic.
	Kind Kind
	// PersistenceID names the entity type; it namespaces the stored image.
	PersistenceID string
	// Topic and Partition locate the record; Topic's checkpoint advances past Offset on Apply.
	Topic     string
	Partition int32
	Offset    int64
	// Key is the entity id.
	Key []byte
	// Value is the record value: raw payload bytes for events and state, a SnapshotRecord for
	// snapshots. Empty and nil are the same payload; Tombstone tells a Kafka null apart.
	Value []byte
	// Headers are the record headers.
	Headers []Header
	// Tombstone is true when the Kafka value is null. On a state topic it deletes the value; on an
	// events topic it is an event with an empty payload; on a snapshots topic it is ignored (the
	// stored image already folded the snapshot in, and events it covered may be gone).
	Tombstone bool
}

// Header returns the value of the last header named key.
func (r *Record) Header(key string) ([]byte, bool) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return r.Headers[i].Value, true
		}
	}
	return nil, false
}
