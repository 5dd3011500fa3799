package sdk

import (
	"fmt"
	"iter"
	"maps"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// CRDT is the state of a CRDT entity, or a value of an ORMap: one of *GCounter, *PNCounter,
// *GSet[E], *ORSet[E], *LWWRegister[T], *Flag, *ORMap[K, V] and *Vote. The set is closed (the
// interface has unexported methods only).
//
// A CRDT value is the user function's view of the entity's replicated state: what the proxy
// told it (CrdtInit.delta and every CrdtDelta since), plus the changes of the commands it
// served. Its methods read that view and record changes; the SDK sends a command's changes to
// the proxy as one operation delta (CrdtStateAction.update) and the proxy merges them into the
// replicated state.
//
// A CRDT is owned by its entity's session: use it only inside the handler or callback that
// got it from its context's State, on the handler's goroutine. Changing it elsewhere fails
// with ErrReadOnly.
type CRDT interface {
	crdtValue
}

// crdtValue is what every CRDT type implements. The methods marked "nil receiver" work on a
// nil pointer of the type: the SDK calls them on the zero value of a type parameter.
type crdtValue interface {
	// kind is the CRDT's protocol type.
	kind() crdtlog.Kind
	// newEmpty returns a new empty CRDT of the same type (nil receiver).
	newEmpty() crdtValue
	// check reports a type that cannot be used, such as an interface element type (nil receiver).
	check() error
	// messageTypes lists the message types the CRDT holds, for discovery (nil receiver).
	messageTypes() []protoreflect.MessageType
	// clone returns a deep copy, pending delta and txn included.
	clone() crdtValue
	// restore makes the receiver a copy of saved (a clone of the receiver), in place.
	restore(saved crdtValue)
	// attach makes t the txn of the CRDT and of its values.
	attach(t *txn)
	// initNew prepares a value an ORMap creates in a handler (nothing, except for registers).
	initNew()
	// applyDelta applies a change from the proxy to the view; it does not add to the pending delta.
	applyDelta(d *crdtpb.CrdtDelta) error
	// hasDelta reports whether the handlers changed the CRDT since the last resetDelta.
	hasDelta() bool
	// delta returns the pending changes as an operation delta.
	delta() *crdtpb.CrdtDelta
	// resetDelta forgets the pending changes.
	resetDelta()
	// full returns the view as a delta from the empty CRDT (what CrdtInit.delta would carry).
	full() *crdtpb.CrdtDelta
}

// txnMode says what a CRDT tree's current user code may do with it.
type txnMode int

const (
	// modeDetached: no handler is running; changes fail.
	modeDetached txnMode = iota
	// modeWritable: a command or cancel handler is running; changes are recorded.
	modeWritable
	// modeReadOnly: an OnChange callback is running; changes fail the callback.
	modeReadOnly
)

// txn is shared by a CRDT entity's state and its nested values. It knows whether user code may
// change the state right now, keeps a copy of the state from before the running handler's first
// change (so that a failed handler leaves no trace), and collects the first error of a change,
// which fails the handler.
type txn struct {
	mode  txnMode
	root  crdtValue
	saved crdtValue // the root before the handler's first change; nil until then
	err   error
}

// write is called by every change before it modifies anything. It returns an error when the
// change is not allowed now, and records it as the handler's failure.
func (t *txn) write(what string) error {
	if t == nil {
		return nil
	}
	switch t.mode {
	case modeWritable:
		if t.saved == nil {
			t.saved = t.root.clone()
		}
		return nil
	case modeReadOnly:
		return t.fail(fmt.Errorf("%s: %w: an OnChange callback may not change the CRDT", what, ErrReadOnly))
	}
	return fmt.Errorf("%s: %w: the CRDT was used outside of its handler", what, ErrReadOnly)
}

// fail records err as the running handler's failure (the first one wins) and returns it.
func (t *txn) fail(err error) error {
	if t != nil && t.mode != modeDetached && t.err == nil {
		t.err = err
	}
	return err
}

// begin starts a handler in mode m.
func (t *txn) begin(m txnMode) {
	t.mode, t.saved, t.err = m, nil, nil
}

// rollback undoes every change since begin.
func (t *txn) rollback() {
	if t.saved != nil {
		t.root.restore(t.saved)
		t.root.attach(t)
	}
	t.root.resetDelta()
	t.saved = nil
}

// end finishes the handler: nothing may change the CRDT until the next begin.
func (t *txn) end() {
	t.mode, t.saved, t.err = modeDetached, nil, nil
}

// codec converts messages of type M to and from the Any elements, keys and values CRDTs hold.
// For M = *anypb.Any, elements are taken as they are.
type codec[M proto.Message] struct {
	typ   protoreflect.MessageType
	isAny bool
}

var anyName = (&anypb.Any{}).ProtoReflect().Descriptor().FullName()

func newCodec[M proto.Message]() (codec[M], error) {
	typ, err := messageType[M]()
	if err != nil {
		return codec[M]{}, err
	}
	return codec[M]{typ: typ, isAny: typ.Descriptor().FullName() == anyName}, nil
}

// encode returns m as an Any (deterministic encoding, so that equal messages are equal elements).
func (c codec[M]) encode(m M) (*anypb.Any, error) {
	if !any(m).(proto.Message).ProtoReflect().IsValid() {
		return nil, ErrNilMessage
	}
	if c.isAny {
		a := any(m).(*anypb.Any)
		return &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: slices.Clone(a.GetValue())}, nil
	}
	return marshalAny(m)
}

