package crdtlog

import (
	"fmt"
	"maps"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// GSet is a grow-only set of protobuf Anys (identity: see the package doc). Merge is union.
type GSet struct {
	elems map[string]*anypb.Any
	pending
}

// NewGSet returns an empty GSet.
func NewGSet() *GSet { return &GSet{elems: map[string]*anypb.Any{}} }

// Kind is KindGSet.
func (*GSet) Kind() Kind { return KindGSet }

// Len is the number of elements.
func (s *GSet) Len() int { return len(s.elems) }

// Contains reports whether e is an element.
func (s *GSet) Contains(e *anypb.Any) bool { _, ok := s.elems[elementID(e)]; return ok }

// Elements returns copies of the elements in identity order.
func (s *GSet) Elements() []*anypb.Any { return sortedAnys(s.elems) }

// Merge joins a GSet state or delta.
func (s *GSet) Merge(other CRDT) error { return doMerge(s, other) }

// Apply applies a GSetDelta.
func (s *GSet) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(s, &s.pending, node, op, now)
}

// Clone returns a deep copy.
func (s *GSet) Clone() CRDT {
	c := s.copyState().(*GSet)
	c.pending = s.pending.clone()
	return c
}

// Equal reports whether other is a GSet with the same elements.
func (s *GSet) Equal(other CRDT) bool { return equal(s, other) }

// InitDelta is a GSetDelta adding every element.
func (s *GSet) InitDelta(string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gset{Gset: &crdtpb.GSetDelta{Added: s.Elements()}}}
}

// MarshalBinary is Encode.
func (s *GSet) MarshalBinary() ([]byte, error) { return Encode(s) }

func (s *GSet) impl() impl { return s }

func (s *GSet) join(o impl) {
	for id, e := range o.(*GSet).elems {
		if _, ok := s.elems[id]; !ok {
			s.elems[id] = cloneAny(e)
		}
	}
}

func (s *GSet) apply(_ *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Gset)
	if !ok {
		return nil, opKindMismatch(KindGSet, op)
	}
	delta := NewGSet()
	for i, e := range d.Gset.GetAdded() {
		if e == nil {
			return nil, fmt.Errorf("%w: GSetDelta.added[%d] is null", ErrInvalidOp, i)
		}
		if id := elementID(e); s.elems[id] == nil {
			delta.elems[id] = cloneAny(e)
		}
	}
	if len(delta.elems) == 0 {
		return nil, nil
	}
	return delta, nil
}

func (s *GSet) copyState() impl {
	c := NewGSet()
	for id, e := range s.elems {
		c.elems[id] = cloneAny(e)
	}
	return c
}

// ORSet is an add-wins observed-remove set of protobuf Anys. Every add of an element at a node
// issues a new dot (node, counter); an element is present while one of its dots is live. A
// remove (or clear) removes only the dots the removing replica has observed, so an add
// concurrent with a remove wins. The causal context records every dot seen, which is how a
// merge tells "removed" from "not yet seen".
type ORSet struct {
	elems map[string]*orElem
	owner map[dot]string // the element of every live dot
	cc    causalContext
	pending
}

type orElem struct {
	value *anypb.Any
	dots  dotSet
}

func (e *orElem) clone() *orElem {
	return &orElem{value: cloneAny(e.value), dots: maps.Clone(e.dots)}
}

// NewORSet returns an empty ORSet.
func NewORSet() *ORSet {
	return &ORSet{elems: map[string]*orElem{}, owner: map[dot]string{}, cc: newContext()}
}

// reindex rebuilds owner from elems.
func (s *ORSet) reindex() {
	s.owner = map[dot]string{}
	for id, e := range s.elems {
		for d := range e.dots {
			s.owner[d] = id
		}
	}
}

func (s *ORSet) drop(d dot, id string) {
	delete(s.owner, d)
	if e := s.elems[id]; e != nil {
		delete(e.dots, d)
		if len(e.dots) == 0 {
			delete(s.elems, id)
		}
	}
}

// Kind is KindORSet.
func (*ORSet) Kind() Kind { return KindORSet }

// Len is the number of elements.
func (s *ORSet) Len() int { return len(s.elems) }

// Contains reports whether e is an element.
func (s *ORSet) Contains(e *anypb.Any) bool { _, ok := s.elems[elementID(e)]; return ok }

// Elements returns copies of the elements in identity order.
func (s *ORSet) Elements() []*anypb.Any {
	m := make(map[string]*anypb.Any, len(s.elems))
	for id, e := range s.elems {
		m[id] = e.value
	}
	return sortedAnys(m)
}

