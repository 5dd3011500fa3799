package crdtlog

import (
	"fmt"
	"math"

	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// Vote holds one vote (true or false) per node. Only a node changes its own vote: each change
// gets a higher version of that node's entry, and a merge keeps the highest version per node.
// A node becomes a voter by casting any vote (the runtime casts false when a node starts
// hosting the entity) and stops being one when Remove drops its vote (the node left): the
// removal records the version it observed, so a vote the node casts later, with a higher
// version, counts again.
type Vote struct {
	votes   map[string]voteEntry
	removed map[string]uint64
	pending
}

type voteEntry struct {
	version uint64
	vote    bool
}

func (e voteEntry) less(o voteEntry) bool {
	return e.version < o.version || e.version == o.version && !e.vote && o.vote
}

// NewVote returns a Vote with no voters.
func NewVote() *Vote { return &Vote{votes: map[string]voteEntry{}, removed: map[string]uint64{}} }

// Kind is KindVote.
func (*Vote) Kind() Kind { return KindVote }

// Counts returns self's vote, the number of voters voting true and the number of voters.
func (v *Vote) Counts(self string) (selfVote bool, votesFor, totalVoters int32) {
	for n, e := range v.votes {
		totalVoters++
		if e.vote {
			votesFor++
			if n == self {
				selfVote = true
			}
		}
	}
	return selfVote, votesFor, totalVoters
}

// Voters returns the voting nodes in order.
func (v *Vote) Voters() []string { return sortedKeys(v.votes) }

// Cast sets node's vote and returns the replication delta (nil if the vote is unchanged).
func (v *Vote) Cast(node string, vote bool) (*Vote, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	d, err := v.cast(&applyCtx{node: node}, vote)
	if d != nil {
		v.join(d)
		v.pending.add(d)
	}
	return d, err
}

// Remove drops node's vote (the node left the app) and returns the replication delta, nil if
// node is not a voter. A vote the node casts concurrently with, or after, the removal counts.
func (v *Vote) Remove(node string) *Vote {
	e, ok := v.votes[node]
	if !ok {
		return nil
	}
	d := NewVote()
	d.removed[node] = e.version
	v.join(d)
	v.pending.add(d)
	return d
}

func (v *Vote) cast(ctx *applyCtx, vote bool) (*Vote, error) {
	e, ok := v.votes[ctx.node]
	if ok && e.vote == vote {
		return nil, nil
	}
	var version uint64
	if ctx.gen != nil {
		version = ctx.gen()
	} else {
		version = max(e.version, v.removed[ctx.node])
		if version == math.MaxUint64 {
			return nil, fmt.Errorf("%w: node %q's vote version is exhausted", ErrIllegalChange, ctx.node)
		}
		version++
	}
	d := NewVote()
	d.votes[ctx.node] = voteEntry{version: version, vote: vote}
	return d, nil
}

// Merge joins a Vote state or delta.
func (v *Vote) Merge(other CRDT) error { return doMerge(v, other) }

// Apply applies a VoteDelta: node's vote becomes self_vote (votes_for and total_voters are
// ignored, as the protocol says).
func (v *Vote) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(v, &v.pending, node, op, now)
}

// Clone returns a deep copy.
func (v *Vote) Clone() CRDT {
	c := v.copyState().(*Vote)
	c.pending = v.pending.clone()
	return c
}

// Equal reports whether other is a Vote with the same votes and removals.
func (v *Vote) Equal(other CRDT) bool { return equal(v, other) }

// InitDelta is a VoteDelta with self's vote and the counts.
func (v *Vote) InitDelta(self string) *crdtpb.CrdtDelta {
	s, f, t := v.Counts(self)
	return voteDelta(s, f, t)
}

func voteDelta(s bool, f, t int32) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: s, VotesFor: f, TotalVoters: t}}}
}

// MarshalBinary is Encode.
func (v *Vote) MarshalBinary() ([]byte, error) { return Encode(v) }

func (v *Vote) impl() impl { return v }

func (v *Vote) join(o impl) {
	ov := o.(*Vote)
	for n, r := range ov.removed {
		if r > v.removed[n] {
			v.removed[n] = r
		}
	}
	for n, e := range ov.votes {
		if cur, ok := v.votes[n]; !ok || cur.less(e) {
			v.votes[n] = e
		}
	}
	// A vote at or below its node's removal version is gone for good (removals only grow).
	for n, e := range v.votes {
		if e.version <= v.removed[n] {
			delete(v.votes, n)
		}
	}
}

func (v *Vote) apply(ctx *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Vote)
	if !ok {
		return nil, opKindMismatch(KindVote, op)
	}
	vd, err := v.cast(ctx, d.Vote.GetSelfVote())
	if vd == nil || err != nil {
		return nil, err
	}
	return vd, nil
}

func (v *Vote) copyState() impl {
	c := NewVote()
	for n, e := range v.votes {
		c.votes[n] = e
	}
	for n, r := range v.removed {
		c.removed[n] = r
	}
	return c
}
