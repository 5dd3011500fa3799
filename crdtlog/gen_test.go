package crdtlog_test

import (
	"flag"
	"os"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"pgregory.net/rapid"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// TestMain fixes rapid's seed so that runs are reproducible; -rapid.seed or RAPID_SEED override
// it (0 picks a random seed).
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.seed" })
	if _, env := os.LookupEnv("RAPID_SEED"); !set && !env {
		if err := flag.Set("rapid.seed", "20261207"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

var nodes = []string{"node-a", "node-b", "node-c"}

var kinds = []crdtlog.Kind{
	crdtlog.KindGCounter, crdtlog.KindPNCounter, crdtlog.KindGSet, crdtlog.KindORSet,
	crdtlog.KindLWWRegister, crdtlog.KindFlag, crdtlog.KindORMap, crdtlog.KindVote,
}

func elem(s string) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.Element", Value: []byte(s)}
}

// genElem draws from a small domain so that operations collide.
func genElem(t *rapid.T, label string) *anypb.Any {
	return elem(rapid.SampledFrom([]string{"w", "x", "y", "z"}).Draw(t, label))
}

func genElems(t *rapid.T, label string) []*anypb.Any {
	n := rapid.IntRange(0, 3).Draw(t, label+"-n")
	out := make([]*anypb.Any, n)
	for i := range out {
		out[i] = genElem(t, label)
	}
	return out
}

func op(d any) *crdtpb.CrdtDelta {
	switch d := d.(type) {
	case *crdtpb.GCounterDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: d}}
	case *crdtpb.PNCounterDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: d}}
	case *crdtpb.GSetDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gset{Gset: d}}
	case *crdtpb.ORSetDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: d}}
	case *crdtpb.LWWRegisterDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: d}}
	case *crdtpb.FlagDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Flag{Flag: d}}
	case *crdtpb.ORMapDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: d}}
	case *crdtpb.VoteDelta:
		return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: d}}
	}
	panic("op: unknown delta")
}

// mapKeys assign a usual kind to each map key; a key sometimes gets another kind, so that
// concurrent creations of one key with two kinds happen.
type mapKey struct {
	key  string
	kind crdtlog.Kind
}

var mapKeys = []mapKey{
	{"k-counter", crdtlog.KindPNCounter},
	{"k-set", crdtlog.KindORSet},
	{"k-reg", crdtlog.KindLWWRegister},
	{"k-map", crdtlog.KindORMap},
	{"k-vote", crdtlog.KindVote},
}

// opts select what maps may hold.
type opts struct {
	noVotes bool // no Vote values (a user function cannot apply other nodes' votes)
	noLWW   bool // no LWWRegister values (a write may lose against the clock)
}

