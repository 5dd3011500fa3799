package crdtlog_test

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// seedStates are valid states of every kind, built deterministically.
func seedStates(t testing.TB) []crdtlog.CRDT {
	mk := func(k crdtlog.Kind, node string, ops ...*crdtpb.CrdtDelta) crdtlog.CRDT {
		c := crdtlog.New(k)
		for _, o := range ops {
			if _, err := c.Apply(node, o, now); err != nil {
				t.Fatalf("seed: %v", err)
			}
		}
		return c
	}
	nested := op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{
		entry("c", pn(-3)),
		entry("s", orset(false, nil, elems("x", "y"))),
		entry("r", lww("v", crdtpb.CrdtClock_CUSTOM, 3)),
		entry("v", op(&crdtpb.VoteDelta{SelfVote: true})),
		entry("m", op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry("f", flagOp(true))}})),
	}})
	m := mk(crdtlog.KindORMap, "node-a", nested)
	other := mk(crdtlog.KindORMap, "node-b", nested, op(&crdtpb.ORMapDelta{Removed: elems("c")}))
	if err := m.Merge(other); err != nil {
		t.Fatal(err)
	}
	set := mk(crdtlog.KindORSet, "node-a", orset(false, nil, elems("a", "b", "c")), orset(false, elems("b"), nil))
	if err := set.Merge(mk(crdtlog.KindORSet, "node-c", orset(false, nil, elems("b")))); err != nil {
		t.Fatal(err)
	}
	return []crdtlog.CRDT{
		mk(crdtlog.KindGCounter, "node-a", gc(5)),
		mk(crdtlog.KindPNCounter, "node-a", pn(5), pn(-7)),
		mk(crdtlog.KindGSet, "node-a", op(&crdtpb.GSetDelta{Added: elems("a", "b")})),
		set,
		mk(crdtlog.KindLWWRegister, "node-a", lww("v", crdtpb.CrdtClock_DEFAULT, 0)),
		crdtlog.NewLWWRegister(),
		mk(crdtlog.KindFlag, "node-a", flagOp(true)),
		m,
		mk(crdtlog.KindVote, "node-a", op(&crdtpb.VoteDelta{SelfVote: true})),
	}
}

// hostile are encodings Decode must reject.
func hostile() [][]byte {
	enc := func(st *kstatev1.CrdtState) []byte {
		b, err := proto.Marshal(st)
		if err != nil {
			panic(err)
		}
		return b
	}
	deep := &kstatev1.CrdtState{State: &kstatev1.CrdtState_Flag{Flag: &kstatev1.FlagState{}}}
	for range crdtlog.MaxDepth {
		deep = &kstatev1.CrdtState{State: &kstatev1.CrdtState_Ormap{Ormap: &kstatev1.ORMapState{
			Entries: []*kstatev1.ORMapEntry{{Key: elem("k"), Values: []*kstatev1.ORMapValue{{
				Dot: &kstatev1.CrdtDot{Node: "n", Counter: 1}, Value: deep}}}},
			Context: &kstatev1.CausalContext{Versions: []*kstatev1.NodeCount{{Node: "n", Count: 1}}},
		}}}
	}
	return [][]byte{
		nil,
		{0xff, 0xff, 0xff},
		enc(deep),
		// a dot outside the causal context
		enc(&kstatev1.CrdtState{State: &kstatev1.CrdtState_Orset{Orset: &kstatev1.ORSetState{
			Elements: []*kstatev1.ORSetElement{{Value: elem("x"), Dots: []*kstatev1.CrdtDot{{Node: "n", Counter: 2}}}},
			Context:  &kstatev1.CausalContext{Versions: []*kstatev1.NodeCount{{Node: "n", Count: 1}}},
		}}}),
		// one node twice
		enc(&kstatev1.CrdtState{State: &kstatev1.CrdtState_Gcounter{Gcounter: &kstatev1.GCounterState{
			Counts: []*kstatev1.NodeCount{{Node: "n", Count: 1}, {Node: "n", Count: 2}}}}}),
		// an empty node id
		enc(&kstatev1.CrdtState{State: &kstatev1.CrdtState_Vote{Vote: &kstatev1.VoteState{
			Votes: []*kstatev1.VoteEntry{{Node: "", Version: 1, Vote: true}}}}}),
		// a written register without a node
		enc(&kstatev1.CrdtState{State: &kstatev1.CrdtState_Lwwregister{Lwwregister: &kstatev1.LWWRegisterState{Value: elem("x"), Clock: 1}}}),
		// no state at all
		enc(&kstatev1.CrdtState{}),
	}
}

func TestDecodeRejects(t *testing.T) {
	for i, b := range hostile() {
		if c, err := crdtlog.Decode(b); !errors.Is(err, crdtlog.ErrDecode) {
			t.Errorf("hostile input %d: got %v, %v; want ErrDecode", i, c, err)
		}
	}
	if _, err := crdtlog.Decode(make([]byte, crdtlog.MaxEncodedSize+1)); !errors.Is(err, crdtlog.ErrDecode) {
		t.Errorf("oversized input: %v", err)
	}
}