// decode returns a fresh M decoded from a.
func (c codec[M]) decode(a *anypb.Any) (M, error) {
	if c.isAny {
		return any(&anypb.Any{TypeUrl: a.GetTypeUrl(), Value: slices.Clone(a.GetValue())}).(M), nil
	}
	var zero M
	if want := c.typ.Descriptor().FullName(); a.MessageName() != want {
		return zero, fmt.Errorf("%w: %q where %s was expected", ErrTypeMismatch, a.GetTypeUrl(), want)
	}
	m := c.typ.New().Interface()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return zero, fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	return m.(M), nil
}

// check validates an Any received from the proxy.
func (c codec[M]) check(a *anypb.Any) error {
	if a == nil {
		return fmt.Errorf("%w: a null element", ErrProtocol)
	}
	_, err := c.decode(a)
	return err
}

func elementID(a *anypb.Any) string { return string(crdtlog.ElementID(a)) }

func cloneAny(a *anypb.Any) *anypb.Any {
	if a == nil {
		return nil
	}
	return &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: slices.Clone(a.GetValue())}
}

// sortedAnys returns the values of m ordered by identity (as crdtlog orders them).
func sortedAnys(m map[string]*anypb.Any) []*anypb.Any {
	out := make([]*anypb.Any, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, cloneAny(m[id]))
	}
	return out
}

func kindMismatch(want crdtlog.Kind, d *crdtpb.CrdtDelta) error {
	got, err := crdtlog.KindOf(d)
	if err != nil {
		return fmt.Errorf("%w: an empty CRDT delta for a %s", ErrProtocol, want)
	}
	return fmt.Errorf("%w: a %s delta for a %s", ErrTypeMismatch, got, want)
}

// GCounter is a grow-only counter: its value only goes up.
type GCounter struct {
	t       *txn
	value   uint64
	pending uint64
}

// Value returns the counter's value.
func (c *GCounter) Value() uint64 { return c.value }

// Increment adds n to the counter. A negative n is an illegal change (a GCounter cannot go
// down; use a PNCounter), as is one that overflows the value: Increment returns an error
// wrapping ErrIllegalChange and the handler fails, whatever it returns.
func (c *GCounter) Increment(n int64) error {
	switch {
	case n < 0:
		return c.t.fail(fmt.Errorf("GCounter increment by %d: %w: a GCounter cannot be decremented", n, ErrIllegalChange))
	case n == 0:
		return nil
	case c.value > math.MaxUint64-uint64(n):
		return c.t.fail(fmt.Errorf("GCounter increment by %d: %w: the value %d would overflow", n, ErrIllegalChange, c.value))
	}
	if err := c.t.write("GCounter increment"); err != nil {
		return err
	}
	c.value += uint64(n)
	c.pending += uint64(n)
	return nil
}

func (*GCounter) kind() crdtlog.Kind                       { return crdtlog.KindGCounter }
func (*GCounter) newEmpty() crdtValue                      { return &GCounter{} }
func (*GCounter) check() error                             { return nil }
func (*GCounter) messageTypes() []protoreflect.MessageType { return nil }
func (c *GCounter) clone() crdtValue                       { cp := *c; return &cp }
func (c *GCounter) restore(s crdtValue)                    { *c = *s.(*GCounter) }
func (c *GCounter) attach(t *txn)                          { c.t = t }
func (*GCounter) initNew()                                 {}
func (c *GCounter) hasDelta() bool                         { return c.pending > 0 }
func (c *GCounter) resetDelta()                            { c.pending = 0 }

func (c *GCounter) applyDelta(d *crdtpb.CrdtDelta) error {
	g, ok := d.GetDelta().(*crdtpb.CrdtDelta_Gcounter)
	if !ok {
		return kindMismatch(crdtlog.KindGCounter, d)
	}
	inc := g.Gcounter.GetIncrement()
	if c.value > math.MaxUint64-inc {
		c.value = math.MaxUint64
		return nil
	}
	c.value += inc
	return nil
}

func (c *GCounter) delta() *crdtpb.CrdtDelta { return gcounterDelta(c.pending) }
func (c *GCounter) full() *crdtpb.CrdtDelta  { return gcounterDelta(c.value) }

func gcounterDelta(n uint64) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: n}}}
}

// PNCounter is a counter that goes up and down.
type PNCounter struct {
	t       *txn
	value   int64
	pending int64
}

// Value returns the counter's value.
func (c *PNCounter) Value() int64 { return c.value }

// Increment adds n (which may be negative) to the counter. A change that overflows int64 is an
// illegal change: Increment returns an error wrapping ErrIllegalChange and the handler fails.
func (c *PNCounter) Increment(n int64) error { return c.change("PNCounter increment", n) }

// Decrement subtracts n (which may be negative) from the counter, like Increment(-n).
func (c *PNCounter) Decrement(n int64) error {
	if n == math.MinInt64 {
		return c.t.fail(fmt.Errorf("PNCounter decrement by %d: %w: overflows int64", n, ErrIllegalChange))
	}
	return c.change("PNCounter decrement", -n)
}

func (c *PNCounter) change(what string, n int64) error {
	if n == 0 {
		return nil
	}
	v, ok1 := addInt64(c.value, n)
	d, ok2 := addInt64(c.pending, n)
	if !ok1 || !ok2 {
		return c.t.fail(fmt.Errorf("%s by %d: %w: the value %d would overflow int64", what, n, ErrIllegalChange, c.value))
	}
	if err := c.t.write(what); err != nil {
		return err
	}
	c.value, c.pending = v, d
	return nil
}

func addInt64(a, b int64) (int64, bool) {
	s := a + b
	return s, (b > 0 && s > a) || (b < 0 && s < a) || b == 0
}

