// Package crdtlog holds kstate's pure CRDT types: GCounter, PNCounter, GSet, ORSet,
// LWWRegister, Flag, ORMap and Vote, their merge, their translation to and from the Cloudstate
// protocol's operation deltas, and their binary encoding for Kafka. It does no IO, reads no
// clock and starts no goroutine; the runtime drives it (docs/crdt.md, "crdtlog: the CRDT
// types").
//
// # States and replication deltas
//
// Every node holds a replica of every CRDT entity: a full state, tagged by node where a type
// needs it (a GCounter is a map node → count, a PNCounter two of them, an ORSet elements with
// dots and a causal context). The types are delta-state CRDTs: a change produces a replication
// delta, which is a small state of the same type, and Merge joins any state or delta into a
// replica. Merge is idempotent, commutative and associative, so deltas may be lost and then
// covered by a full state (anti-entropy), duplicated or reordered, and replicas still converge
// to the merge of everything they received. All eight types implement the sealed interface
// CRDT, which the runtime holds without knowing the type.
//
// # Operation deltas
//
// A user function does not send states: it sends an operation delta (crdtpb.CrdtDelta, in
// CrdtStateAction.update), such as "increment by 3" or "remove these elements". Apply turns
// one into a replication delta at a node, rejecting what the type cannot do (ErrKindMismatch,
// ErrIllegalChange, ErrInvalidOp). In the other direction the user function is told about the
// state as operation deltas too: InitDelta is the whole state (CrdtInit.delta) and ChangeDelta
// the difference between what the user function knows and the replica after remote deltas
// were merged, or after its own write lost against an LWW clock (Expected). NewFromOp creates
// the CRDT of a new entity from its first operation.
//
// # Dots and node ids
//
// A node id is the runtime's stable name of a kstate node (1 to MaxNodeIDLen bytes). A dot
// (node, counter) names one add of an ORSet element or one change of an ORMap entry; a node
// issues its counters in order, one past the highest it has seen for itself, so a node must
// have merged every delta it ever published (restore before serving) before it applies an
// operation, or it could reuse a dot. A causal context is the set of dots a replica has seen;
// a remove removes only the dots it observed, which is what makes ORSet and ORMap add-wins.
//
// # Element identity
//
// Set elements and map keys are google.protobuf.Any messages. Their identity is the protobuf
// encoding of the Any's type_url (field 1) and value (field 2), empty fields omitted and
// unknown fields dropped (ElementID): two elements are the same exactly when their type URLs
// and value bytes are equal. A message serialized two ways (a map field in another order, a
// default field written explicitly) is two elements, as in Cloudstate; user functions should
// serialize deterministically.
//
// # Encoding
//
// Encode writes a state or delta as a kstate.v1.CrdtState (proto/kstate/v1/crdt.proto), with
// every repeated field sorted: the encoding is canonical, so equal states have equal bytes.
// Decode validates untrusted input (size, nesting, node ids, duplicates, dots within the causal
// context) and never panics.
package crdtlog
