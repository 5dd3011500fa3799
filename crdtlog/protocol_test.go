package crdtlog_test

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

const now = int64(1_700_000_000_000)

// build returns a new CRDT of kind k after ops applied at node-a.
func build(t *testing.T, k crdtlog.Kind, ops ...*crdtpb.CrdtDelta) crdtlog.CRDT {
	t.Helper()
	c := crdtlog.New(k)
	for _, o := range ops {
		if _, err := c.Apply("node-a", o, now); err != nil {
			t.Fatalf("setup %v: %v", o, err)
		}
	}
	return c
}

func entry(key string, d *crdtpb.CrdtDelta) *crdtpb.ORMapEntryDelta {
	return &crdtpb.ORMapEntryDelta{Key: elem(key), Delta: d}
}

func gc(n uint64) *crdtpb.CrdtDelta   { return op(&crdtpb.GCounterDelta{Increment: n}) }
func pn(n int64) *crdtpb.CrdtDelta    { return op(&crdtpb.PNCounterDelta{Change: n}) }
func flagOp(v bool) *crdtpb.CrdtDelta { return op(&crdtpb.FlagDelta{Value: v}) }
func lww(v string, c crdtpb.CrdtClock, custom int64) *crdtpb.CrdtDelta {
	return op(&crdtpb.LWWRegisterDelta{Value: elem(v), Clock: c, CustomClockValue: custom})
}
func orset(cleared bool, removed, added []*anypb.Any) *crdtpb.CrdtDelta {
	return op(&crdtpb.ORSetDelta{Cleared: cleared, Removed: removed, Added: added})
}
func elems(ss ...string) []*anypb.Any {
	out := make([]*anypb.Any, len(ss))
	for i, s := range ss {
		out[i] = elem(s)
	}
	return out
}

func TestApplyRejects(t *testing.T) {
	counterMap := func() *crdtpb.CrdtDelta {
		return op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry("k", gc(1)), entry("f", flagOp(true))}})
	}
	for _, c := range []struct {
		name  string
		kind  crdtlog.Kind
		setup []*crdtpb.CrdtDelta
		node  string
		op    *crdtpb.CrdtDelta
		want  error
	}{
		{"PNCounterDelta for a GCounter", crdtlog.KindGCounter, nil, "", pn(-1), crdtlog.ErrKindMismatch},
		{"GCounterDelta for a PNCounter", crdtlog.KindPNCounter, nil, "", gc(1), crdtlog.ErrKindMismatch},
		{"ORSetDelta for a GSet", crdtlog.KindGSet, nil, "", orset(false, nil, elems("x")), crdtlog.ErrKindMismatch},
		{"VoteDelta for a Flag", crdtlog.KindFlag, nil, "", op(&crdtpb.VoteDelta{SelfVote: true}), crdtlog.ErrKindMismatch},
		{"Flag disabled", crdtlog.KindFlag, []*crdtpb.CrdtDelta{flagOp(true)}, "", flagOp(false), crdtlog.ErrIllegalChange},
		{"GCounter overflow", crdtlog.KindGCounter, []*crdtpb.CrdtDelta{gc(math.MaxUint64)}, "", gc(1), crdtlog.ErrIllegalChange},
		{"PNCounter overflow", crdtlog.KindPNCounter, []*crdtpb.CrdtDelta{pn(math.MinInt64)}, "", pn(math.MinInt64), crdtlog.ErrIllegalChange},
		{"empty delta", crdtlog.KindGCounter, nil, "", &crdtpb.CrdtDelta{}, crdtlog.ErrInvalidOp},
		{"nil delta", crdtlog.KindORSet, nil, "", nil, crdtlog.ErrInvalidOp},
		{"unknown LWW clock", crdtlog.KindLWWRegister, nil, "", lww("x", 9, 0), crdtlog.ErrInvalidOp},
		{"null ORSet element", crdtlog.KindORSet, nil, "", orset(false, nil, []*anypb.Any{nil}), crdtlog.ErrInvalidOp},
		{"empty node id", crdtlog.KindGCounter, nil, "-", gc(1), crdtlog.ErrInvalidNode},
		{"ORMap entry without key", crdtlog.KindORMap, nil, "",
			op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{{Delta: gc(1)}}}), crdtlog.ErrInvalidOp},
		{"ORMap entry without delta", crdtlog.KindORMap, nil, "",
			op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{{Key: elem("k")}}}), crdtlog.ErrInvalidOp},
		{"ORMap update of another kind", crdtlog.KindORMap, []*crdtpb.CrdtDelta{counterMap()}, "",
			op(&crdtpb.ORMapDelta{Updated: []*crdtpb.ORMapEntryDelta{entry("k", pn(1))}}), crdtlog.ErrKindMismatch},
		{"ORMap add of an existing key with another kind", crdtlog.KindORMap, []*crdtpb.CrdtDelta{counterMap()}, "",
			op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry("k", orset(false, nil, elems("x")))}}), crdtlog.ErrKindMismatch},
		{"ORMap nested flag disabled", crdtlog.KindORMap, []*crdtpb.CrdtDelta{counterMap()}, "",
			op(&crdtpb.ORMapDelta{Updated: []*crdtpb.ORMapEntryDelta{entry("k", gc(1)), entry("f", flagOp(false))}}), crdtlog.ErrIllegalChange},
		{"ORMap removed then re-added with another kind", crdtlog.KindORMap, []*crdtpb.CrdtDelta{counterMap()}, "",
			op(&crdtpb.ORMapDelta{Removed: elems("k"), Added: []*crdtpb.ORMapEntryDelta{entry("k", pn(-1))}}), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := build(t, c.kind, c.setup...)
			before := s.Clone()
			node := "node-a"
			if c.node == "-" {
				node = ""
			}
			_, err := s.Apply(node, c.op, now)
			if !errors.Is(err, c.want) {
				t.Fatalf("got error %v, want %v", err, c.want)
			}
			if err != nil && !s.Equal(before) {
				t.Fatalf("a rejected operation changed the state")
			}
			if err != nil && s.Delta() != nil && before.Delta() == nil {
				t.Fatalf("a rejected operation left a pending delta")
			}
		})
	}
}