// FuzzDecode: Decode never panics; what it accepts re-encodes canonically and survives the
// whole API (merge, operations, protocol deltas).
func FuzzDecode(f *testing.F) {
	for _, s := range seedStates(f) {
		b, err := crdtlog.Encode(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range hostile() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := crdtlog.Decode(b)
		if err != nil {
			if !errors.Is(err, crdtlog.ErrDecode) {
				t.Fatalf("error %v does not wrap ErrDecode", err)
			}
			return
		}
		enc, err := crdtlog.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := crdtlog.Decode(enc)
		if err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if !again.Equal(c) {
			t.Fatalf("re-encoding changed the state")
		}
		if enc2, _ := crdtlog.Encode(again); string(enc2) != string(enc) {
			t.Fatalf("encoding not canonical")
		}
		// The rest of the API must not panic on an accepted state.
		m := crdtlog.New(c.Kind())
		if err := m.Merge(c); err != nil || !m.Equal(c) {
			t.Fatalf("merge into empty: %v", err)
		}
		if err := m.Merge(c); err != nil || !m.Equal(c) {
			t.Fatalf("merge not idempotent: %v", err)
		}
		_ = c.InitDelta("node-a")
		if _, err := crdtlog.ChangeDelta(crdtlog.New(c.Kind()), c, "node-a"); err != nil && !errors.Is(err, crdtlog.ErrIllegalChange) {
			t.Fatalf("ChangeDelta: %v", err)
		}
		for _, o := range fuzzOps(c.Kind()) {
			_, _ = crdtlog.Expected(c, "node-a", o, now)
			_, _ = c.Apply("node-a", o, now)
		}
	})
}

func fuzzOps(k crdtlog.Kind) []*crdtpb.CrdtDelta {
	switch k {
	case crdtlog.KindGCounter:
		return []*crdtpb.CrdtDelta{gc(1)}
	case crdtlog.KindPNCounter:
		return []*crdtpb.CrdtDelta{pn(-1)}
	case crdtlog.KindGSet:
		return []*crdtpb.CrdtDelta{op(&crdtpb.GSetDelta{Added: elems("x")})}
	case crdtlog.KindORSet:
		return []*crdtpb.CrdtDelta{orset(true, elems("x"), elems("y"))}
	case crdtlog.KindLWWRegister:
		return []*crdtpb.CrdtDelta{lww("x", crdtpb.CrdtClock_CUSTOM_AUTO_INCREMENT, 1)}
	case crdtlog.KindFlag:
		return []*crdtpb.CrdtDelta{flagOp(true)}
	case crdtlog.KindVote:
		return []*crdtpb.CrdtDelta{op(&crdtpb.VoteDelta{SelfVote: true})}
	case crdtlog.KindORMap:
		return []*crdtpb.CrdtDelta{op(&crdtpb.ORMapDelta{
			Updated: []*crdtpb.ORMapEntryDelta{entry("k", gc(1)), entry("m", op(&crdtpb.ORMapDelta{Cleared: true}))},
			Added:   []*crdtpb.ORMapEntryDelta{entry("n", pn(1))},
		}), op(&crdtpb.ORMapDelta{Cleared: true})}
	}
	return nil
}

// deepMapOp nests ORMap updates n levels deep.
func deepMapOp(n int) *crdtpb.CrdtDelta {
	d := gc(1)
	for range n {
		d = op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry("k", d)}})
	}
	return d
}

func TestApplyBoundsNesting(t *testing.T) {
	m := crdtlog.NewORMap()
	if _, err := m.Apply("node-a", deepMapOp(crdtlog.MaxDepth-1), now); err != nil {
		t.Fatalf("nesting at the limit: %v", err)
	}
	enc, err := crdtlog.Encode(m)
	must(t, err)
	if _, err := crdtlog.Decode(enc); err != nil {
		t.Fatalf("a state at the nesting limit does not decode: %v", err)
	}
	if _, err := crdtlog.NewORMap().Apply("node-a", deepMapOp(crdtlog.MaxDepth), now); !errors.Is(err, crdtlog.ErrIllegalChange) {
		t.Fatalf("nesting past the limit: %v, want ErrIllegalChange", err)
	}
}

// FuzzApply: an operation delta from a user function (untrusted) never panics, and whatever
// Apply accepts leaves a state, and a delta, that encode and decode back to themselves.
func FuzzApply(f *testing.F) {
	for _, k := range kinds {
		for _, o := range fuzzOps(k) {
			b, err := proto.Marshal(o)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for _, o := range []*crdtpb.CrdtDelta{deepMapOp(crdtlog.MaxDepth + 2), lww("x", 7, 0), flagOp(false), pn(math.MinInt64)} {
		b, _ := proto.Marshal(o)
		f.Add(b)
	}
	seeds := seedStates(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var o crdtpb.CrdtDelta
		if proto.Unmarshal(b, &o) != nil {
			return
		}
		k, err := crdtlog.KindOf(&o)
		if err != nil {
			return
		}
		states := []crdtlog.CRDT{crdtlog.New(k)}
		for _, s := range seeds {
			if s.Kind() == k {
				states = append(states, s.Clone())
			}
		}
		for _, s := range states {
			before := s.Clone()
			_, _ = crdtlog.Expected(s, "node-b", &o, now)
			d, err := s.Apply("node-b", &o, now)
			if err != nil {
				if !s.Equal(before) {
					t.Fatalf("a rejected operation changed the state: %v", err)
				}
				continue
			}
			for _, c := range []crdtlog.CRDT{s, d} {
				if c == nil {
					continue
				}
				enc, err := crdtlog.Encode(c)
				if errors.Is(err, crdtlog.ErrTooLarge) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := crdtlog.Decode(enc)
				if err != nil {
					t.Fatalf("Apply built a state Decode rejects: %v", err)
				}
				if !got.Equal(c) {
					t.Fatalf("round trip changed the state")
				}
			}
			_, _ = crdtlog.ChangeDelta(before, s, "node-b")
		}
	})
}