func (*PNCounter) kind() crdtlog.Kind                       { return crdtlog.KindPNCounter }
func (*PNCounter) newEmpty() crdtValue                      { return &PNCounter{} }
func (*PNCounter) check() error                             { return nil }
func (*PNCounter) messageTypes() []protoreflect.MessageType { return nil }
func (c *PNCounter) clone() crdtValue                       { cp := *c; return &cp }
func (c *PNCounter) restore(s crdtValue)                    { *c = *s.(*PNCounter) }
func (c *PNCounter) attach(t *txn)                          { c.t = t }
func (*PNCounter) initNew()                                 {}
func (c *PNCounter) hasDelta() bool                         { return c.pending != 0 }
func (c *PNCounter) resetDelta()                            { c.pending = 0 }

func (c *PNCounter) applyDelta(d *crdtpb.CrdtDelta) error {
	p, ok := d.GetDelta().(*crdtpb.CrdtDelta_Pncounter)
	if !ok {
		return kindMismatch(crdtlog.KindPNCounter, d)
	}
	v, ok := addInt64(c.value, p.Pncounter.GetChange())
	if !ok {
		return fmt.Errorf("%w: PNCounter change %d overflows the value %d", ErrProtocol, p.Pncounter.GetChange(), c.value)
	}
	c.value = v
	return nil
}

func (c *PNCounter) delta() *crdtpb.CrdtDelta { return pncounterDelta(c.pending) }
func (c *PNCounter) full() *crdtpb.CrdtDelta  { return pncounterDelta(c.value) }

func pncounterDelta(n int64) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: &crdtpb.PNCounterDelta{Change: n}}}
}

// GSet is a grow-only set of messages of type E (a generated message pointer type, or
// *anypb.Any for elements of any type): elements can be added, never removed.
//
// Elements are identified by their type and their deterministic protobuf encoding, so two
// messages are the same element when they encode to the same bytes.
type GSet[E proto.Message] struct {
	t     *txn
	c     codec[E]
	elems map[string]*anypb.Any
	added map[string]*anypb.Any
}

func newGSet[E proto.Message]() *GSet[E] {
	c, _ := newCodec[E]()
	return &GSet[E]{c: c, elems: map[string]*anypb.Any{}, added: map[string]*anypb.Any{}}
}

// Len returns the number of elements.
func (s *GSet[E]) Len() int { return len(s.elems) }

// Contains reports whether e is an element.
func (s *GSet[E]) Contains(e E) bool {
	a, err := s.c.encode(e)
	if err != nil {
		return false
	}
	_, ok := s.elems[elementID(a)]
	return ok
}

// Elements returns the elements, each a fresh copy, in a stable order (by encoding).
func (s *GSet[E]) Elements() []E { return decodeAll(s.c, s.elems) }

// All iterates over the elements like Elements.
func (s *GSet[E]) All() iter.Seq[E] { return slices.Values(s.Elements()) }

// Add adds e to the set; adding an element that is already there changes nothing. It returns
// an error (and the handler fails) for a nil message or one that does not encode.
func (s *GSet[E]) Add(e E) error {
	a, err := s.c.encode(e)
	if err != nil {
		return s.t.fail(fmt.Errorf("GSet add: %w", err))
	}
	id := elementID(a)
	if _, ok := s.elems[id]; ok {
		return nil
	}
	if err := s.t.write("GSet add"); err != nil {
		return err
	}
	s.elems[id] = a
	s.added[id] = a
	return nil
}

func decodeAll[E proto.Message](c codec[E], m map[string]*anypb.Any) []E {
	out := make([]E, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		if e, err := c.decode(m[id]); err == nil { // every element was checked when it came in
			out = append(out, e)
		}
	}
	return out
}

func (*GSet[E]) kind() crdtlog.Kind  { return crdtlog.KindGSet }
func (*GSet[E]) newEmpty() crdtValue { return newGSet[E]() }
func (*GSet[E]) check() error {
	_, err := newCodec[E]()
	if err != nil {
		return fmt.Errorf("GSet element type: %w", err)
	}
	return nil
}
func (*GSet[E]) messageTypes() []protoreflect.MessageType { return codecTypes[E]() }
func (s *GSet[E]) clone() crdtValue {
	return &GSet[E]{t: s.t, c: s.c, elems: maps.Clone(s.elems), added: maps.Clone(s.added)}
}
func (s *GSet[E]) restore(saved crdtValue) { *s = *saved.(*GSet[E]) }
func (s *GSet[E]) attach(t *txn)           { s.t = t }
func (*GSet[E]) initNew()                  {}
func (s *GSet[E]) hasDelta() bool          { return len(s.added) > 0 }
func (s *GSet[E]) resetDelta()             { clear(s.added) }

func (s *GSet[E]) applyDelta(d *crdtpb.CrdtDelta) error {
	g, ok := d.GetDelta().(*crdtpb.CrdtDelta_Gset)
	if !ok {
		return kindMismatch(crdtlog.KindGSet, d)
	}
	for _, a := range g.Gset.GetAdded() {
		if err := s.c.check(a); err != nil {
			return fmt.Errorf("GSet element: %w", err)
		}
	}
	for _, a := range g.Gset.GetAdded() {
		s.elems[elementID(a)] = cloneAny(a)
	}
	return nil
}

func (s *GSet[E]) delta() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gset{Gset: &crdtpb.GSetDelta{Added: sortedAnys(s.added)}}}
}

func (s *GSet[E]) full() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gset{Gset: &crdtpb.GSetDelta{Added: sortedAnys(s.elems)}}}
}

