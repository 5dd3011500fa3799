package crdtlog

import (
	"errors"
	"fmt"

	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// Kind is the type of a CRDT. Its values are the field numbers of the types in the protocol's
// CrdtDelta oneof (and in kstate.v1.CrdtState).
type Kind int

// The eight CRDT kinds of Cloudstate protocol 0.2.
const (
	KindGCounter    Kind = 1
	KindPNCounter   Kind = 2
	KindGSet        Kind = 3
	KindORSet       Kind = 4
	KindLWWRegister Kind = 5
	KindFlag        Kind = 6
	KindORMap       Kind = 7
	KindVote        Kind = 8
)

// String returns the kind's protocol name, such as "GCounter".
func (k Kind) String() string {
	switch k {
	case KindGCounter:
		return "GCounter"
	case KindPNCounter:
		return "PNCounter"
	case KindGSet:
		return "GSet"
	case KindORSet:
		return "ORSet"
	case KindLWWRegister:
		return "LWWRegister"
	case KindFlag:
		return "Flag"
	case KindORMap:
		return "ORMap"
	case KindVote:
		return "Vote"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Valid reports whether k is one of the eight kinds.
func (k Kind) Valid() bool { return k >= KindGCounter && k <= KindVote }

// Errors. Every error this package returns wraps one of them, with context.
var (
	// ErrKindMismatch: a delta, state or operation of one kind meets a CRDT of another (a
	// PNCounterDelta for a GCounter entity, an ORMap entry update of another type than the value).
	ErrKindMismatch = errors.New("crdtlog: CRDT kind mismatch")
	// ErrIllegalChange: the operation is well-formed but not allowed (disabling an enabled flag,
	// a counter overflow, a decrease a grow-only type cannot represent).
	ErrIllegalChange = errors.New("crdtlog: illegal CRDT change")
	// ErrInvalidOp: the operation delta is malformed (empty oneof, missing key, unknown clock).
	ErrInvalidOp = errors.New("crdtlog: invalid operation delta")
	// ErrInvalidNode: a node id is empty or longer than MaxNodeIDLen.
	ErrInvalidNode = errors.New("crdtlog: invalid node id")
	// ErrDecode: an encoded state or delta is malformed, too large or violates an invariant.
	ErrDecode = errors.New("crdtlog: invalid encoded CRDT")
)

// MaxNodeIDLen bounds node ids, in bytes.
const MaxNodeIDLen = 255

// CRDT is one replica of one CRDT entity's state. The eight implementations are *GCounter,
// *PNCounter, *GSet, *ORSet, *LWWRegister, *Flag, *ORMap and *Vote; the set is sealed.
//
// A CRDT is not safe for concurrent use: one goroutine (the partition's) owns it.
//
// Replication deltas are CRDTs of the same kind (delta-state CRDTs): Merge accepts a full state
// or a delta alike, and merging is idempotent, commutative and associative, so deltas may be
// delivered duplicated and in any order.
type CRDT interface {
	// Kind is the CRDT's type.
	Kind() Kind
	// Merge joins other, a full state or a replication delta of the same kind, into the
	// receiver; a nil other changes nothing. It fails with ErrKindMismatch (and changes
	// nothing) for another kind. Merge does not add to the pending Delta: a remote change is
	// published by its origin.
	Merge(other CRDT) error
	// Apply applies a user function's operation delta (CrdtStateAction.update) made at node,
	// with now the caller's wall clock in Unix milliseconds (used by LWWRegister's DEFAULT and
	// REVERSE clocks only). It returns the replication delta of the change, which is also
	// merged into the receiver and added to the pending Delta, or nil when the operation changes
	// nothing. On error the receiver is unchanged.
	Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error)
	// Delta returns the merge of every replication delta Apply returned since the last
	// ResetDelta, or nil if there was none. The result is the caller's.
	Delta() CRDT
	// ResetDelta forgets the pending delta (after it was published).
	ResetDelta()
	// Clone returns a deep copy, pending delta included.
	Clone() CRDT
	// Equal reports whether other has the same replicated state (pending deltas ignored).
	Equal(other CRDT) bool
	// InitDelta returns the whole state as a protocol delta from the empty CRDT, as sent in
	// CrdtInit.delta. self is the node the user function runs on (a Vote's self_vote).
	InitDelta(self string) *crdtpb.CrdtDelta
	// MarshalBinary is Encode.
	MarshalBinary() ([]byte, error)

	impl() impl
}

// impl is what every type implements; the unexported methods work without pending deltas.
type impl interface {
	CRDT
	// join merges other (same kind) into the receiver.
	join(other impl)
	// apply returns the delta of op at ctx.node (nil for no change) without changing the
	// receiver; the caller joins it.
	apply(ctx *applyCtx, op *crdtpb.CrdtDelta) (impl, error)
	// copyState returns a deep copy without pending delta.
	copyState() impl
}

// applyCtx carries what an operation needs beyond the state.
type applyCtx struct {
	node string
	now  int64
	// gen, when set, issues the node's next dot counter of the outermost CRDT (an ORMap's values
	// draw their dots and vote versions from the map, so that a removed and re-created value
	// never reuses a dot).
	gen func() uint64
	// depth is the nesting level of the CRDT the operation applies to (1 at the top; values of
	// a top-level ORMap are at 2); bounded by MaxDepth, so that what Apply builds, Decode reads.
	depth int
	// naive applies the operation the way a user function applies it to its own copy (an LWW
	// write always replaces the value); used by Expected.
	naive bool
}

// New returns the empty CRDT of kind k, or nil if k is not valid.
func New(k Kind) CRDT {
	switch k {
	case KindGCounter:
		return NewGCounter()
	case KindPNCounter:
		return NewPNCounter()
	case KindGSet:
		return NewGSet()
	case KindORSet:
		return NewORSet()
	case KindLWWRegister:
		return NewLWWRegister()
	case KindFlag:
		return NewFlag()
	case KindORMap:
		return NewORMap()
	case KindVote:
		return NewVote()
	}
	return nil
}

// KindOf returns the kind of an operation delta; ErrInvalidOp if it has none.
func KindOf(op *crdtpb.CrdtDelta) (Kind, error) {
	switch op.GetDelta().(type) {
	case *crdtpb.CrdtDelta_Gcounter:
		return KindGCounter, nil
	case *crdtpb.CrdtDelta_Pncounter:
		return KindPNCounter, nil
	case *crdtpb.CrdtDelta_Gset:
		return KindGSet, nil
	case *crdtpb.CrdtDelta_Orset:
		return KindORSet, nil
	case *crdtpb.CrdtDelta_Lwwregister:
		return KindLWWRegister, nil
	case *crdtpb.CrdtDelta_Flag:
		return KindFlag, nil
	case *crdtpb.CrdtDelta_Ormap:
		return KindORMap, nil
	case *crdtpb.CrdtDelta_Vote:
		return KindVote, nil
	}
	return 0, fmt.Errorf("%w: no delta set", ErrInvalidOp)
}

// NewFromOp returns the empty CRDT of the kind of a new entity's first operation delta (the
// runtime then calls Apply with that operation).
func NewFromOp(op *crdtpb.CrdtDelta) (CRDT, error) {
	k, err := KindOf(op)
	if err != nil {
		return nil, err
	}
	return New(k), nil
}

// Expected returns a copy of c after op at node, as the user function sees it: it applies its
// own operations to its own copy without CRDT ordering (an LWW write replaces the value even
// if its clock loses; like Apply, it ignores an ORMap update of a key c does not have).
// ChangeDelta(expected, actual) is then the correction the user function must receive when
// the replicated state after Apply differs (an LWW write that lost). c is not changed.
func Expected(c CRDT, node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	cp := c.impl().copyState()
	d, err := cp.apply(&applyCtx{node: node, now: now, depth: 1, naive: true}, op)
	if err != nil {
		return nil, err
	}
	if d != nil {
		cp.join(d)
	}
	return cp, nil
}

func checkNode(node string) error {
	if node == "" || len(node) > MaxNodeIDLen {
		return fmt.Errorf("%w: %q", ErrInvalidNode, node)
	}
	return nil
}

func kindMismatch(want Kind, got Kind) error {
	return fmt.Errorf("%w: %s delta for a %s", ErrKindMismatch, got, want)
}

// opKindMismatch is the error for an operation delta of another kind than the CRDT.
func opKindMismatch(want Kind, op *crdtpb.CrdtDelta) error {
	got, err := KindOf(op)
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s operation for a %s", ErrKindMismatch, got, want)
}

// pending implements the pending-delta half of CRDT for every type.
type pending struct {
	delta impl
}

// Delta returns the merge of the replication deltas of the changes since the last ResetDelta,
// nil if there was none; the result is the caller's.
func (p *pending) Delta() CRDT {
	if p.delta == nil {
		return nil
	}
	return p.delta.copyState()
}

// ResetDelta forgets the pending delta (once it is published).
func (p *pending) ResetDelta() { p.delta = nil }

func (p *pending) add(d impl) {
	if d == nil {
		return
	}
	if p.delta == nil {
		p.delta = d.copyState()
		return
	}
	p.delta.join(d)
}

func (p *pending) clone() pending {
	if p.delta == nil {
		return pending{}
	}
	return pending{delta: p.delta.copyState()}
}

// doApply is the shared body of every type's Apply.
func doApply(c impl, p *pending, node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	d, err := c.apply(&applyCtx{node: node, now: now, depth: 1}, op)
	if err != nil || d == nil {
		return nil, err
	}
	c.join(d)
	p.add(d)
	return d, nil
}

// doMerge is the shared body of every type's Merge.
func doMerge(c impl, other CRDT) error {
	if other == nil {
		return nil
	}
	if other.Kind() != c.Kind() {
		return kindMismatch(c.Kind(), other.Kind())
	}
	if o := other.impl(); o != c {
		c.join(o)
	}
	return nil
}

// equal compares canonical encodings: equal states encode to equal bytes.
func equal(a impl, b CRDT) bool {
	if b == nil || a.Kind() != b.Kind() {
		return false
	}
	return string(encodeImpl(a)) == string(encodeImpl(b.impl()))
}