func TestFlagFalseOnDisabledIsNoOp(t *testing.T) {
	f := crdtlog.NewFlag()
	d, err := f.Apply("node-a", flagOp(false), now)
	if err != nil || d != nil || f.Enabled() {
		t.Fatalf("got %v, %v, enabled %v; want no delta, no error, disabled", d, err, f.Enabled())
	}
}

func TestNewFromOp(t *testing.T) {
	for _, c := range []struct {
		op   *crdtpb.CrdtDelta
		want crdtlog.Kind
	}{
		{gc(1), crdtlog.KindGCounter},
		{pn(1), crdtlog.KindPNCounter},
		{op(&crdtpb.GSetDelta{}), crdtlog.KindGSet},
		{orset(false, nil, nil), crdtlog.KindORSet},
		{lww("x", 0, 0), crdtlog.KindLWWRegister},
		{flagOp(true), crdtlog.KindFlag},
		{op(&crdtpb.ORMapDelta{}), crdtlog.KindORMap},
		{op(&crdtpb.VoteDelta{}), crdtlog.KindVote},
	} {
		c0, err := crdtlog.NewFromOp(c.op)
		if err != nil || c0.Kind() != c.want || !c0.Equal(crdtlog.New(c.want)) {
			t.Errorf("NewFromOp(%v) = %v, %v; want an empty %s", c.op, c0, err, c.want)
		}
	}
	if _, err := crdtlog.NewFromOp(&crdtpb.CrdtDelta{}); !errors.Is(err, crdtlog.ErrInvalidOp) {
		t.Errorf("NewFromOp(empty) error %v, want ErrInvalidOp", err)
	}
	if crdtlog.New(0) != nil || crdtlog.New(9) != nil {
		t.Errorf("New of an invalid kind is not nil")
	}
}