func codecTypes[M proto.Message]() []protoreflect.MessageType {
	c, err := newCodec[M]()
	if err != nil || c.isAny {
		return nil
	}
	return []protoreflect.MessageType{c.typ}
}

// ORSet is an observed-remove set of messages of type E (a generated message pointer type, or
// *anypb.Any): elements can be added and removed. When one node removes an element while
// another adds it concurrently, the add wins. Element identity is as for GSet.
type ORSet[E proto.Message] struct {
	t       *txn
	c       codec[E]
	elems   map[string]*anypb.Any
	added   map[string]*anypb.Any // elements added by the pending changes
	removed map[string]*anypb.Any // elements of the view before the pending changes that they removed
	cleared bool
}

func newORSet[E proto.Message]() *ORSet[E] {
	c, _ := newCodec[E]()
	return &ORSet[E]{c: c, elems: map[string]*anypb.Any{}, added: map[string]*anypb.Any{}, removed: map[string]*anypb.Any{}}
}

// Len returns the number of elements.
func (s *ORSet[E]) Len() int { return len(s.elems) }

// Contains reports whether e is an element.
func (s *ORSet[E]) Contains(e E) bool {
	a, err := s.c.encode(e)
	if err != nil {
		return false
	}
	_, ok := s.elems[elementID(a)]
	return ok
}

// Elements returns the elements, each a fresh copy, in a stable order (by encoding).
func (s *ORSet[E]) Elements() []E { return decodeAll(s.c, s.elems) }

// All iterates over the elements like Elements.
func (s *ORSet[E]) All() iter.Seq[E] { return slices.Values(s.Elements()) }

// Add adds e to the set; adding an element that is there changes nothing. It returns an error
// (and the handler fails) for a nil message or one that does not encode.
func (s *ORSet[E]) Add(e E) error {
	a, err := s.c.encode(e)
	if err != nil {
		return s.t.fail(fmt.Errorf("ORSet add: %w", err))
	}
	id := elementID(a)
	if _, ok := s.elems[id]; ok {
		return nil
	}
	if err := s.t.write("ORSet add"); err != nil {
		return err
	}
	s.elems[id] = a
	if _, ok := s.removed[id]; ok {
		delete(s.removed, id) // removed and added back: no change
	} else {
		s.added[id] = a
	}
	return nil
}

// Remove removes e from the set; removing an element that is not there changes nothing. It
// returns an error (and the handler fails) for a nil message or one that does not encode.
// The remove removes the adds of e this node has seen, so an add of e made concurrently on
// another node wins. (Removing the last element does not clear the set: an element added
// concurrently elsewhere stays.)
func (s *ORSet[E]) Remove(e E) error {
	a, err := s.c.encode(e)
	if err != nil {
		return s.t.fail(fmt.Errorf("ORSet remove: %w", err))
	}
	id := elementID(a)
	if _, ok := s.elems[id]; !ok {
		return nil
	}
	if err := s.t.write("ORSet remove"); err != nil {
		return err
	}
	delete(s.elems, id)
	if s.added[id] != nil {
		delete(s.added, id) // added by the pending changes: nothing to remove
	} else {
		s.removed[id] = a
	}
	return nil
}

// Clear removes every element this node has seen, including elements added elsewhere that the
// proxy has merged but not yet told the entity about.
func (s *ORSet[E]) Clear() error {
	if err := s.t.write("ORSet clear"); err != nil {
		return err
	}
	s.clearAll()
	return nil
}

func (s *ORSet[E]) clearAll() {
	clear(s.elems)
	clear(s.added)
	clear(s.removed)
	s.cleared = true
}

func (*ORSet[E]) kind() crdtlog.Kind  { return crdtlog.KindORSet }
func (*ORSet[E]) newEmpty() crdtValue { return newORSet[E]() }
func (*ORSet[E]) check() error {
	if _, err := newCodec[E](); err != nil {
		return fmt.Errorf("ORSet element type: %w", err)
	}
	return nil
}
func (*ORSet[E]) messageTypes() []protoreflect.MessageType { return codecTypes[E]() }
func (s *ORSet[E]) clone() crdtValue {
	return &ORSet[E]{t: s.t, c: s.c, elems: maps.Clone(s.elems), added: maps.Clone(s.added), removed: maps.Clone(s.removed), cleared: s.cleared}
}
func (s *ORSet[E]) restore(saved crdtValue) { *s = *saved.(*ORSet[E]) }
func (s *ORSet[E]) attach(t *txn)           { s.t = t }
func (*ORSet[E]) initNew()                  {}
func (s *ORSet[E]) hasDelta() bool          { return s.cleared || len(s.added) > 0 || len(s.removed) > 0 }
func (s *ORSet[E]) resetDelta() {
	clear(s.added)
	clear(s.removed)
	s.cleared = false
}

func (s *ORSet[E]) applyDelta(d *crdtpb.CrdtDelta) error {
	o, ok := d.GetDelta().(*crdtpb.CrdtDelta_Orset)
	if !ok {
		return kindMismatch(crdtlog.KindORSet, d)
	}
	for _, a := range o.Orset.GetAdded() {
		if err := s.c.check(a); err != nil {
			return fmt.Errorf("ORSet element: %w", err)
		}
	}
	if o.Orset.GetCleared() {
		clear(s.elems)
	}
	for _, a := range o.Orset.GetRemoved() {
		delete(s.elems, elementID(a))
	}
	for _, a := range o.Orset.GetAdded() {
		s.elems[elementID(a)] = cloneAny(a)
	}
	return nil
}

