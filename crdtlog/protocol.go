package crdtlog

import (
	"fmt"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// ChangeDelta returns the protocol delta that takes a user function from the value of before
// to the value of after (both of one kind), or nil when the values are the same: what the
// runtime sends in CrdtStreamIn.delta after merging remote deltas (before: the state the user
// function knows; after: the merged state), and the correction after Apply (before: Expected).
// self is the user function's node (a Vote's self_vote).
//
// Per kind: GCounter increment = after - before; PNCounter change = after - before; GSet the
// added elements; ORSet removed and added elements, or cleared (plus every element when that
// is shorter); LWWRegister the new value; Flag true; ORMap cleared, removed keys, updated
// entries with their nested change and added entries with their value's InitDelta (an entry
// whose value cannot be changed into the new one, such as a counter that went down after a
// concurrent remove, is removed and added); Vote self_vote, votes_for and total_voters.
//
// A nil before is the empty CRDT of after's kind. It fails with ErrKindMismatch for CRDTs of
// different kinds and with ErrIllegalChange for a change the protocol cannot express (a
// GCounter or GSet that shrank, a Flag disabled, an LWW register emptied).
func ChangeDelta(before, after CRDT, self string) (*crdtpb.CrdtDelta, error) {
	if before == nil {
		before = New(after.Kind())
	}
	if before.Kind() != after.Kind() {
		return nil, fmt.Errorf("%w: change from a %s to a %s", ErrKindMismatch, before.Kind(), after.Kind())
	}
	switch a := after.(type) {
	case *GCounter:
		b, av := before.(*GCounter).Value(), a.Value()
		switch {
		case av < b:
			return nil, fmt.Errorf("%w: GCounter went down from %d to %d", ErrIllegalChange, b, av)
		case av == b:
			return nil, nil
		}
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: av - b}}}, nil
	case *PNCounter:
		b, av := before.(*PNCounter).Value(), a.Value()
		if av == b {
			return nil, nil
		}
		if (av > b && av-b < 0) || (av < b && av-b > 0) {
			return nil, fmt.Errorf("%w: PNCounter change from %d to %d overflows int64", ErrIllegalChange, b, av)
		}
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: &crdtpb.PNCounterDelta{Change: av - b}}}, nil
	case *GSet:
		b := before.(*GSet)
		for id := range b.elems {
			if _, ok := a.elems[id]; !ok {
				return nil, fmt.Errorf("%w: GSet lost an element", ErrIllegalChange)
			}
		}
		ids := diff(a.elems, b.elems)
		if len(ids) == 0 {
			return nil, nil
		}
		added := make([]*anypb.Any, len(ids))
		for i, id := range ids {
			added[i] = cloneAny(a.elems[id])
		}
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gset{Gset: &crdtpb.GSetDelta{Added: added}}}, nil
	case *ORSet:
		return orsetChange(before.(*ORSet), a), nil
	case *LWWRegister:
		b := before.(*LWWRegister)
		switch {
		case a.value == nil && b.value != nil:
			return nil, fmt.Errorf("%w: LWWRegister emptied", ErrIllegalChange)
		case a.value == nil || b.value != nil && elementID(a.value) == elementID(b.value):
			return nil, nil
		}
		return a.InitDelta(self), nil
	case *Flag:
		b := before.(*Flag)
		switch {
		case b.enabled && !a.enabled:
			return nil, fmt.Errorf("%w: Flag disabled", ErrIllegalChange)
		case b.enabled == a.enabled:
			return nil, nil
		}
		return a.InitDelta(self), nil
	case *ORMap:
		return ormapChange(before.(*ORMap), a, self), nil
	case *Vote:
		bs, bf, bt := before.(*Vote).Counts(self)
		as, af, at := a.Counts(self)
		if bs == as && bf == af && bt == at {
			return nil, nil
		}
		return voteDelta(as, af, at), nil
	}
	return nil, fmt.Errorf("%w: unknown CRDT %T", ErrKindMismatch, after)
}

// diff returns the keys of a not in b, in order.
func diff[V any](a, b map[string]V) []string {
	var out []string
	for _, id := range sortedKeys(a) {
		if _, ok := b[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

func orsetChange(b, a *ORSet) *crdtpb.CrdtDelta {
	removed, added := diff(b.elems, a.elems), diff(a.elems, b.elems)
	if len(removed) == 0 && len(added) == 0 {
		return nil
	}
	d := &crdtpb.ORSetDelta{}
	if len(a.elems) == 0 || len(removed)+len(added) > len(a.elems) {
		// Clearing and listing every element is shorter (or the set is now empty).
		d.Cleared = true
		d.Added = a.Elements()
	} else {
		for _, id := range removed {
			d.Removed = append(d.Removed, cloneAny(b.elems[id].value))
		}
		for _, id := range added {
			d.Added = append(d.Added, cloneAny(a.elems[id].value))
		}
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: d}}
}

func ormapChange(b, a *ORMap, self string) *crdtpb.CrdtDelta {
	d := &crdtpb.ORMapDelta{}
	if len(a.entries) == 0 {
		if len(b.entries) == 0 {
			return nil
		}
		d.Cleared = true
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: d}}
	}
	for _, id := range diff(b.entries, a.entries) {
		d.Removed = append(d.Removed, cloneAny(b.entries[id].key))
	}
	for _, id := range sortedKeys(a.entries) {
		ae := a.entries[id]
		av := ae.value()
		be, ok := b.entries[id]
		if !ok {
			d.Added = append(d.Added, &crdtpb.ORMapEntryDelta{Key: cloneAny(ae.key), Delta: av.InitDelta(self)})
			continue
		}
		nd, err := ChangeDelta(be.value(), av, self)
		switch {
		case err != nil:
			// Not expressible as a change (another kind, or a counter that went down after a
			// concurrent remove): the user function drops the old value and takes the new.
			d.Removed = append(d.Removed, cloneAny(ae.key))
			d.Added = append(d.Added, &crdtpb.ORMapEntryDelta{Key: cloneAny(ae.key), Delta: av.InitDelta(self)})
		case nd != nil:
			d.Updated = append(d.Updated, &crdtpb.ORMapEntryDelta{Key: cloneAny(ae.key), Delta: nd})
		}
	}
	if len(d.Removed) == 0 && len(d.Updated) == 0 && len(d.Added) == 0 {
		return nil
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: d}}
}
