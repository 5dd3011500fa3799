package kstatev1

// Kafka record header names kstate writes and reads.
//
// Event and state records (on the `.events` and `.state` topics) carry the raw bytes of the user
// message as their value, not a google.protobuf.Any, so that any Kafka consumer can decode them
// with the user's own schema; the message's type URL travels in HeaderType. Header values are
// UTF-8 text; numbers are decimal ASCII.
const (
	// HeaderSequence is the event's sequence number within its entity, in decimal ASCII ("1",
	// "2", ...). Set on every `.events` record.
	HeaderSequence = "kstate-seq"

	// HeaderCommandID is the id of the command whose reply produced the record.
	HeaderCommandID = "kstate-command-id"

	// HeaderType is the type URL of the record value's message, e.g.
	// "type.googleapis.com/com.example.shoppingcart.persistence.ItemAdded". Together with the
	// value it rebuilds the google.protobuf.Any the user function emitted.
	HeaderType = "kstate-type"

	// HeaderEntityType is the entity's kind: the full name of its protocol service, such as
	// "cloudstate.eventsourced.EventSourced".
	HeaderEntityType = "kstate-entity-type"

	// HeaderOriginNode is the id of the node that made a CRDT delta (`.crdt` records).
	HeaderOriginNode = "kstate-origin-node"

	// HeaderOriginSeq is the origin node's sequence number for a CRDT delta, in decimal ASCII.
	HeaderOriginSeq = "kstate-origin-seq"

	// HeaderCrdtCovers, on a `.crdt-state` record, is the next offset of the same partition of the
	// `.crdt` delta topic that the written states include, in decimal ASCII. The record that
	// carries it with key CrdtCheckpointKey and no value is a checkpoint: every entity whose state
	// changed before that offset has its state on the topic at or before the checkpoint.
	HeaderCrdtCovers = "kstate-crdt-covers"

	// HeaderDeadLetterTopic, HeaderDeadLetterPartition and HeaderDeadLetterOffset say where a
	// quarantined record (on `<ns>.<app>.dead-letters`) came from; HeaderDeadLetterReason says why
	// the restore rejected it. The record's own key, value and headers are kept as they were.
	HeaderDeadLetterTopic     = "kstate-dlq-topic"
	HeaderDeadLetterPartition = "kstate-dlq-partition"
	HeaderDeadLetterOffset    = "kstate-dlq-offset"
	HeaderDeadLetterReason    = "kstate-dlq-reason"

	// HeaderTraceParent is the W3C trace context (https://www.w3.org/TR/trace-context/) of the
	// command that wrote the record, e.g. "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":
	// a consumer of the journal continues the command's trace from it. Set on every record a
	// command writes (events, snapshots, state, idempotency outcomes) while the node traces; absent
	// otherwise. Restore ignores it.
	HeaderTraceParent = "traceparent"

	// HeaderTraceState is the W3C tracestate that goes with HeaderTraceParent, when the trace has
	// one.
	HeaderTraceState = "tracestate"
)

// CrdtCheckpointKey is the record key of a `.crdt-state` checkpoint (see HeaderCrdtCovers); it
// begins with a NUL byte, which no entity id kstate accepts does.
const CrdtCheckpointKey = "\x00kstate-checkpoint"

// Request headers kstate reads.
const (
	// IdempotencyKeyHeader is the gRPC metadata key (HTTP: Idempotency-Key) of a command's
	// idempotency key: a retry with the same key is answered with the first attempt's outcome.
	IdempotencyKeyHeader = "idempotency-key"
)