func (s *ORSet[E]) delta() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{
		Cleared: s.cleared, Removed: sortedAnys(s.removed), Added: sortedAnys(s.added),
	}}}
}

func (s *ORSet[E]) full() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{Added: sortedAnys(s.elems)}}}
}

// Clock chooses how an LWWRegister write is ordered against concurrent writes (the protocol's
// CrdtClock). The write with the greatest clock wins.
type Clock int

const (
	// ClockDefault orders writes by the proxy's wall clock: the latest write wins.
	ClockDefault Clock = iota
	// ClockReverse orders writes by the negated wall clock: the first write wins.
	ClockReverse
	// ClockCustom orders writes by the value passed with the write.
	ClockCustom
	// ClockCustomAutoIncrement is ClockCustom, but the proxy raises the value past the
	// register's current clock when it is lower, so the write wins locally.
	ClockCustomAutoIncrement
)

func (c Clock) proto() (crdtpb.CrdtClock, bool) {
	switch c {
	case ClockDefault:
		return crdtpb.CrdtClock_DEFAULT, true
	case ClockReverse:
		return crdtpb.CrdtClock_REVERSE, true
	case ClockCustom:
		return crdtpb.CrdtClock_CUSTOM, true
	case ClockCustomAutoIncrement:
		return crdtpb.CrdtClock_CUSTOM_AUTO_INCREMENT, true
	}
	return 0, false
}

// LWWRegister is a last-write-wins register holding one message of type T (a generated
// message pointer type, or *anypb.Any). Concurrent writes are ordered by their clock (Clock).
//
// A register that was never written has no value. A register an ORMap creates (GetOrCreate)
// starts holding an empty T, since the protocol cannot create a register without a value.
type LWWRegister[T proto.Message] struct {
	t      *txn
	c      codec[T]
	value  *anypb.Any // nil: no value
	dirty  bool       // the pending changes wrote value
	clock  Clock
	custom int64
}

func newLWWRegister[T proto.Message]() *LWWRegister[T] {
	c, _ := newCodec[T]()
	return &LWWRegister[T]{c: c}
}

// HasValue reports whether the register holds a value.
func (r *LWWRegister[T]) HasValue() bool { return r.value != nil }

// Get returns a fresh copy of the register's value, or the zero T (a nil message pointer) when
// it has none.
func (r *LWWRegister[T]) Get() T {
	var zero T
	if r.value == nil {
		return zero
	}
	v, err := r.c.decode(r.value)
	if err != nil {
		return zero // the value was checked when it came in
	}
	return v
}

// Set writes v with ClockDefault.
func (r *LWWRegister[T]) Set(v T) error { return r.SetWithClock(v, ClockDefault, 0) }

// SetWithClock writes v with the given clock; customValue is the clock value of ClockCustom
// and ClockCustomAutoIncrement, and is ignored otherwise. Writing the value the register holds
// with the clock of the previous write in this handler (ClockDefault and 0 if there was none)
// changes nothing. It returns an error (and the handler fails) for a nil message, one that
// does not encode, or an unknown clock.
func (r *LWWRegister[T]) SetWithClock(v T, clock Clock, customValue int64) error {
	if _, ok := clock.proto(); !ok {
		return r.t.fail(fmt.Errorf("LWWRegister set: %w: unknown clock %d", ErrIllegalChange, int(clock)))
	}
	if clock != ClockCustom && clock != ClockCustomAutoIncrement {
		customValue = 0
	}
	a, err := r.c.encode(v)
	if err != nil {
		return r.t.fail(fmt.Errorf("LWWRegister set: %w", err))
	}
	if r.value != nil && elementID(a) == elementID(r.value) && clock == r.clock && customValue == r.custom {
		return nil
	}
	if err := r.t.write("LWWRegister set"); err != nil {
		return err
	}
	r.value, r.dirty, r.clock, r.custom = a, true, clock, customValue
	return nil
}

func (*LWWRegister[T]) kind() crdtlog.Kind  { return crdtlog.KindLWWRegister }
func (*LWWRegister[T]) newEmpty() crdtValue { return newLWWRegister[T]() }
func (*LWWRegister[T]) check() error {
	if _, err := newCodec[T](); err != nil {
		return fmt.Errorf("LWWRegister value type: %w", err)
	}
	return nil
}
func (*LWWRegister[T]) messageTypes() []protoreflect.MessageType { return codecTypes[T]() }
func (r *LWWRegister[T]) clone() crdtValue                       { cp := *r; return &cp }
func (r *LWWRegister[T]) restore(saved crdtValue)                { *r = *saved.(*LWWRegister[T]) }
func (r *LWWRegister[T]) attach(t *txn)                          { r.t = t }
func (r *LWWRegister[T]) hasDelta() bool                         { return r.dirty }
func (r *LWWRegister[T]) resetDelta()                            { r.dirty, r.clock, r.custom = false, ClockDefault, 0 }

// initNew gives a register created in a handler an empty value of its type.
func (r *LWWRegister[T]) initNew() {
	if r.value != nil {
		return
	}
	if r.c.isAny {
		r.value = &anypb.Any{}
	} else {
		r.value, _ = marshalAny(r.c.typ.New().Interface())
	}
	r.dirty = true
}

func (r *LWWRegister[T]) applyDelta(d *crdtpb.CrdtDelta) error {
	l, ok := d.GetDelta().(*crdtpb.CrdtDelta_Lwwregister)
	if !ok {
		return kindMismatch(crdtlog.KindLWWRegister, d)
	}
	v := l.Lwwregister.GetValue()
	if v == nil {
		return nil
	}
	if err := r.c.check(v); err != nil {
		return fmt.Errorf("LWWRegister value: %w", err)
	}
	r.value = cloneAny(v)
	return nil
}