func TestInitDelta(t *testing.T) {
	vote := crdtlog.NewVote()
	must(t, vote.Merge(build(t, crdtlog.KindVote, op(&crdtpb.VoteDelta{SelfVote: true}))))
	if _, err := vote.Cast("node-b", false); err != nil {
		t.Fatal(err)
	}
	if _, err := vote.Cast("node-c", true); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		crdt crdtlog.CRDT
		want *crdtpb.CrdtDelta
	}{
		{"empty GCounter", crdtlog.NewGCounter(), gc(0)},
		{"GCounter", build(t, crdtlog.KindGCounter, gc(3), gc(4)), gc(7)},
		{"PNCounter", build(t, crdtlog.KindPNCounter, pn(3), pn(-5)), pn(-2)},
		{"GSet", build(t, crdtlog.KindGSet, op(&crdtpb.GSetDelta{Added: elems("y", "x")})), op(&crdtpb.GSetDelta{Added: elems("x", "y")})},
		{"ORSet", build(t, crdtlog.KindORSet, orset(false, nil, elems("y", "x", "z")), orset(false, elems("z"), nil)), orset(false, nil, elems("x", "y"))},
		{"empty LWWRegister", crdtlog.NewLWWRegister(), op(&crdtpb.LWWRegisterDelta{})},
		{"LWWRegister", build(t, crdtlog.KindLWWRegister, lww("x", crdtpb.CrdtClock_CUSTOM, 7)), op(&crdtpb.LWWRegisterDelta{Value: elem("x")})},
		{"Flag", build(t, crdtlog.KindFlag, flagOp(true)), flagOp(true)},
		{"ORMap", build(t, crdtlog.KindORMap, op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{
			entry("b", orset(false, nil, elems("x"))), entry("a", pn(2))}})),
			op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry("a", pn(2)), entry("b", orset(false, nil, elems("x")))}})},
		{"Vote", vote, op(&crdtpb.VoteDelta{SelfVote: true, VotesFor: 2, TotalVoters: 3})},
	} {
		if got := c.crdt.InitDelta("node-a"); !proto.Equal(got, c.want) {
			t.Errorf("%s: InitDelta = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestChangeDelta(t *testing.T) {
	m := func(ops ...*crdtpb.CrdtDelta) crdtlog.CRDT { return build(t, crdtlog.KindORMap, ops...) }
	mapOp := func(d *crdtpb.ORMapDelta) *crdtpb.CrdtDelta { return op(d) }
	base := mapOp(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry("c", gc(1)), entry("s", orset(false, nil, elems("x")))}})
	for _, c := range []struct {
		name          string
		before, after crdtlog.CRDT
		want          *crdtpb.CrdtDelta
		err           error
	}{
		{"GCounter unchanged", build(t, crdtlog.KindGCounter, gc(3)), build(t, crdtlog.KindGCounter, gc(3)), nil, nil},
		{"GCounter increment", build(t, crdtlog.KindGCounter, gc(3)), build(t, crdtlog.KindGCounter, gc(5)), gc(2), nil},
		{"from nothing", nil, build(t, crdtlog.KindGCounter, gc(3)), gc(3), nil},
		{"GCounter down", build(t, crdtlog.KindGCounter, gc(5)), build(t, crdtlog.KindGCounter, gc(3)), nil, crdtlog.ErrIllegalChange},
		{"PNCounter change", build(t, crdtlog.KindPNCounter, pn(5)), build(t, crdtlog.KindPNCounter, pn(2)), pn(-3), nil},
		{"GSet added", build(t, crdtlog.KindGSet, op(&crdtpb.GSetDelta{Added: elems("x")})),
			build(t, crdtlog.KindGSet, op(&crdtpb.GSetDelta{Added: elems("z", "x", "y")})), op(&crdtpb.GSetDelta{Added: elems("y", "z")}), nil},
		{"GSet lost", build(t, crdtlog.KindGSet, op(&crdtpb.GSetDelta{Added: elems("x")})), crdtlog.NewGSet(), nil, crdtlog.ErrIllegalChange},
		{"ORSet removed and added", build(t, crdtlog.KindORSet, orset(false, nil, elems("a", "b", "c", "d"))),
			build(t, crdtlog.KindORSet, orset(false, nil, elems("b", "c", "d", "e"))), orset(false, elems("a"), elems("e")), nil},
		{"ORSet cleared", build(t, crdtlog.KindORSet, orset(false, nil, elems("a", "b"))), crdtlog.NewORSet(), orset(true, nil, nil), nil},
		{"ORSet replaced", build(t, crdtlog.KindORSet, orset(false, nil, elems("a", "b"))),
			build(t, crdtlog.KindORSet, orset(false, nil, elems("c"))), orset(true, nil, elems("c")), nil},
		{"LWWRegister", build(t, crdtlog.KindLWWRegister, lww("x", 0, 0)), build(t, crdtlog.KindLWWRegister, lww("y", 0, 0)),
			op(&crdtpb.LWWRegisterDelta{Value: elem("y")}), nil},
		{"LWWRegister same value", build(t, crdtlog.KindLWWRegister, lww("x", 0, 0)), build(t, crdtlog.KindLWWRegister, lww("x", 2, 9)), nil, nil},
		{"Flag enabled", crdtlog.NewFlag(), build(t, crdtlog.KindFlag, flagOp(true)), flagOp(true), nil},
		{"Flag disabled", build(t, crdtlog.KindFlag, flagOp(true)), crdtlog.NewFlag(), nil, crdtlog.ErrIllegalChange},
		{"kinds differ", crdtlog.NewGCounter(), crdtlog.NewPNCounter(), nil, crdtlog.ErrKindMismatch},
		{"ORMap updated, added, removed", m(base),
			m(base, mapOp(&crdtpb.ORMapDelta{Removed: elems("s"), Updated: []*crdtpb.ORMapEntryDelta{entry("c", gc(2))},
				Added: []*crdtpb.ORMapEntryDelta{entry("f", flagOp(true))}})),
			mapOp(&crdtpb.ORMapDelta{Removed: elems("s"), Updated: []*crdtpb.ORMapEntryDelta{entry("c", gc(2))},
				Added: []*crdtpb.ORMapEntryDelta{entry("f", flagOp(true))}}), nil},
		{"ORMap cleared", m(base), m(base, mapOp(&crdtpb.ORMapDelta{Cleared: true})), mapOp(&crdtpb.ORMapDelta{Cleared: true}), nil},
		{"ORMap value reset", m(base), m(base, mapOp(&crdtpb.ORMapDelta{Removed: elems("c"), Added: []*crdtpb.ORMapEntryDelta{entry("c", gc(0))}})),
			mapOp(&crdtpb.ORMapDelta{Removed: elems("c"), Added: []*crdtpb.ORMapEntryDelta{entry("c", gc(0))}}), nil},
		{"ORMap value of another kind", m(base), m(base, mapOp(&crdtpb.ORMapDelta{Removed: elems("c"), Added: []*crdtpb.ORMapEntryDelta{entry("c", pn(4))}})),
			mapOp(&crdtpb.ORMapDelta{Removed: elems("c"), Added: []*crdtpb.ORMapEntryDelta{entry("c", pn(4))}}), nil},
		{"Vote", build(t, crdtlog.KindVote, op(&crdtpb.VoteDelta{SelfVote: false})), build(t, crdtlog.KindVote, op(&crdtpb.VoteDelta{SelfVote: true})),
			op(&crdtpb.VoteDelta{SelfVote: true, VotesFor: 1, TotalVoters: 1}), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := crdtlog.ChangeDelta(c.before, c.after, "node-a")
			if !errors.Is(err, c.err) {
				t.Fatalf("error %v, want %v", err, c.err)
			}
			if !proto.Equal(got, c.want) {
				t.Fatalf("got  %v\nwant %v", got, c.want)
			}
		})
	}
}

