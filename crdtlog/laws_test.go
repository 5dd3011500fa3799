package crdtlog_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/kstatehq/kstate/crdtlog"
)

// forEachKind runs a property for every kind.
func forEachKind(t *testing.T, prop func(t *rapid.T, k crdtlog.Kind)) {
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			rapid.Check(t, func(t *rapid.T) { prop(t, k) })
		})
	}
}

// states draws three replica states and some deltas of one random history.
func states(t *rapid.T, k crdtlog.Kind) (a, b, c crdtlog.CRDT, h *history) {
	h = runHistory(t, k, opts{})
	pick := func(label string) crdtlog.CRDT {
		all := append(append([]crdtlog.CRDT{}, h.replicas...), h.deltas...)
		return all[rapid.IntRange(0, len(all)-1).Draw(t, label)]
	}
	return pick("a"), pick("b"), pick("c"), h
}

func TestMergeCommutative(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		a, b, _, _ := states(t, k)
		if ab, ba := merged(t, a, b), merged(t, b, a); !ab.Equal(ba) {
			t.Fatalf("a⊔b != b⊔a\na⊔b: %s\nb⊔a: %s", dump(ab), dump(ba))
		}
	})
}

func TestMergeAssociative(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		a, b, c, _ := states(t, k)
		l, r := merged(t, merged(t, a, b), c), merged(t, a, merged(t, b, c))
		if !l.Equal(r) {
			t.Fatalf("(a⊔b)⊔c != a⊔(b⊔c)\nleft:  %s\nright: %s", dump(l), dump(r))
		}
	})
}

func TestMergeIdempotent(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		a, b, _, _ := states(t, k)
		if aa := merged(t, a, a); !aa.Equal(a) {
			t.Fatalf("a⊔a != a\na:   %s\na⊔a: %s", dump(a), dump(aa))
		}
		// Merging what is already included changes nothing either.
		ab := merged(t, a, b)
		if abb := merged(t, ab, b); !abb.Equal(ab) {
			t.Fatalf("(a⊔b)⊔b != a⊔b")
		}
	})
}

// TestDeltasConverge: replicas that exchanged deltas in random order, with duplicates and
// some full-state merges, end equal once every delta reached every replica, and equal to a
// replica built from the deltas alone and to the merge of the full states (the oracle).
func TestDeltasConverge(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		h := runHistory(t, k, opts{})
		oracle := crdtlog.New(k)
		for _, r := range h.replicas {
			must(t, oracle.Merge(r))
		}
		fromDeltas := crdtlog.New(k)
		for _, i := range rapid.Permutation(indexes(len(h.deltas))).Draw(t, "order") {
			must(t, fromDeltas.Merge(h.deltas[i]))
		}
		if !fromDeltas.Equal(oracle) {
			t.Fatalf("deltas alone != merge of full states\ndeltas: %s\noracle: %s", dump(fromDeltas), dump(oracle))
		}
		for ri, r := range h.replicas {
			order := rapid.Permutation(indexes(len(h.deltas))).Draw(t, "delivery")
			dups := rapid.SliceOfN(rapid.IntRange(0, max(len(h.deltas)-1, 0)), 0, 3).Draw(t, "dups")
			if len(h.deltas) == 0 {
				dups = nil
			}
			for _, i := range append(order, dups...) {
				must(t, r.Merge(h.deltas[i]))
			}
			if !r.Equal(oracle) {
				t.Fatalf("replica %d != oracle after all deltas\nreplica: %s\noracle:  %s", ri, dump(r), dump(oracle))
			}
		}
	})
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestApplyDelta: the delta Apply returns, merged into the state before, gives the state after;
// the pending Delta is the merge of the returned deltas.
func TestApplyDelta(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		h := runHistory(t, k, opts{})
		r := h.replicas[0].Clone()
		r.ResetDelta()
		var sum crdtlog.CRDT
		for range rapid.IntRange(1, 5).Draw(t, "ops") {
			before := r.Clone()
			d, err := r.Apply(nodes[0], genOp(t, k, 3, opts{}), h.now+100)
			if err != nil {
				if !r.Equal(before) {
					t.Fatalf("a failed Apply changed the state: %v", err)
				}
				continue
			}
			if d == nil {
				if !r.Equal(before) {
					t.Fatalf("Apply returned no delta but changed the state")
				}
				continue
			}
			if got := merged(t, before, d); !got.Equal(r) {
				t.Fatalf("before⊔delta != after\nbefore⊔delta: %s\nafter:        %s", dump(got), dump(r))
			}
			if sum == nil {
				sum = d.Clone()
			} else {
				must(t, sum.Merge(d))
			}
		}
		p := r.Delta()
		switch {
		case sum == nil && p != nil:
			t.Fatalf("pending delta without changes")
		case sum != nil && (p == nil || !p.Equal(sum)):
			t.Fatalf("pending delta != merge of returned deltas")
		}
		r.ResetDelta()
		if r.Delta() != nil {
			t.Fatalf("pending delta after ResetDelta")
		}
	})
}

// TestEncodeRoundTrip: Decode(Encode(s)) equals s, and encoding is canonical.
func TestEncodeRoundTrip(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		a, b, _, _ := states(t, k)
		for _, s := range []crdtlog.CRDT{a, b, merged(t, a, b)} {
			enc, err := crdtlog.Encode(s)
			must(t, err)
			got, err := crdtlog.Decode(enc)
			must(t, err)
			if !got.Equal(s) {
				t.Fatalf("round trip changed the state\nin:  %s\nout: %s", dump(s), dump(got))
			}
			again, err := crdtlog.Encode(got)
			must(t, err)
			if string(again) != string(enc) {
				t.Fatalf("encoding not canonical")
			}
		}
	})
}