func (r *LWWRegister[T]) delta() *crdtpb.CrdtDelta {
	clock, _ := r.clock.proto()
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: &crdtpb.LWWRegisterDelta{
		Value: cloneAny(r.value), Clock: clock, CustomClockValue: r.custom,
	}}}
}

func (r *LWWRegister[T]) full() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: &crdtpb.LWWRegisterDelta{Value: cloneAny(r.value)}}}
}

// Flag is a boolean that starts disabled and, once enabled, stays enabled.
type Flag struct {
	t       *txn
	enabled bool
	dirty   bool
}

// Enabled reports whether the flag is enabled.
func (f *Flag) Enabled() bool { return f.enabled }

// Enable enables the flag; enabling an enabled flag changes nothing. (A flag cannot be
// disabled: there is no method for it.)
func (f *Flag) Enable() error {
	if f.enabled {
		return nil
	}
	if err := f.t.write("Flag enable"); err != nil {
		return err
	}
	f.enabled, f.dirty = true, true
	return nil
}

func (*Flag) kind() crdtlog.Kind                       { return crdtlog.KindFlag }
func (*Flag) newEmpty() crdtValue                      { return &Flag{} }
func (*Flag) check() error                             { return nil }
func (*Flag) messageTypes() []protoreflect.MessageType { return nil }
func (f *Flag) clone() crdtValue                       { cp := *f; return &cp }
func (f *Flag) restore(s crdtValue)                    { *f = *s.(*Flag) }
func (f *Flag) attach(t *txn)                          { f.t = t }
func (*Flag) initNew()                                 {}
func (f *Flag) hasDelta() bool                         { return f.dirty }
func (f *Flag) resetDelta()                            { f.dirty = false }

// applyDelta enables the flag on a true delta; a false one changes nothing (a flag cannot be
// disabled, and the proxy never sends one for an enabled flag).
func (f *Flag) applyDelta(d *crdtpb.CrdtDelta) error {
	fd, ok := d.GetDelta().(*crdtpb.CrdtDelta_Flag)
	if !ok {
		return kindMismatch(crdtlog.KindFlag, d)
	}
	f.enabled = f.enabled || fd.Flag.GetValue()
	return nil
}

func (f *Flag) delta() *crdtpb.CrdtDelta { return flagDelta(f.enabled) }
func (f *Flag) full() *crdtpb.CrdtDelta  { return flagDelta(f.enabled) }

func flagDelta(v bool) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Flag{Flag: &crdtpb.FlagDelta{Value: v}}}
}

// Vote counts one vote per node of the application: each node that hosts the entity votes true
// or false, and the user function sees its own node's vote, the number of true votes and the
// number of voters. The proxy counts a node's vote as long as the node is alive, so it is the
// building block for presence: a node votes true while a client is connected through it.
//
// A Vote that the proxy has told nothing about counts one voter (this node) and no votes.
type Vote struct {
	t        *txn
	self     bool
	votesFor int32
	voters   int32
	dirty    bool // the pending changes flipped the self vote
}

func newVote() *Vote { return &Vote{voters: 1} }

// SelfVote returns this node's vote.
func (v *Vote) SelfVote() bool { return v.self }

// VotesFor returns the number of nodes that vote true.
func (v *Vote) VotesFor() int { return int(v.votesFor) }

// Voters returns the number of nodes that vote.
func (v *Vote) Voters() int { return int(v.voters) }

// AtLeastOne reports whether at least one node votes true.
func (v *Vote) AtLeastOne() bool { return v.votesFor > 0 }

// Majority reports whether more than half of the nodes vote true.
func (v *Vote) Majority() bool { return v.votesFor > v.voters/2 }

// All reports whether every node votes true.
func (v *Vote) All() bool { return v.voters > 0 && v.votesFor == v.voters }

// Vote sets this node's vote; voting as before changes nothing.
func (v *Vote) Vote(vote bool) error {
	if v.self == vote {
		return nil
	}
	if err := v.t.write("Vote"); err != nil {
		return err
	}
	v.self = vote
	v.dirty = !v.dirty
	if vote {
		v.votesFor++
	} else if v.votesFor > 0 {
		v.votesFor--
	}
	v.voters = max(v.voters, v.votesFor, 1)
	return nil
}

func (*Vote) kind() crdtlog.Kind                       { return crdtlog.KindVote }
func (*Vote) newEmpty() crdtValue                      { return newVote() }
func (*Vote) check() error                             { return nil }
func (*Vote) messageTypes() []protoreflect.MessageType { return nil }
func (v *Vote) clone() crdtValue                       { cp := *v; return &cp }
func (v *Vote) restore(s crdtValue)                    { *v = *s.(*Vote) }
func (v *Vote) attach(t *txn)                          { v.t = t }
func (*Vote) initNew()                                 {}
func (v *Vote) hasDelta() bool                         { return v.dirty }
func (v *Vote) resetDelta()                            { v.dirty = false }

func (v *Vote) applyDelta(d *crdtpb.CrdtDelta) error {
	vd, ok := d.GetDelta().(*crdtpb.CrdtDelta_Vote)
	if !ok {
		return kindMismatch(crdtlog.KindVote, d)
	}
	v.self, v.votesFor, v.voters = vd.Vote.GetSelfVote(), vd.Vote.GetVotesFor(), vd.Vote.GetTotalVoters()
	return nil
}

func (v *Vote) delta() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: v.self}}}
}