// TestLWWClocks: the four clocks, the node tie-break, and the correction a user function gets
// when its write lost (Cloudstate's "handle change deltas with reverse clock").
func TestLWWClocks(t *testing.T) {
	r := crdtlog.NewLWWRegister()
	apply := func(node string, o *crdtpb.CrdtDelta, at int64) {
		t.Helper()
		if _, err := r.Apply(node, o, at); err != nil {
			t.Fatal(err)
		}
	}
	value := func() string { return string(r.Value().GetValue()) }

	apply("node-a", lww("one", crdtpb.CrdtClock_DEFAULT, 0), 1000)
	if c, n := r.Clock(); value() != "one" || c != 1000 || n != "node-a" {
		t.Fatalf("DEFAULT: %q at %d by %q", value(), c, n)
	}
	// A DEFAULT write with a clock behind the register's still wins locally: max(now, c+1).
	apply("node-a", lww("two", crdtpb.CrdtClock_DEFAULT, 0), 10)
	if c, _ := r.Clock(); value() != "two" || c != 1001 {
		t.Fatalf("DEFAULT behind: %q at %d", value(), c)
	}
	// REVERSE: -now loses against the DEFAULT write: the register keeps "two", and the user
	// function, which set "three" on its own copy, is told "two".
	o := lww("three", crdtpb.CrdtClock_REVERSE, 0)
	expected, err := crdtlog.Expected(r, "node-a", o, 2000)
	must(t, err)
	apply("node-a", o, 2000)
	if value() != "two" {
		t.Fatalf("REVERSE won: %q", value())
	}
	corr, err := crdtlog.ChangeDelta(expected, r, "node-a")
	must(t, err)
	if want := op(&crdtpb.LWWRegisterDelta{Value: elem("two")}); !proto.Equal(corr, want) {
		t.Fatalf("correction %v, want %v", corr, want)
	}
	// CUSTOM sets the clock as given, lower or not.
	apply("node-a", lww("four", crdtpb.CrdtClock_CUSTOM, 5000), now)
	if c, _ := r.Clock(); value() != "four" || c != 5000 {
		t.Fatalf("CUSTOM: %q at %d", value(), c)
	}
	apply("node-a", lww("five", crdtpb.CrdtClock_CUSTOM, 4000), now)
	if value() != "four" {
		t.Fatalf("CUSTOM 4000 won over 5000: %q", value())
	}
	// CUSTOM_AUTO_INCREMENT: max(custom, c+1).
	apply("node-a", lww("six", crdtpb.CrdtClock_CUSTOM_AUTO_INCREMENT, 456), now)
	if c, _ := r.Clock(); value() != "six" || c != 5001 {
		t.Fatalf("CUSTOM_AUTO_INCREMENT: %q at %d", value(), c)
	}

	// REVERSE alone: the first write wins.
	first := crdtlog.NewLWWRegister()
	_, err = first.Apply("node-a", lww("early", crdtpb.CrdtClock_REVERSE, 0), 100)
	must(t, err)
	_, err = first.Apply("node-a", lww("late", crdtpb.CrdtClock_REVERSE, 0), 200)
	must(t, err)
	if got := string(first.Value().GetValue()); got != "early" {
		t.Fatalf("REVERSE: %q, want the first write", got)
	}

	// Equal clocks at two nodes: the greater node id wins on every replica, whatever the order.
	a, b := crdtlog.NewLWWRegister(), crdtlog.NewLWWRegister()
	da, err := a.Apply("node-a", lww("zzz-from-a", crdtpb.CrdtClock_CUSTOM, 7), now)
	must(t, err)
	db, err := b.Apply("node-b", lww("aaa-from-b", crdtpb.CrdtClock_CUSTOM, 7), now)
	must(t, err)
	must(t, a.Merge(db))
	must(t, b.Merge(da))
	if va, vb := string(a.Value().GetValue()), string(b.Value().GetValue()); va != "aaa-from-b" || vb != "aaa-from-b" {
		t.Fatalf("tie: %q and %q, want from-b on both", va, vb)
	}
}

