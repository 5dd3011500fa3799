package crdtlog

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// Limits for decoding untrusted records.
const (
	// MaxEncodedSize bounds an encoded state or delta, in bytes.
	MaxEncodedSize = 16 << 20
	// MaxDepth bounds the nesting of ORMaps: a top-level CRDT is depth 1.
	MaxDepth = 8
)

// ErrTooLarge: an encoding would exceed MaxEncodedSize.
var ErrTooLarge = errors.New("crdtlog: encoded CRDT too large")

var marshal = proto.MarshalOptions{Deterministic: true}

// Encode returns the canonical binary encoding of a full state or a replication delta: a
// kstate.v1.CrdtState with every repeated field sorted. Equal CRDTs encode to equal bytes. The
// pending delta is not encoded.
func Encode(c CRDT) ([]byte, error) {
	b := encodeImpl(c.impl())
	if len(b) > MaxEncodedSize {
		return nil, fmt.Errorf("%w: %s of %d bytes (limit %d)", ErrTooLarge, c.Kind(), len(b), MaxEncodedSize)
	}
	return b, nil
}

func encodeImpl(c impl) []byte {
	b, err := marshal.Marshal(toProto(c))
	if err != nil {
		panic(fmt.Sprintf("crdtlog: marshal: %v", err)) // only valid messages are built
	}
	return b
}

// Decode parses and validates an encoding written by Encode (or any equivalent encoder),
// typically a Kafka record value, which is untrusted: it fails with an error wrapping ErrDecode,
// never panics, for oversized input, malformed protobuf, invalid node ids, duplicates, dots
// outside the causal context, nesting deeper than MaxDepth and other broken invariants.
func Decode(b []byte) (CRDT, error) {
	if len(b) > MaxEncodedSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrDecode, len(b), MaxEncodedSize)
	}
	var st kstatev1.CrdtState
	if err := (proto.UnmarshalOptions{RecursionLimit: 8 * MaxDepth}).Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	return FromProto(&st)
}

// ToProto returns the canonical message of a state or delta (what Encode marshals).
func ToProto(c CRDT) *kstatev1.CrdtState { return toProto(c.impl()) }

// FromProto validates a message as Decode does and returns its CRDT.
func FromProto(st *kstatev1.CrdtState) (CRDT, error) {
	c, err := fromProto(st, 1)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func decodeErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDecode, fmt.Sprintf(format, args...))
}

// ---- to protobuf

func toProto(c impl) *kstatev1.CrdtState {
	switch c := c.(type) {
	case *GCounter:
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Gcounter{Gcounter: gcounterProto(c)}}
	case *PNCounter:
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Pncounter{Pncounter: &kstatev1.PNCounterState{
			Increments: gcounterProto(c.inc), Decrements: gcounterProto(c.dec)}}}
	case *GSet:
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Gset{Gset: &kstatev1.GSetState{Elements: sortedAnys(c.elems)}}}
	case *ORSet:
		s := &kstatev1.ORSetState{Context: contextProto(&c.cc)}
		for _, id := range sortedKeys(c.elems) {
			e := c.elems[id]
			s.Elements = append(s.Elements, &kstatev1.ORSetElement{Value: cloneAny(e.value), Dots: dotsProto(sortedDots(e.dots))})
		}
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Orset{Orset: s}}
	case *LWWRegister:
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Lwwregister{Lwwregister: &kstatev1.LWWRegisterState{
			Value: cloneAny(c.value), Clock: c.clock, Node: c.node}}}
	case *Flag:
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Flag{Flag: &kstatev1.FlagState{Enabled: c.enabled}}}
	case *ORMap:
		s := &kstatev1.ORMapState{Context: contextProto(&c.cc)}
		for _, id := range sortedKeys(c.entries) {
			e := c.entries[id]
			pe := &kstatev1.ORMapEntry{Key: cloneAny(e.key)}
			ds := make(dotSet, len(e.values))
			for d := range e.values {
				ds[d] = struct{}{}
			}
			for _, d := range sortedDots(ds) {
				pe.Values = append(pe.Values, &kstatev1.ORMapValue{Dot: dotProto(d), Value: toProto(e.values[d])})
			}
			s.Entries = append(s.Entries, pe)
		}
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Ormap{Ormap: s}}
	case *Vote:
		s := &kstatev1.VoteState{}
		for _, n := range sortedKeys(c.votes) {
			e := c.votes[n]
			s.Votes = append(s.Votes, &kstatev1.VoteEntry{Node: n, Version: e.version, Vote: e.vote})
		}
		s.Removed = nodeCounts(c.removed)
		return &kstatev1.CrdtState{State: &kstatev1.CrdtState_Vote{Vote: s}}
	}
	panic(fmt.Sprintf("crdtlog: unknown CRDT %T", c))
}