// genOp draws a legal-looking operation delta of kind k (Flag false and kind conflicts in maps
// may still be rejected; callers ignore those errors). depth limits nested maps.
func genOp(t *rapid.T, k crdtlog.Kind, depth int, o opts) *crdtpb.CrdtDelta {
	switch k {
	case crdtlog.KindGCounter:
		return op(&crdtpb.GCounterDelta{Increment: rapid.Uint64Range(0, 10).Draw(t, "inc")})
	case crdtlog.KindPNCounter:
		return op(&crdtpb.PNCounterDelta{Change: rapid.Int64Range(-10, 10).Draw(t, "change")})
	case crdtlog.KindGSet:
		return op(&crdtpb.GSetDelta{Added: genElems(t, "added")})
	case crdtlog.KindORSet:
		return op(&crdtpb.ORSetDelta{
			Cleared: rapid.IntRange(0, 9).Draw(t, "clear") == 0,
			Removed: genElems(t, "removed"),
			Added:   genElems(t, "added"),
		})
	case crdtlog.KindLWWRegister:
		return op(&crdtpb.LWWRegisterDelta{
			Value:            genElem(t, "value"),
			Clock:            crdtpb.CrdtClock(rapid.IntRange(0, 3).Draw(t, "clock")),
			CustomClockValue: rapid.Int64Range(-3, 3).Draw(t, "custom"),
		})
	case crdtlog.KindFlag:
		return op(&crdtpb.FlagDelta{Value: rapid.IntRange(0, 3).Draw(t, "flag") != 0})
	case crdtlog.KindVote:
		return op(&crdtpb.VoteDelta{SelfVote: rapid.Bool().Draw(t, "vote")})
	case crdtlog.KindORMap:
		var keys []mapKey
		for _, mk := range mapKeys {
			if o.noVotes && mk.kind == crdtlog.KindVote || o.noLWW && mk.kind == crdtlog.KindLWWRegister ||
				depth <= 1 && (mk.kind == crdtlog.KindORMap || mk.kind == crdtlog.KindVote) {
				continue
			}
			keys = append(keys, mk)
		}
		entry := func(label string) *crdtpb.ORMapEntryDelta {
			i := rapid.IntRange(0, len(keys)-1).Draw(t, label+"-key")
			kind := keys[i].kind
			if rapid.IntRange(0, 9).Draw(t, label+"-odd-kind") == 0 {
				kind = crdtlog.KindGCounter
			}
			return &crdtpb.ORMapEntryDelta{Key: elem(keys[i].key), Delta: genOp(t, kind, depth-1, o)}
		}
		d := &crdtpb.ORMapDelta{Cleared: rapid.IntRange(0, 14).Draw(t, "clear") == 0}
		for range rapid.IntRange(0, 1).Draw(t, "nremoved") {
			d.Removed = append(d.Removed, elem(keys[rapid.IntRange(0, len(keys)-1).Draw(t, "removed")].key))
		}
		for range rapid.IntRange(0, 2).Draw(t, "nupdated") {
			d.Updated = append(d.Updated, entry("updated"))
		}
		for range rapid.IntRange(0, 1).Draw(t, "nadded") {
			d.Added = append(d.Added, entry("added"))
		}
		return op(d)
	}
	panic("genOp: unknown kind")
}

// history is a random run of 3 replicas of one CRDT: local operations (whose deltas are
// logged), deliveries of logged deltas in random order and with duplicates, full-state merges
// between replicas and, for votes, membership removals.
type history struct {
	kind     crdtlog.Kind
	replicas []crdtlog.CRDT
	deltas   []crdtlog.CRDT
	now      int64
}

func runHistory(t *rapid.T, k crdtlog.Kind, o opts) *history {
	h := &history{kind: k, now: 1_700_000_000_000}
	for range nodes {
		h.replicas = append(h.replicas, crdtlog.New(k))
	}
	steps := rapid.IntRange(1, 25).Draw(t, "steps")
	for range steps {
		i := rapid.IntRange(0, len(nodes)-1).Draw(t, "replica")
		r := h.replicas[i]
		switch rapid.IntRange(0, 9).Draw(t, "action") {
		case 0, 1, 2, 3, 4:
			h.now += rapid.Int64Range(-2, 5).Draw(t, "tick") // wall clocks are not monotonic
			d, err := r.Apply(nodes[i], genOp(t, k, 3, o), h.now)
			if err != nil {
				continue
			}
			if d != nil {
				h.deltas = append(h.deltas, d)
			}
		case 5, 6, 7:
			if len(h.deltas) > 0 {
				d := h.deltas[rapid.IntRange(0, len(h.deltas)-1).Draw(t, "delta")]
				must(t, r.Merge(d))
			}
		case 8:
			j := rapid.IntRange(0, len(nodes)-1).Draw(t, "from")
			must(t, r.Merge(h.replicas[j].Clone()))
		case 9:
			if v, ok := r.(*crdtlog.Vote); ok {
				if d := v.Remove(nodes[rapid.IntRange(0, len(nodes)-1).Draw(t, "leaver")]); d != nil {
					h.deltas = append(h.deltas, d)
				}
			}
		}
	}
	return h
}

func must(t interface{ Fatalf(string, ...any) }, err error) {
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func merged(t *rapid.T, a, b crdtlog.CRDT) crdtlog.CRDT {
	c := a.Clone()
	must(t, c.Merge(b))
	return c
}

func dump(c crdtlog.CRDT) string {
	return crdtlog.ToProto(c).String()
}