func TestORSetAddWins(t *testing.T) {
	a, b := crdtlog.NewORSet(), crdtlog.NewORSet()
	d, err := a.Apply("node-a", orset(false, nil, elems("x")), now)
	must(t, err)
	must(t, b.Merge(d))
	// Concurrently: a adds x again, b removes x (having observed only the first add).
	da, err := a.Apply("node-a", orset(false, nil, elems("x")), now)
	must(t, err)
	db, err := b.Apply("node-b", orset(false, elems("x"), nil), now)
	must(t, err)
	if b.Contains(elem("x")) {
		t.Fatalf("x still in b after its remove")
	}
	must(t, a.Merge(db))
	must(t, b.Merge(da))
	if !a.Contains(elem("x")) || !b.Contains(elem("x")) || !a.Equal(b) {
		t.Fatalf("the concurrent add did not win: a has x %v, b has x %v", a.Contains(elem("x")), b.Contains(elem("x")))
	}
	// A remove that observed every add removes for good; a clear too.
	dr, err := b.Apply("node-b", orset(false, elems("x"), elems("y")), now)
	must(t, err)
	must(t, a.Merge(dr))
	if a.Contains(elem("x")) || !a.Contains(elem("y")) {
		t.Fatalf("observed remove: %v", a.Elements())
	}
	dc, err := a.Apply("node-a", orset(true, nil, nil), now)
	must(t, err)
	must(t, b.Merge(dc))
	if a.Len() != 0 || b.Len() != 0 {
		t.Fatalf("clear left %d and %d elements", a.Len(), b.Len())
	}
	// Identity is type URL plus value bytes.
	other := &anypb.Any{TypeUrl: "type.googleapis.com/test.Other", Value: []byte("x")}
	_, err = a.Apply("node-a", orset(false, nil, []*anypb.Any{elem("x"), other}), now)
	must(t, err)
	if a.Len() != 2 || !crdtlog.AnyEqual(elem("x"), &anypb.Any{TypeUrl: elem("x").TypeUrl, Value: []byte("x")}) {
		t.Fatalf("identity: %d elements", a.Len())
	}
}