func nodeCounts(m map[string]uint64) []*kstatev1.NodeCount {
	var out []*kstatev1.NodeCount
	for _, n := range sortedKeys(m) {
		if m[n] != 0 {
			out = append(out, &kstatev1.NodeCount{Node: n, Count: m[n]})
		}
	}
	return out
}

func gcounterProto(g *GCounter) *kstatev1.GCounterState {
	return &kstatev1.GCounterState{Counts: nodeCounts(g.counts)}
}

func dotProto(d dot) *kstatev1.CrdtDot { return &kstatev1.CrdtDot{Node: d.Node, Counter: d.Counter} }

func dotsProto(ds []dot) []*kstatev1.CrdtDot {
	out := make([]*kstatev1.CrdtDot, len(ds))
	for i, d := range ds {
		out[i] = dotProto(d)
	}
	return out
}

func contextProto(c *causalContext) *kstatev1.CausalContext {
	return &kstatev1.CausalContext{Versions: nodeCounts(c.vv), Cloud: dotsProto(c.sortedCloud())}
}

// sortedAnys returns copies of m's values in key order.
func sortedAnys(m map[string]*anypb.Any) []*anypb.Any {
	out := make([]*anypb.Any, 0, len(m))
	for _, id := range sortedKeys(m) {
		out = append(out, cloneAny(m[id]))
	}
	return out
}

// ---- from protobuf, validating

func fromProto(st *kstatev1.CrdtState, depth int) (impl, error) {
	if depth > MaxDepth {
		return nil, decodeErr("nesting deeper than %d", MaxDepth)
	}
	switch s := st.GetState().(type) {
	case *kstatev1.CrdtState_Gcounter:
		return gcounterFrom(s.Gcounter, "GCounter")
	case *kstatev1.CrdtState_Pncounter:
		inc, err := gcounterFrom(s.Pncounter.GetIncrements(), "PNCounter increments")
		if err != nil {
			return nil, err
		}
		dec, err := gcounterFrom(s.Pncounter.GetDecrements(), "PNCounter decrements")
		if err != nil {
			return nil, err
		}
		return &PNCounter{inc: inc, dec: dec}, nil
	case *kstatev1.CrdtState_Gset:
		g := NewGSet()
		for i, e := range s.Gset.GetElements() {
			id := elementID(e)
			if _, dup := g.elems[id]; dup {
				return nil, decodeErr("GSet element %d is a duplicate", i)
			}
			g.elems[id] = cloneAny(e)
		}
		return g, nil
	case *kstatev1.CrdtState_Orset:
		return orsetFrom(s.Orset)
	case *kstatev1.CrdtState_Lwwregister:
		l := s.Lwwregister
		if l.GetValue() == nil {
			if l.GetClock() != 0 || l.GetNode() != "" {
				return nil, decodeErr("empty LWWRegister with a clock or node")
			}
			return NewLWWRegister(), nil
		}
		if err := checkNode(l.GetNode()); err != nil {
			return nil, decodeErr("LWWRegister: %v", err)
		}
		return &LWWRegister{value: cloneAny(l.GetValue()), clock: l.GetClock(), node: l.GetNode()}, nil
	case *kstatev1.CrdtState_Flag:
		return &Flag{enabled: s.Flag.GetEnabled()}, nil
	case *kstatev1.CrdtState_Ormap:
		return ormapFrom(s.Ormap, depth)
	case *kstatev1.CrdtState_Vote:
		return voteFrom(s.Vote)
	}
	return nil, decodeErr("no CRDT state set (or an unknown type)")
}

func countsFrom(ncs []*kstatev1.NodeCount, what string) (map[string]uint64, error) {
	m := make(map[string]uint64, len(ncs))
	for _, nc := range ncs {
		if err := checkNode(nc.GetNode()); err != nil {
			return nil, decodeErr("%s: %v", what, err)
		}
		if nc.GetCount() == 0 {
			return nil, decodeErr("%s: zero count for node %q", what, nc.GetNode())
		}
		if _, dup := m[nc.GetNode()]; dup {
			return nil, decodeErr("%s: node %q twice", what, nc.GetNode())
		}
		m[nc.GetNode()] = nc.GetCount()
	}
	return m, nil
}

func gcounterFrom(s *kstatev1.GCounterState, what string) (*GCounter, error) {
	m, err := countsFrom(s.GetCounts(), what)
	if err != nil {
		return nil, err
	}
	return &GCounter{counts: m}, nil
}

func dotFrom(p *kstatev1.CrdtDot, what string) (dot, error) {
	if err := checkNode(p.GetNode()); err != nil {
		return dot{}, decodeErr("%s: %v", what, err)
	}
	if p.GetCounter() == 0 {
		return dot{}, decodeErr("%s: dot counter 0", what)
	}
	return dot{p.GetNode(), p.GetCounter()}, nil
}

