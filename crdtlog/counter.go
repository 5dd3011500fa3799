package crdtlog

import (
	"fmt"
	"maps"
	"math"

	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// GCounter is a grow-only counter: each node's total increments; the value is their sum.
// Merge takes the maximum per node.
type GCounter struct {
	counts map[string]uint64
	pending
}

// NewGCounter returns a GCounter at zero.
func NewGCounter() *GCounter { return &GCounter{counts: map[string]uint64{}} }

// Kind is KindGCounter.
func (*GCounter) Kind() Kind { return KindGCounter }

// Value is the sum of every node's count, saturating at math.MaxUint64.
func (g *GCounter) Value() uint64 {
	var v uint64
	for _, c := range g.counts {
		if v > math.MaxUint64-c {
			return math.MaxUint64
		}
		v += c
	}
	return v
}

// NodeCount is node's share of the value.
func (g *GCounter) NodeCount(node string) uint64 { return g.counts[node] }

// Increment adds n at node and returns the replication delta (nil for n = 0). It fails with
// ErrIllegalChange if the node's count or the value would overflow uint64.
func (g *GCounter) Increment(node string, n uint64) (*GCounter, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	d, err := g.increment(node, n)
	if err != nil || d == nil {
		return nil, err
	}
	g.join(d)
	g.pending.add(d)
	return d, nil
}

func (g *GCounter) increment(node string, n uint64) (*GCounter, error) {
	if n == 0 {
		return nil, nil
	}
	if v := g.Value(); v > math.MaxUint64-n {
		return nil, fmt.Errorf("%w: GCounter increment by %d overflows value %d", ErrIllegalChange, n, v)
	}
	return &GCounter{counts: map[string]uint64{node: g.counts[node] + n}}, nil
}

// Merge joins a GCounter state or delta.
func (g *GCounter) Merge(other CRDT) error { return doMerge(g, other) }

// Apply applies a GCounterDelta.
func (g *GCounter) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(g, &g.pending, node, op, now)
}

// Clone returns a deep copy.
func (g *GCounter) Clone() CRDT {
	c := g.copyState().(*GCounter)
	c.pending = g.pending.clone()
	return c
}

// Equal reports whether other is a GCounter with the same counts.
func (g *GCounter) Equal(other CRDT) bool { return equal(g, other) }

// InitDelta is a GCounterDelta with the value as increment.
func (g *GCounter) InitDelta(string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: g.Value()}}}
}

// MarshalBinary is Encode.
func (g *GCounter) MarshalBinary() ([]byte, error) { return Encode(g) }

func (g *GCounter) impl() impl { return g }

func (g *GCounter) join(o impl) {
	for n, c := range o.(*GCounter).counts {
		if c > g.counts[n] {
			g.counts[n] = c
		}
	}
}

func (g *GCounter) apply(ctx *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Gcounter)
	if !ok {
		return nil, opKindMismatch(KindGCounter, op)
	}
	gd, err := g.increment(ctx.node, d.Gcounter.GetIncrement())
	if gd == nil || err != nil {
		return nil, err
	}
	return gd, nil
}

func (g *GCounter) copyState() impl { return &GCounter{counts: maps.Clone(g.counts)} }

// PNCounter is a counter that can go up and down: two GCounters, increments and decrements; the
// value is their difference.
type PNCounter struct {
	inc, dec *GCounter
	pending
}

// NewPNCounter returns a PNCounter at zero.
func NewPNCounter() *PNCounter { return &PNCounter{inc: NewGCounter(), dec: NewGCounter()} }

// Kind is KindPNCounter.
func (*PNCounter) Kind() Kind { return KindPNCounter }

// Value is increments minus decrements, clamped to the int64 range.
func (p *PNCounter) Value() int64 {
	i, d := p.inc.Value(), p.dec.Value()
	if i >= d {
		if i-d > math.MaxInt64 {
			return math.MaxInt64
		}
		return int64(i - d)
	}
	if d-i > 1<<63 {
		return math.MinInt64
	}
	return -int64(d-i-1) - 1
}

// Add adds change (negative to subtract) at node and returns the replication delta (nil for
// 0). It fails with ErrIllegalChange when a total would overflow.
func (p *PNCounter) Add(node string, change int64) (*PNCounter, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	d, err := p.add(node, change)
	if err != nil || d == nil {
		return nil, err
	}
	p.join(d)
	p.pending.add(d)
	return d, nil
}

func (p *PNCounter) add(node string, change int64) (*PNCounter, error) {
	d := &PNCounter{inc: NewGCounter(), dec: NewGCounter()}
	var err error
	switch {
	case change > 0:
		d.inc, err = p.inc.increment(node, uint64(change))
	case change < 0:
		d.dec, err = p.dec.increment(node, uint64(-(change+1))+1)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("PNCounter change %d: %w", change, err)
	}
	if d.inc == nil {
		d.inc = NewGCounter()
	}
	if d.dec == nil {
		d.dec = NewGCounter()
	}
	return d, nil
}

// Merge joins a PNCounter state or delta.
func (p *PNCounter) Merge(other CRDT) error { return doMerge(p, other) }

// Apply applies a PNCounterDelta.
func (p *PNCounter) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(p, &p.pending, node, op, now)
}

// Clone returns a deep copy.
func (p *PNCounter) Clone() CRDT {
	c := p.copyState().(*PNCounter)
	c.pending = p.pending.clone()
	return c
}

// Equal reports whether other is a PNCounter with the same counts.
func (p *PNCounter) Equal(other CRDT) bool { return equal(p, other) }

// InitDelta is a PNCounterDelta with the value as change.
func (p *PNCounter) InitDelta(string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: &crdtpb.PNCounterDelta{Change: p.Value()}}}
}

// MarshalBinary is Encode.
func (p *PNCounter) MarshalBinary() ([]byte, error) { return Encode(p) }

func (p *PNCounter) impl() impl { return p }

func (p *PNCounter) join(o impl) {
	op := o.(*PNCounter)
	p.inc.join(op.inc)
	p.dec.join(op.dec)
}

func (p *PNCounter) apply(ctx *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Pncounter)
	if !ok {
		return nil, opKindMismatch(KindPNCounter, op)
	}
	pd, err := p.add(ctx.node, d.Pncounter.GetChange())
	if pd == nil || err != nil {
		return nil, err
	}
	return pd, nil
}

func (p *PNCounter) copyState() impl {
	return &PNCounter{inc: p.inc.copyState().(*GCounter), dec: p.dec.copyState().(*GCounter)}
}
