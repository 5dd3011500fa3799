package crdtlog

import (
	"fmt"
	"maps"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// ORMap is an add-wins observed-remove map from protobuf Any keys (identity: see the package
// doc) to CRDT values of any kind.
//
// Each entry holds the values contributed under its live dots; the entry's value is their
// merge. A change to an entry at a node issues a new dot whose value is that node's whole
// contribution so far merged with the change's nested delta (the node's older dots of the
// entry are retired), so an entry has about one dot per writing node and a nested delta
// travels as a small state. A remove (or clear) retires only the dots it observed: an update
// concurrent with a remove wins and keeps the updating node's contribution, and a key removed
// and added again starts from the empty value. Nested values draw their dots and vote versions
// from the map's causal context, so a re-created value never reuses one.
//
// If two nodes concurrently create one key with values of different kinds, the kind with the
// higher Kind number is the entry's kind (deterministic on every replica) and the other
// contributions are ignored.
type ORMap struct {
	entries map[string]*mapEntry
	owner   map[dot]string // the entry of every live dot
	cc      causalContext
	pending
}

type mapEntry struct {
	key    *anypb.Any
	values map[dot]impl
}

func (e *mapEntry) clone() *mapEntry {
	c := &mapEntry{key: cloneAny(e.key), values: make(map[dot]impl, len(e.values))}
	for d, v := range e.values {
		c.values[d] = v.copyState()
	}
	return c
}

// kind is the entry's kind: the highest among its values.
func (e *mapEntry) kind() Kind {
	var k Kind
	for _, v := range e.values {
		k = max(k, v.Kind())
	}
	return k
}

// value merges the values of the entry's kind (a new CRDT).
func (e *mapEntry) value() impl {
	k := e.kind()
	out := New(k).impl()
	for _, v := range e.values {
		if v.Kind() == k {
			out.join(v)
		}
	}
	return out
}

// NewORMap returns an empty ORMap.
func NewORMap() *ORMap {
	return &ORMap{entries: map[string]*mapEntry{}, owner: map[dot]string{}, cc: newContext()}
}

// reindex rebuilds owner from entries.
func (m *ORMap) reindex() {
	m.owner = map[dot]string{}
	for id, e := range m.entries {
		for d := range e.values {
			m.owner[d] = id
		}
	}
}

func (m *ORMap) drop(d dot, id string) {
	delete(m.owner, d)
	if e := m.entries[id]; e != nil {
		delete(e.values, d)
		if len(e.values) == 0 {
			delete(m.entries, id)
		}
	}
}

// Kind is KindORMap.
func (*ORMap) Kind() Kind { return KindORMap }

// Len is the number of entries.
func (m *ORMap) Len() int { return len(m.entries) }

// Contains reports whether key has an entry.
func (m *ORMap) Contains(key *anypb.Any) bool { _, ok := m.entries[elementID(key)]; return ok }

// Keys returns copies of the keys in identity order.
func (m *ORMap) Keys() []*anypb.Any {
	ks := make(map[string]*anypb.Any, len(m.entries))
	for id, e := range m.entries {
		ks[id] = e.key
	}
	return sortedAnys(ks)
}

// Get returns a copy of key's value, nil if key has no entry. Changing the copy changes
// nothing in the map: change an entry with Apply.
func (m *ORMap) Get(key *anypb.Any) CRDT {
	e, ok := m.entries[elementID(key)]
	if !ok {
		return nil
	}
	return e.value()
}

// Merge joins an ORMap state or delta.
func (m *ORMap) Merge(other CRDT) error { return doMerge(m, other) }

// Apply applies an ORMapDelta: cleared, then removed, then updated, then added. An update of a
// key that has no entry is ignored (the key was removed; ChangeDelta tells the user function).
// An added key that exists already is updated with the entry delta. An entry delta of another
// kind than the entry's value fails with ErrKindMismatch.
func (m *ORMap) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(m, &m.pending, node, op, now)
}

// Clone returns a deep copy.
func (m *ORMap) Clone() CRDT {
	c := m.copyState().(*ORMap)
	c.pending = m.pending.clone()
	return c
}

// Equal reports whether other is an ORMap with the same entries, dots and causal context.
func (m *ORMap) Equal(other CRDT) bool { return equal(m, other) }

// InitDelta is an ORMapDelta adding every entry with its value's InitDelta.
func (m *ORMap) InitDelta(self string) *crdtpb.CrdtDelta {
	d := &crdtpb.ORMapDelta{}
	for _, id := range sortedKeys(m.entries) {
		e := m.entries[id]
		d.Added = append(d.Added, &crdtpb.ORMapEntryDelta{Key: cloneAny(e.key), Delta: e.value().InitDelta(self)})
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: d}}
}

// MarshalBinary is Encode.
func (m *ORMap) MarshalBinary() ([]byte, error) { return Encode(m) }

func (m *ORMap) impl() impl { return m }

// joinValue merges two values of one dot: the higher kind wins, equal kinds merge. (A dot is
// issued once, so both sides normally hold the same value.)
func joinValue(a, b impl) impl {
	switch {
	case a.Kind() > b.Kind():
		return a
	case a.Kind() < b.Kind():
		return b.copyState()
	}
	a.join(b)
	return a
}