func contextFrom(p *kstatev1.CausalContext, what string) (causalContext, error) {
	vv, err := countsFrom(p.GetVersions(), what+" context")
	if err != nil {
		return causalContext{}, err
	}
	c := causalContext{vv: vv, cloud: map[dot]struct{}{}}
	for _, pd := range p.GetCloud() {
		d, err := dotFrom(pd, what+" context cloud")
		if err != nil {
			return causalContext{}, err
		}
		if c.contains(d) {
			return causalContext{}, decodeErr("%s context: cloud dot %v is covered or repeated", what, d)
		}
		c.cloud[d] = struct{}{}
	}
	for n := range c.vv {
		c.compactNode(n)
	}
	// A cloud dot right after its node's version is compacted away above; that input was not
	// canonical but means the same set, so it is accepted.
	return c, nil
}

func orsetFrom(p *kstatev1.ORSetState) (*ORSet, error) {
	cc, err := contextFrom(p.GetContext(), "ORSet")
	if err != nil {
		return nil, err
	}
	s := &ORSet{elems: map[string]*orElem{}, owner: map[dot]string{}, cc: cc}
	seen := dotSet{}
	for i, pe := range p.GetElements() {
		if pe.GetValue() == nil {
			return nil, decodeErr("ORSet element %d has no value", i)
		}
		id := elementID(pe.GetValue())
		if _, dup := s.elems[id]; dup {
			return nil, decodeErr("ORSet element %d is a duplicate", i)
		}
		if len(pe.GetDots()) == 0 {
			return nil, decodeErr("ORSet element %d has no dots", i)
		}
		e := &orElem{value: cloneAny(pe.GetValue()), dots: dotSet{}}
		for _, pd := range pe.GetDots() {
			d, err := dotFrom(pd, "ORSet element")
			if err != nil {
				return nil, err
			}
			if has(seen, d) {
				return nil, decodeErr("ORSet dot %v used twice", d)
			}
			if !cc.contains(d) {
				return nil, decodeErr("ORSet dot %v outside the causal context", d)
			}
			seen[d] = struct{}{}
			e.dots[d] = struct{}{}
			s.owner[d] = id
		}
		s.elems[id] = e
	}
	return s, nil
}

func ormapFrom(p *kstatev1.ORMapState, depth int) (*ORMap, error) {
	cc, err := contextFrom(p.GetContext(), "ORMap")
	if err != nil {
		return nil, err
	}
	m := &ORMap{entries: map[string]*mapEntry{}, owner: map[dot]string{}, cc: cc}
	seen := dotSet{}
	for i, pe := range p.GetEntries() {
		if pe.GetKey() == nil {
			return nil, decodeErr("ORMap entry %d has no key", i)
		}
		id := elementID(pe.GetKey())
		if _, dup := m.entries[id]; dup {
			return nil, decodeErr("ORMap entry %d is a duplicate key", i)
		}
		if len(pe.GetValues()) == 0 {
			return nil, decodeErr("ORMap entry %d has no values", i)
		}
		e := &mapEntry{key: cloneAny(pe.GetKey()), values: map[dot]impl{}}
		for _, pv := range pe.GetValues() {
			d, err := dotFrom(pv.GetDot(), "ORMap entry")
			if err != nil {
				return nil, err
			}
			if has(seen, d) {
				return nil, decodeErr("ORMap dot %v used twice", d)
			}
			if !cc.contains(d) {
				return nil, decodeErr("ORMap dot %v outside the causal context", d)
			}
			seen[d] = struct{}{}
			v, err := fromProto(pv.GetValue(), depth+1)
			if err != nil {
				return nil, err
			}
			e.values[d] = v
			m.owner[d] = id
		}
		m.entries[id] = e
	}
	return m, nil
}

func voteFrom(p *kstatev1.VoteState) (*Vote, error) {
	removed, err := countsFrom(p.GetRemoved(), "Vote removed")
	if err != nil {
		return nil, err
	}
	v := &Vote{votes: map[string]voteEntry{}, removed: removed}
	for _, pe := range p.GetVotes() {
		if err := checkNode(pe.GetNode()); err != nil {
			return nil, decodeErr("Vote: %v", err)
		}
		if _, dup := v.votes[pe.GetNode()]; dup {
			return nil, decodeErr("Vote: node %q twice", pe.GetNode())
		}
		if pe.GetVersion() <= removed[pe.GetNode()] {
			return nil, decodeErr("Vote: node %q's version %d is removed", pe.GetNode(), pe.GetVersion())
		}
		v.votes[pe.GetNode()] = voteEntry{version: pe.GetVersion(), vote: pe.GetVote()}
	}
	return v, nil
}