// TestChangeDeltaReachesAfter: a user function that knows before and applies
// ChangeDelta(before, after) to its own copy knows after's value (compared as InitDelta). Votes
// are left out: a user function cannot apply other nodes' votes, it only reads the counts.
func TestChangeDeltaReachesAfter(t *testing.T) {
	for _, k := range kinds {
		if k == crdtlog.KindVote {
			continue
		}
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			rapid.Check(t, func(t *rapid.T) {
				h := runHistory(t, k, opts{noVotes: true})
				before := h.replicas[0]
				after := merged(t, before, h.replicas[rapid.IntRange(0, 2).Draw(t, "other")])
				cd, err := crdtlog.ChangeDelta(before, after, nodes[0])
				must(t, err)
				if cd == nil {
					if !proto.Equal(before.InitDelta(nodes[0]), after.InitDelta(nodes[0])) {
						t.Fatalf("no change delta, but the values differ")
					}
					return
				}
				view, err := crdtlog.Expected(before, nodes[0], cd, h.now)
				must(t, err)
				if got, want := view.InitDelta(nodes[0]), after.InitDelta(nodes[0]); !proto.Equal(got, want) {
					t.Fatalf("change delta %v\ntakes the user function to %v\nwant %v", cd, got, want)
				}
			})
		})
	}
}

// TestApplyRealizesOp: apart from LWW writes, which may lose against the clock, the state after
// Apply has exactly the value the user function expects after its own operation.
func TestApplyRealizesOp(t *testing.T) {
	for _, k := range kinds {
		if k == crdtlog.KindLWWRegister {
			continue
		}
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			rapid.Check(t, func(t *rapid.T) {
				o := opts{noLWW: true}
				h := runHistory(t, k, o)
				i := rapid.IntRange(0, 2).Draw(t, "replica")
				r := h.replicas[i]
				op := genOp(t, k, 3, o)
				exp, expErr := crdtlog.Expected(r, nodes[i], op, h.now)
				_, err := r.Apply(nodes[i], op, h.now)
				if (err == nil) != (expErr == nil) {
					t.Fatalf("Apply: %v; Expected: %v", err, expErr)
				}
				if err != nil {
					return
				}
				if cd, err := crdtlog.ChangeDelta(exp, r, nodes[i]); err != nil || cd != nil {
					t.Fatalf("after %v\nthe state differs from the expected value by %v (%v)", op, cd, err)
				}
			})
		})
	}
}

// TestAntiEntropyRepairsLoss (RELIABILITY.md T16): each replica loses some deltas and gets the
// rest shuffled and duplicated; one round of full-state exchange makes every replica equal to
// the oracle.
func TestAntiEntropyRepairsLoss(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		h := runHistory(t, k, opts{})
		oracle := crdtlog.New(k)
		for _, r := range h.replicas {
			must(t, oracle.Merge(r))
		}
		for _, r := range h.replicas {
			for _, i := range rapid.Permutation(indexes(len(h.deltas))).Draw(t, "order") {
				switch rapid.IntRange(0, 9).Draw(t, "fault") {
				case 0: // lost
				case 1: // duplicated
					must(t, r.Merge(h.deltas[i]))
					must(t, r.Merge(h.deltas[i]))
				default:
					must(t, r.Merge(h.deltas[i]))
				}
			}
		}
		states := make([]crdtlog.CRDT, len(h.replicas))
		for i, r := range h.replicas {
			states[i] = r.Clone()
		}
		for i, r := range h.replicas {
			for j, s := range states {
				if i != j {
					must(t, r.Merge(s))
				}
			}
			if !r.Equal(oracle) {
				t.Fatalf("replica %d != oracle after anti-entropy\nreplica: %s\noracle:  %s", i, dump(r), dump(oracle))
			}
		}
	})
}

// TestMergeSelf: merging a replica into itself changes nothing.
func TestMergeSelf(t *testing.T) {
	forEachKind(t, func(t *rapid.T, k crdtlog.Kind) {
		h := runHistory(t, k, opts{})
		r := h.replicas[0]
		before := r.Clone()
		must(t, r.Merge(r))
		if !r.Equal(before) {
			t.Fatalf("self-merge changed the state")
		}
	})
}

// TestJoinScanPath runs the laws and convergence for the dot-store types with joins that scan
// the receiver instead of looking the other side's context up (the path large contexts take).
func TestJoinScanPath(t *testing.T) {
	defer crdtlog.SetSmallContext(func(int) int { return -1 })()
	for _, k := range []crdtlog.Kind{crdtlog.KindORSet, crdtlog.KindORMap} {
		t.Run(k.String(), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				a, b, c, h := states(t, k)
				if ab, ba := merged(t, a, b), merged(t, b, a); !ab.Equal(ba) {
					t.Fatalf("a⊔b != b⊔a")
				}
				if l, r := merged(t, merged(t, a, b), c), merged(t, a, merged(t, b, c)); !l.Equal(r) {
					t.Fatalf("(a⊔b)⊔c != a⊔(b⊔c)")
				}
				oracle := crdtlog.New(k)
				for _, r := range h.replicas {
					must(t, oracle.Merge(r))
				}
				fromDeltas := crdtlog.New(k)
				for _, i := range rapid.Permutation(indexes(len(h.deltas))).Draw(t, "order") {
					must(t, fromDeltas.Merge(h.deltas[i]))
				}
				if !fromDeltas.Equal(oracle) {
					t.Fatalf("deltas alone != merge of full states")
				}
			})
		})
	}
}
