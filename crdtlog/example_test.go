package crdtlog_test

import (
	"fmt"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

func item(s string) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/example.Item", Value: []byte(s)}
}

// The runtime's loop for one CRDT entity: create it from the first operation, apply user
// function updates, publish the pending delta, merge remote deltas and tell the user function
// what changed.
func Example() {
	// A command at node-a: the user function's state_action.update.
	update := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: 3}}}
	a, err := crdtlog.NewFromOp(update)
	if err != nil {
		panic(err)
	}
	if _, err := a.Apply("node-a", update, 1_700_000_000_000); err != nil {
		panic(err)
	}

	// Publish the pending delta to the .crdt topic.
	record, err := crdtlog.Encode(a.Delta())
	if err != nil {
		panic(err)
	}
	a.ResetDelta()

	// node-b consumes the record (twice: duplicates are harmless) and tells its user function.
	b := crdtlog.New(crdtlog.KindGCounter)
	before := b.Clone()
	for range 2 {
		d, err := crdtlog.Decode(record)
		if err != nil {
			panic(err)
		}
		if err := b.Merge(d); err != nil {
			panic(err)
		}
	}
	change, err := crdtlog.ChangeDelta(before, b, "node-b")
	if err != nil {
		panic(err)
	}
	fmt.Println("node-b value:", b.(*crdtlog.GCounter).Value())
	fmt.Println("to node-b's user function:", change.GetGcounter().GetIncrement())
	fmt.Println("init delta:", b.InitDelta("node-b").GetGcounter().GetIncrement())
	// Output:
	// node-b value: 3
	// to node-b's user function: 3
	// init delta: 3
}

// An add concurrent with a remove wins: the remove only removes the adds it observed.
func ExampleORSet() {
	add := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{Added: []*anypb.Any{item("apple")}}}}
	remove := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{Removed: []*anypb.Any{item("apple")}}}}

	a, b := crdtlog.NewORSet(), crdtlog.NewORSet()
	d, _ := a.Apply("node-a", add, 0)
	_ = b.Merge(d)

	da, _ := a.Apply("node-a", add, 0)    // node-a adds apple again...
	db, _ := b.Apply("node-b", remove, 0) // ...while node-b removes it
	_ = a.Merge(db)
	_ = b.Merge(da)
	fmt.Println(a.Contains(item("apple")), b.Contains(item("apple")), a.Equal(b))
	// Output: true true true
}

// A write whose clock loses leaves the register unchanged; Expected and ChangeDelta give the
// correction the user function, which applied its own write, must receive.
func ExampleLWWRegister() {
	r := crdtlog.NewLWWRegister()
	first := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: &crdtpb.LWWRegisterDelta{
		Value: item("first"), Clock: crdtpb.CrdtClock_CUSTOM, CustomClockValue: 10}}}
	older := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: &crdtpb.LWWRegisterDelta{
		Value: item("older"), Clock: crdtpb.CrdtClock_CUSTOM, CustomClockValue: 5}}}
	_, _ = r.Apply("node-a", first, 0)

	view, _ := crdtlog.Expected(r, "node-a", older, 0)
	d, _ := r.Apply("node-a", older, 0)
	correction, _ := crdtlog.ChangeDelta(view, r, "node-a")
	fmt.Println(d == nil, string(r.Value().GetValue()), string(correction.GetLwwregister().GetValue().GetValue()))
	// Output: true first first
}

// Values of a map are CRDTs; entry deltas nest.
func ExampleORMap() {
	m := crdtlog.NewORMap()
	op := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: &crdtpb.ORMapDelta{
		Added: []*crdtpb.ORMapEntryDelta{{
			Key:   item("apples"),
			Delta: &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: &crdtpb.PNCounterDelta{Change: 2}}},
		}},
	}}}
	if _, err := m.Apply("node-a", op, 0); err != nil {
		panic(err)
	}
	wrong := &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: &crdtpb.ORMapDelta{
		Updated: []*crdtpb.ORMapEntryDelta{{
			Key:   item("apples"),
			Delta: &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Flag{Flag: &crdtpb.FlagDelta{Value: true}}},
		}},
	}}}
	_, err := m.Apply("node-a", wrong, 0)
	fmt.Println(m.Get(item("apples")).(*crdtlog.PNCounter).Value())
	fmt.Println(err)
	// Output:
	// 2
	// crdtlog: CRDT kind mismatch: ORMapDelta.updated[0]: Flag delta for a PNCounter value
}

// Votes count per node; a node that leaves is removed.
func ExampleVote() {
	v := crdtlog.NewVote()
	_, _ = v.Cast("node-a", true)
	_, _ = v.Cast("node-b", false)
	_, _ = v.Cast("node-c", true)
	fmt.Println(v.Counts("node-b"))
	v.Remove("node-c")
	fmt.Println(v.Counts("node-b"))
	// Output:
	// false 2 3
	// false 1 2
}