// Merge joins an ORSet state or delta.
func (s *ORSet) Merge(other CRDT) error { return doMerge(s, other) }

// Apply applies an ORSetDelta: cleared, then removed, then added.
func (s *ORSet) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(s, &s.pending, node, op, now)
}

// Clone returns a deep copy.
func (s *ORSet) Clone() CRDT {
	c := s.copyState().(*ORSet)
	c.pending = s.pending.clone()
	return c
}

// Equal reports whether other is an ORSet with the same elements, dots and causal context.
func (s *ORSet) Equal(other CRDT) bool { return equal(s, other) }

// InitDelta is an ORSetDelta adding every element.
func (s *ORSet) InitDelta(string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{Added: s.Elements()}}}
}

// MarshalBinary is Encode.
func (s *ORSet) MarshalBinary() ([]byte, error) { return Encode(s) }

func (s *ORSet) impl() impl { return s }

// join is the dot-store join: a dot survives if both sides have it, or if one side has it and
// the other has not seen it. Its cost follows the size of o (a delta) when o's context is small,
// the size of the receiver otherwise.
func (s *ORSet) join(o impl) {
	os := o.(*ORSet)
	if ds, ok := os.cc.dotsIfSmall(smallContext(len(s.owner))); ok {
		for _, d := range ds {
			if id, live := s.owner[d]; live {
				if _, kept := os.owner[d]; !kept {
					s.drop(d, id)
				}
			}
		}
	} else {
		for d, id := range s.owner {
			if _, kept := os.owner[d]; !kept && os.cc.contains(d) {
				s.drop(d, id)
			}
		}
	}
	for id, oe := range os.elems {
		for d := range oe.dots {
			if _, live := s.owner[d]; live || s.cc.contains(d) {
				continue
			}
			e := s.elems[id]
			if e == nil {
				e = &orElem{value: cloneAny(oe.value), dots: dotSet{}}
				s.elems[id] = e
			}
			e.dots[d] = struct{}{}
			s.owner[d] = id
		}
	}
	s.cc.join(&os.cc)
}

func has(s dotSet, d dot) bool { _, ok := s[d]; return ok }

func (s *ORSet) apply(ctx *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Orset)
	if !ok {
		return nil, opKindMismatch(KindORSet, op)
	}
	o := d.Orset
	for i, e := range o.GetRemoved() {
		if e == nil {
			return nil, fmt.Errorf("%w: ORSetDelta.removed[%d] is null", ErrInvalidOp, i)
		}
	}
	for i, e := range o.GetAdded() {
		if e == nil {
			return nil, fmt.Errorf("%w: ORSetDelta.added[%d] is null", ErrInvalidOp, i)
		}
	}
	gen := ctx.gen
	var own *dotGen
	if gen == nil {
		own = &dotGen{node: ctx.node, last: s.cc.max(ctx.node)}
		if err := own.check(); err != nil {
			return nil, err
		}
		gen = own.next
	}
	delta := NewORSet()
	changed := false
	removeObserved := func(id string) {
		if e, ok := s.elems[id]; ok {
			for dt := range e.dots {
				if !delta.cc.contains(dt) {
					changed = true
				}
				delta.cc.add(dt)
			}
		}
		delete(delta.elems, id)
	}
	if o.GetCleared() {
		for id := range s.elems {
			removeObserved(id)
		}
	}
	for _, e := range o.GetRemoved() {
		removeObserved(elementID(e))
	}
	for _, e := range o.GetAdded() {
		id := elementID(e)
		if _, ok := delta.elems[id]; ok {
			continue // added twice by this operation
		}
		// A new dot even for a present element: the add then wins over a concurrent remove
		// that observed the old dots.
		removeObserved(id)
		dt := dot{ctx.node, gen()}
		delta.cc.add(dt)
		delta.elems[id] = &orElem{value: cloneAny(e), dots: dotSet{dt: {}}}
		changed = true
	}
	if own != nil {
		own.record(&delta.cc)
	}
	if !changed {
		return nil, nil
	}
	delta.reindex()
	return delta, nil
}

func (s *ORSet) copyState() impl {
	c := &ORSet{elems: make(map[string]*orElem, len(s.elems)), owner: maps.Clone(s.owner), cc: s.cc.clone()}
	for id, e := range s.elems {
		c.elems[id] = e.clone()
	}
	return c
}