func TestORMapSemantics(t *testing.T) {
	counter := func(m *crdtlog.ORMap, key string) int64 {
		t.Helper()
		v := m.Get(elem(key))
		if v == nil {
			return -1
		}
		return v.(*crdtlog.PNCounter).Value()
	}
	upd := func(key string, n int64) *crdtpb.CrdtDelta {
		return op(&crdtpb.ORMapDelta{Updated: []*crdtpb.ORMapEntryDelta{entry(key, pn(n))}})
	}
	a, b := crdtlog.NewORMap(), crdtlog.NewORMap()
	d, err := a.Apply("node-a", op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry("k", pn(5))}}), now)
	must(t, err)
	must(t, b.Merge(d))
	d, err = b.Apply("node-b", upd("k", 2), now)
	must(t, err)
	must(t, a.Merge(d))
	if counter(a, "k") != 7 || counter(b, "k") != 7 {
		t.Fatalf("nested deltas: %d and %d, want 7", counter(a, "k"), counter(b, "k"))
	}
	// Concurrently: a removes k, b adds 10 to it. The update wins and keeps b's contribution
	// (2 + 10); a's contribution (5) was removed.
	da, err := a.Apply("node-a", op(&crdtpb.ORMapDelta{Removed: elems("k")}), now)
	must(t, err)
	db, err := b.Apply("node-b", upd("k", 10), now)
	must(t, err)
	must(t, a.Merge(db))
	must(t, b.Merge(da))
	if counter(a, "k") != 12 || counter(b, "k") != 12 || !a.Equal(b) {
		t.Fatalf("update concurrent with remove: %d and %d, want 12", counter(a, "k"), counter(b, "k"))
	}
	// A remove that observed everything, then an add: the value starts from empty.
	d, err = a.Apply("node-a", op(&crdtpb.ORMapDelta{Removed: elems("k"), Added: []*crdtpb.ORMapEntryDelta{entry("k", pn(1))}}), now)
	must(t, err)
	must(t, b.Merge(d))
	if counter(a, "k") != 1 || counter(b, "k") != 1 {
		t.Fatalf("re-added: %d and %d, want 1", counter(a, "k"), counter(b, "k"))
	}
	// An update of a removed key is ignored.
	d, err = a.Apply("node-a", upd("gone", 1), now)
	if err != nil || d != nil || a.Contains(elem("gone")) {
		t.Fatalf("update of an absent key: %v, %v", d, err)
	}
}

func TestVoteMembership(t *testing.T) {
	v := crdtlog.NewVote()
	cast := func(node string, vote bool) {
		t.Helper()
		if _, err := v.Apply(node, op(&crdtpb.VoteDelta{SelfVote: vote, VotesFor: 99, TotalVoters: 99}), now); err != nil {
			t.Fatal(err)
		}
	}
	counts := func(self string, s bool, f, total int32) {
		t.Helper()
		gs, gf, gt := v.Counts(self)
		if gs != s || gf != f || gt != total {
			t.Fatalf("Counts(%s) = %v %d %d, want %v %d %d", self, gs, gf, gt, s, f, total)
		}
	}
	cast("node-a", true)
	cast("node-b", false)
	cast("node-c", true)
	counts("node-a", true, 2, 3)
	counts("node-b", false, 2, 3)
	// node-c leaves: its vote no longer counts, on every replica that merges the removal.
	other := v.Clone()
	rm := v.Remove("node-c")
	if rm == nil {
		t.Fatal("no removal delta")
	}
	counts("node-a", true, 1, 2)
	must(t, other.Merge(rm))
	if !other.Equal(v) {
		t.Fatalf("removal did not replicate")
	}
	if v.Remove("node-c") != nil {
		t.Fatal("second removal produced a delta")
	}
	// node-c comes back and votes: it counts again.
	cast("node-c", false)
	counts("node-c", false, 1, 3)
	// A vote cast concurrently with its removal survives the removal.
	a, b := v.Clone().(*crdtlog.Vote), v.Clone().(*crdtlog.Vote)
	ra := a.Remove("node-b")
	db, err := b.Cast("node-b", true)
	must(t, err)
	must(t, a.Merge(db))
	must(t, b.Merge(ra))
	if s, f, total := a.Counts("node-b"); !s || f != 2 || total != 3 || !a.Equal(b) {
		t.Fatalf("concurrent vote and removal: %v %d %d", s, f, total)
	}
}

func TestMergeKindMismatch(t *testing.T) {
	g := build(t, crdtlog.KindGCounter, gc(1))
	before := g.Clone()
	if err := g.Merge(crdtlog.NewPNCounter()); !errors.Is(err, crdtlog.ErrKindMismatch) {
		t.Fatalf("Merge of another kind: %v", err)
	}
	if !g.Equal(before) || g.Equal(crdtlog.NewPNCounter()) {
		t.Fatal("state changed or Equal across kinds")
	}
}