func (v *Vote) full() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{
		SelfVote: v.self, VotesFor: v.votesFor, TotalVoters: v.voters,
	}}}
}

// ORMap is an observed-remove map from keys of type K (a generated message pointer type, or
// *anypb.Any) to CRDT values of type V, such as *PNCounter or *ORSet[*itempb.Item]. Keys
// behave like ORSet elements (an update concurrent with a remove keeps the key); values are
// CRDTs that merge.
//
// V is normally one concrete CRDT type. With V = CRDT the map holds values of any type (sets,
// registers and maps with *anypb.Any elements, keys and values); such a map can read, remove
// and clear entries, but GetOrCreate cannot create one.
type ORMap[K proto.Message, V CRDT] struct {
	t       *txn
	c       codec[K]
	entries map[string]*mapEntry[V]
	added   map[string]bool       // keys the pending changes created
	removed map[string]*anypb.Any // keys of the view before the pending changes that they removed
	cleared bool
}

type mapEntry[V CRDT] struct {
	key   *anypb.Any
	value V
}

func newORMap[K proto.Message, V CRDT]() *ORMap[K, V] {
	c, _ := newCodec[K]()
	return &ORMap[K, V]{c: c, entries: map[string]*mapEntry[V]{}, added: map[string]bool{}, removed: map[string]*anypb.Any{}}
}

// Len returns the number of entries.
func (m *ORMap[K, V]) Len() int { return len(m.entries) }

// Contains reports whether key has an entry.
func (m *ORMap[K, V]) Contains(key K) bool {
	_, ok := m.lookup(key)
	return ok
}

func (m *ORMap[K, V]) lookup(key K) (*mapEntry[V], bool) {
	a, err := m.c.encode(key)
	if err != nil {
		return nil, false
	}
	e, ok := m.entries[elementID(a)]
	return e, ok
}

// Get returns the value of key and true, or the zero V and false when key has no entry. The
// value is the map's own: changing it changes the entry.
func (m *ORMap[K, V]) Get(key K) (V, bool) {
	e, ok := m.lookup(key)
	if !ok {
		var zero V
		return zero, false
	}
	return e.value, true
}

// GetOrCreate returns the value of key, creating an entry with an empty value when there is
// none (an LWWRegister value starts holding an empty message). The value is the map's own:
// changing it changes the entry. It returns an error (and the handler fails) for a key that
// does not encode, and when V is an interface type (ErrInvalidType).
func (m *ORMap[K, V]) GetOrCreate(key K) (V, error) {
	var zero V
	a, err := m.c.encode(key)
	if err != nil {
		return zero, m.t.fail(fmt.Errorf("ORMap get or create: %w", err))
	}
	id := elementID(a)
	if e, ok := m.entries[id]; ok {
		return e.value, nil
	}
	if any(zero) == nil {
		return zero, m.t.fail(fmt.Errorf("ORMap get or create: %w: the map's value type is an interface; use a concrete CRDT type such as *sdk.PNCounter", ErrInvalidType))
	}
	if err := m.t.write("ORMap get or create"); err != nil {
		return zero, err
	}
	v := zero.newEmpty().(V)
	v.attach(m.t)
	v.initNew()
	m.entries[id] = &mapEntry[V]{key: a, value: v}
	m.added[id] = true
	return v, nil
}

// Remove removes key's entry; removing a key that has none changes nothing. It returns an
// error (and the handler fails) for a key that does not encode.
func (m *ORMap[K, V]) Remove(key K) error {
	a, err := m.c.encode(key)
	if err != nil {
		return m.t.fail(fmt.Errorf("ORMap remove: %w", err))
	}
	id := elementID(a)
	if _, ok := m.entries[id]; !ok {
		return nil
	}
	if err := m.t.write("ORMap remove"); err != nil {
		return err
	}
	delete(m.entries, id)
	if m.added[id] {
		delete(m.added, id) // created by the pending changes: nothing to remove
		return nil
	}
	m.removed[id] = a
	return nil
}

// Clear removes every entry.
func (m *ORMap[K, V]) Clear() error {
	if err := m.t.write("ORMap clear"); err != nil {
		return err
	}
	clear(m.entries)
	clear(m.added)
	clear(m.removed)
	m.cleared = true
	return nil
}

