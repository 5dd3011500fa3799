package crdtlog

import (
	"cmp"
	"fmt"
	"math"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// LWWRegister is a last-write-wins register holding one protobuf Any. Each write carries a
// clock (int64) and the writing node; the write with the greatest (clock, node, value identity)
// wins, so ties are broken by node id (and, for one node writing twice with one clock, by the
// value bytes), never by arrival order.
//
// Clocks (crdtpb.CrdtClock) for a write at a node whose register holds clock c:
//   - DEFAULT: max(now, c+1), now being the caller's wall clock in Unix milliseconds. A write
//     wins over every write its node has seen; concurrent writes are ordered by wall clock, so
//     clock skew between nodes decides them (see docs/crdt.md).
//   - REVERSE: -now. The earliest write wins (first-write-wins); a later REVERSE write, or one
//     after a DEFAULT write, loses and leaves the register unchanged.
//   - CUSTOM: custom_clock_value.
//   - CUSTOM_AUTO_INCREMENT: max(custom_clock_value, c+1).
type LWWRegister struct {
	value *anypb.Any
	clock int64
	node  string
	pending
}

// NewLWWRegister returns an empty register (nothing written).
func NewLWWRegister() *LWWRegister { return &LWWRegister{} }

// Kind is KindLWWRegister.
func (*LWWRegister) Kind() Kind { return KindLWWRegister }

// Value returns a copy of the value, nil if nothing was written.
func (r *LWWRegister) Value() *anypb.Any { return cloneAny(r.value) }

// Clock returns the winning write's clock and node ("" if nothing was written).
func (r *LWWRegister) Clock() (int64, string) { return r.clock, r.node }

// Merge joins an LWWRegister state or delta.
func (r *LWWRegister) Merge(other CRDT) error { return doMerge(r, other) }

// Apply applies an LWWRegisterDelta (a missing value writes the empty Any).
func (r *LWWRegister) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(r, &r.pending, node, op, now)
}

// Clone returns a deep copy.
func (r *LWWRegister) Clone() CRDT {
	c := r.copyState().(*LWWRegister)
	c.pending = r.pending.clone()
	return c
}

// Equal reports whether other is an LWWRegister with the same write.
func (r *LWWRegister) Equal(other CRDT) bool { return equal(r, other) }

// InitDelta is an LWWRegisterDelta with the value (no value for an empty register).
func (r *LWWRegister) InitDelta(string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: &crdtpb.LWWRegisterDelta{Value: r.Value()}}}
}

// MarshalBinary is Encode.
func (r *LWWRegister) MarshalBinary() ([]byte, error) { return Encode(r) }

func (r *LWWRegister) impl() impl { return r }

// less orders writes; the empty register is below every write.
func (r *LWWRegister) less(o *LWWRegister) bool {
	if o.value == nil {
		return false
	}
	if r.value == nil {
		return true
	}
	if c := cmp.Compare(r.clock, o.clock); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(r.node, o.node); c != 0 {
		return c < 0
	}
	return elementID(r.value) < elementID(o.value)
}

func (r *LWWRegister) join(o impl) {
	or := o.(*LWWRegister)
	if r.less(or) {
		r.value, r.clock, r.node = cloneAny(or.value), or.clock, or.node
	}
}

func incSat(c int64) int64 {
	if c == math.MaxInt64 {
		return c
	}
	return c + 1
}

func negSat(n int64) int64 {
	if n == math.MinInt64 {
		return math.MaxInt64
	}
	return -n
}

func (r *LWWRegister) apply(ctx *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Lwwregister)
	if !ok {
		return nil, opKindMismatch(KindLWWRegister, op)
	}
	l := d.Lwwregister
	value := cloneAny(l.GetValue())
	if value == nil {
		value = &anypb.Any{}
	}
	written := r.value != nil
	var clock int64
	switch l.GetClock() {
	case crdtpb.CrdtClock_DEFAULT:
		clock = ctx.now
		if written && clock <= r.clock {
			clock = incSat(r.clock)
		}
	case crdtpb.CrdtClock_REVERSE:
		clock = negSat(ctx.now)
	case crdtpb.CrdtClock_CUSTOM:
		clock = l.GetCustomClockValue()
	case crdtpb.CrdtClock_CUSTOM_AUTO_INCREMENT:
		clock = l.GetCustomClockValue()
		if written && clock <= r.clock {
			clock = incSat(r.clock)
		}
	default:
		return nil, fmt.Errorf("%w: unknown LWWRegister clock %d", ErrInvalidOp, l.GetClock())
	}
	w := &LWWRegister{value: value, clock: clock, node: ctx.node}
	if ctx.naive && !r.less(w) {
		// The user function's own copy takes its write regardless of the clock.
		w.clock = incSat(r.clock)
	}
	if !r.less(w) {
		return nil, nil // the write loses (or repeats the winning write)
	}
	return w, nil
}

func (r *LWWRegister) copyState() impl {
	return &LWWRegister{value: cloneAny(r.value), clock: r.clock, node: r.node}
}

// Flag is a boolean that can only be enabled. Merge is logical or.
type Flag struct {
	enabled bool
	pending
}

// NewFlag returns a disabled flag.
func NewFlag() *Flag { return &Flag{} }

// Kind is KindFlag.
func (*Flag) Kind() Kind { return KindFlag }

// Enabled reports whether the flag is on.
func (f *Flag) Enabled() bool { return f.enabled }

// Merge joins a Flag state or delta.
func (f *Flag) Merge(other CRDT) error { return doMerge(f, other) }

// Apply applies a FlagDelta. value true enables the flag; value false is a no-op on a disabled
// flag and ErrIllegalChange on an enabled one (a flag cannot be disabled).
func (f *Flag) Apply(node string, op *crdtpb.CrdtDelta, now int64) (CRDT, error) {
	return doApply(f, &f.pending, node, op, now)
}

// Clone returns a deep copy.
func (f *Flag) Clone() CRDT { return &Flag{enabled: f.enabled, pending: f.pending.clone()} }

// Equal reports whether other is a Flag with the same value.
func (f *Flag) Equal(other CRDT) bool { return equal(f, other) }

// InitDelta is a FlagDelta with the value.
func (f *Flag) InitDelta(string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Flag{Flag: &crdtpb.FlagDelta{Value: f.enabled}}}
}

// MarshalBinary is Encode.
func (f *Flag) MarshalBinary() ([]byte, error) { return Encode(f) }

func (f *Flag) impl() impl { return f }

func (f *Flag) join(o impl) { f.enabled = f.enabled || o.(*Flag).enabled }

func (f *Flag) apply(_ *applyCtx, op *crdtpb.CrdtDelta) (impl, error) {
	d, ok := op.GetDelta().(*crdtpb.CrdtDelta_Flag)
	if !ok {
		return nil, opKindMismatch(KindFlag, op)
	}
	switch {
	case d.Flag.GetValue() && !f.enabled:
		return &Flag{enabled: true}, nil
	case !d.Flag.GetValue() && f.enabled:
		return nil, fmt.Errorf("%w: a Flag cannot be disabled", ErrIllegalChange)
	}
	return nil, nil
}

func (f *Flag) copyState() impl { return &Flag{enabled: f.enabled} }