func (m *ORMap) join(o impl) {
	om := o.(*ORMap)
	if ds, ok := om.cc.dotsIfSmall(smallContext(len(m.owner))); ok {
		for _, d := range ds {
			if id, live := m.owner[d]; live {
				if _, kept := om.owner[d]; !kept {
					m.drop(d, id)
				}
			}
		}
	} else {
		for d, id := range m.owner {
			if _, kept := om.owner[d]; !kept && om.cc.contains(d) {
				m.drop(d, id)
			}
		}
	}
	for id, oe := range om.entries {
		for d, ov := range oe.values {
			if mid, live := m.owner[d]; live {
				if mid == id {
					e := m.entries[id]
					e.values[d] = joinValue(e.values[d], ov)
				}
				continue
			}
			if m.cc.contains(d) {
				continue
			}
			e := m.entries[id]
			if e == nil {
				e = &mapEntry{key: cloneAny(oe.key), values: map[dot]impl{}}
				m.entries[id] = e
			}
			e.values[d] = ov.copyState()
			m.owner[d] = id
		}
	}
	m.cc.join(&om.cc)
}

// work is an entry being changed by one operation.
type work struct {
	key     *anypb.Any
	kind    Kind
	visible impl   // the entry's value so far
	own     impl   // the node's contribution so far
	retire  dotSet // existing dots the new dot replaces
	changed bool
}

func (m *ORMap) apply(ctx *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Ormap)
	if !ok {
		return nil, opKindMismatch(KindORMap, op)
	}
	o := d.Ormap
	var own *dotGen
	nested := *ctx
	if ctx.gen == nil {
		own = &dotGen{node: ctx.node, last: m.cc.max(ctx.node)}
		if err := own.check(); err != nil {
			return nil, err
		}
		nested.gen = own.next
	}
	nested.depth = ctx.depth + 1
	delta := NewORMap()
	gone := map[string]bool{}
	changed := false
	remove := func(id string) {
		e, ok := m.entries[id]
		if !ok || gone[id] {
			return
		}
		gone[id] = true
		for dt := range e.values {
			delta.cc.add(dt)
		}
		changed = true
	}
	if o.GetCleared() {
		for id := range m.entries {
			remove(id)
		}
	}
	for i, k := range o.GetRemoved() {
		if k == nil {
			return nil, fmt.Errorf("%w: ORMapDelta.removed[%d] is null", ErrInvalidOp, i)
		}
		remove(elementID(k))
	}
	works := map[string]*work{}
	var order []string
	entry := func(field string, i int, ed *crdtpb.ORMapEntryDelta, add bool) error {
		if ed.GetKey() == nil || ed.GetDelta() == nil {
			return fmt.Errorf("%w: ORMapDelta.%s[%d] has no key or no delta", ErrInvalidOp, field, i)
		}
		kind, err := KindOf(ed.GetDelta())
		if err != nil {
			return fmt.Errorf("ORMapDelta.%s[%d]: %w", field, i, err)
		}
		if nested.depth > MaxDepth {
			return fmt.Errorf("%w: ORMapDelta.%s[%d]: values nested deeper than %d levels", ErrIllegalChange, field, i, MaxDepth)
		}
		id := elementID(ed.GetKey())
		w := works[id]
		if w == nil {
			if e, ok := m.entries[id]; ok && !gone[id] {
				w = &work{key: e.key, kind: e.kind(), visible: e.value(), own: New(e.kind()).impl(), retire: dotSet{}}
				for dt, v := range e.values {
					if ctx.naive || dt.Node == ctx.node {
						w.retire[dt] = struct{}{}
						if v.Kind() == w.kind {
							w.own.join(v)
						}
					}
				}
				if ctx.naive {
					w.own = w.visible.copyState()
				}
			} else if add {
				w = &work{key: ed.GetKey(), kind: kind, visible: New(kind).impl(), own: New(kind).impl(), retire: dotSet{}, changed: true}
			} else {
				return nil // an update of a removed key
			}
			works[id] = w
			order = append(order, id)
		}
		if w.kind != kind {
			return fmt.Errorf("%w: ORMapDelta.%s[%d]: %s delta for a %s value", ErrKindMismatch, field, i, kind, w.kind)
		}
		nd, err := w.visible.apply(&nested, ed.GetDelta())
		if err != nil {
			return fmt.Errorf("ORMapDelta.%s[%d]: %w", field, i, err)
		}
		if nd != nil {
			w.visible.join(nd)
			w.own.join(nd)
			w.changed = true
		}
		return nil
	}
	for i, ed := range o.GetUpdated() {
		if err := entry("updated", i, ed, false); err != nil {
			return nil, err
		}
	}
	for i, ed := range o.GetAdded() {
		if err := entry("added", i, ed, true); err != nil {
			return nil, err
		}
	}
	for _, id := range order {
		w := works[id]
		if !w.changed {
			continue
		}
		changed = true
		dt := dot{ctx.node, nested.gen()}
		delta.cc.add(dt)
		for r := range w.retire {
			delta.cc.add(r)
		}
		delta.entries[id] = &mapEntry{key: cloneAny(w.key), values: map[dot]impl{dt: w.own}}
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

func (m *ORMap) copyState() impl {
	c := &ORMap{entries: make(map[string]*mapEntry, len(m.entries)), owner: maps.Clone(m.owner), cc: m.cc.clone()}
	for id, e := range m.entries {
		c.entries[id] = e.clone()
	}
	return c
}