// Keys returns the keys, each a fresh copy, in a stable order (by encoding).
func (m *ORMap[K, V]) Keys() []K {
	out := make([]K, 0, len(m.entries))
	for _, id := range slices.Sorted(maps.Keys(m.entries)) {
		if k, err := m.c.decode(m.entries[id].key); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// All iterates over the entries in the order of Keys. The values are the map's own.
func (m *ORMap[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		for _, id := range slices.Sorted(maps.Keys(m.entries)) {
			e := m.entries[id]
			if e == nil {
				continue // removed while iterating
			}
			k, err := m.c.decode(e.key)
			if err != nil {
				continue
			}
			if !yield(k, e.value) {
				return
			}
		}
	}
}

func (*ORMap[K, V]) kind() crdtlog.Kind  { return crdtlog.KindORMap }
func (*ORMap[K, V]) newEmpty() crdtValue { return newORMap[K, V]() }
func (*ORMap[K, V]) check() error {
	if _, err := newCodec[K](); err != nil {
		return fmt.Errorf("ORMap key type: %w", err)
	}
	var zero V
	if any(zero) == nil {
		return nil // values of any type
	}
	if err := zero.check(); err != nil {
		return fmt.Errorf("ORMap value: %w", err)
	}
	return nil
}

func (*ORMap[K, V]) messageTypes() []protoreflect.MessageType {
	types := codecTypes[K]()
	var zero V
	if any(zero) != nil {
		types = append(types, zero.messageTypes()...)
	}
	return types
}

func (m *ORMap[K, V]) clone() crdtValue {
	c := &ORMap[K, V]{t: m.t, c: m.c, entries: make(map[string]*mapEntry[V], len(m.entries)),
		added: maps.Clone(m.added), removed: maps.Clone(m.removed), cleared: m.cleared}
	for id, e := range m.entries {
		c.entries[id] = &mapEntry[V]{key: e.key, value: e.value.clone().(V)}
	}
	return c
}

func (m *ORMap[K, V]) restore(saved crdtValue) { *m = *saved.(*ORMap[K, V]) }

func (m *ORMap[K, V]) attach(t *txn) {
	m.t = t
	for _, e := range m.entries {
		e.value.attach(t)
	}
}

func (*ORMap[K, V]) initNew() {}

func (m *ORMap[K, V]) hasDelta() bool {
	if m.cleared || len(m.added) > 0 || len(m.removed) > 0 {
		return true
	}
	for _, e := range m.entries {
		if e.value.hasDelta() {
			return true
		}
	}
	return false
}

func (m *ORMap[K, V]) resetDelta() {
	clear(m.added)
	clear(m.removed)
	m.cleared = false
	for _, e := range m.entries {
		e.value.resetDelta()
	}
}

// newValue returns an empty value of kind k for an entry the proxy added.
func (m *ORMap[K, V]) newValue(k crdtlog.Kind) (V, error) {
	var zero V
	var v crdtValue
	if any(zero) == nil {
		v = newDynamic(k)
	} else if zero.kind() == k {
		v = zero.newEmpty()
	}
	if v == nil {
		return zero, fmt.Errorf("%w: an ORMap entry of type %s where %T was expected", ErrTypeMismatch, k, zero)
	}
	v.attach(m.t)
	return v.(V), nil
}

// newDynamic returns an empty CRDT of kind k with *anypb.Any elements, keys and values.
func newDynamic(k crdtlog.Kind) crdtValue {
	switch k {
	case crdtlog.KindGCounter:
		return &GCounter{}
	case crdtlog.KindPNCounter:
		return &PNCounter{}
	case crdtlog.KindGSet:
		return newGSet[*anypb.Any]()
	case crdtlog.KindORSet:
		return newORSet[*anypb.Any]()
	case crdtlog.KindLWWRegister:
		return newLWWRegister[*anypb.Any]()
	case crdtlog.KindFlag:
		return &Flag{}
	case crdtlog.KindORMap:
		return newORMap[*anypb.Any, CRDT]()
	case crdtlog.KindVote:
		return newVote()
	}
	return nil
}

func (m *ORMap[K, V]) applyDelta(d *crdtpb.CrdtDelta) error {
	o, ok := d.GetDelta().(*crdtpb.CrdtDelta_Ormap)
	if !ok {
		return kindMismatch(crdtlog.KindORMap, d)
	}
	od := o.Ormap
	if od.GetCleared() {
		clear(m.entries)
	}
	for _, k := range od.GetRemoved() {
		delete(m.entries, elementID(k))
	}
	for _, ed := range od.GetUpdated() {
		if ed.GetKey() == nil || ed.GetDelta() == nil {
			return fmt.Errorf("%w: an ORMap entry update without key or delta", ErrProtocol)
		}
		e, ok := m.entries[elementID(ed.GetKey())]
		if !ok {
			continue // the proxy updates only entries it told about; nothing to update
		}
		if err := e.value.applyDelta(ed.GetDelta()); err != nil {
			return fmt.Errorf("ORMap entry: %w", err)
		}
	}
	for _, ed := range od.GetAdded() {
		if ed.GetKey() == nil || ed.GetDelta() == nil {
			return fmt.Errorf("%w: an ORMap entry without key or delta", ErrProtocol)
		}
		if err := m.c.check(ed.GetKey()); err != nil {
			return fmt.Errorf("ORMap key: %w", err)
		}
		k, err := crdtlog.KindOf(ed.GetDelta())
		if err != nil {
			return fmt.Errorf("%w: an ORMap entry with an empty delta", ErrProtocol)
		}
		v, err := m.newValue(k)
		if err != nil {
			return err
		}
		if err := v.applyDelta(ed.GetDelta()); err != nil {
			return fmt.Errorf("ORMap entry: %w", err)
		}
		m.entries[elementID(ed.GetKey())] = &mapEntry[V]{key: cloneAny(ed.GetKey()), value: v}
	}
	return nil
}

func (m *ORMap[K, V]) delta() *crdtpb.CrdtDelta {
	od := &crdtpb.ORMapDelta{Cleared: m.cleared, Removed: sortedAnys(m.removed)}
	for _, id := range slices.Sorted(maps.Keys(m.entries)) {
		e := m.entries[id]
		switch {
		case m.added[id]:
			od.Added = append(od.Added, &crdtpb.ORMapEntryDelta{Key: cloneAny(e.key), Delta: e.value.delta()})
		case e.value.hasDelta():
			od.Updated = append(od.Updated, &crdtpb.ORMapEntryDelta{Key: cloneAny(e.key), Delta: e.value.delta()})
		}
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: od}}
}

func (m *ORMap[K, V]) full() *crdtpb.CrdtDelta {
	od := &crdtpb.ORMapDelta{}
	for _, id := range slices.Sorted(maps.Keys(m.entries)) {
		e := m.entries[id]
		od.Added = append(od.Added, &crdtpb.ORMapEntryDelta{Key: cloneAny(e.key), Delta: e.value.full()})
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: od}}
}
