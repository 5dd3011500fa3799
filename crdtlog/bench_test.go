package crdtlog_test

import (
	"fmt"
	"testing"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// benchORSet returns an ORSet of n elements added at three nodes.
func benchORSet(b *testing.B, n int) crdtlog.CRDT {
	s := crdtlog.NewORSet()
	for i := range n {
		if _, err := s.Apply(nodes[i%3], orset(false, nil, elems(fmt.Sprint(i))), now); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func BenchmarkApplyGCounter(b *testing.B) {
	c := crdtlog.NewGCounter()
	o := gc(1)
	for b.Loop() {
		if _, err := c.Apply("node-a", o, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyORSet1000(b *testing.B) {
	s := benchORSet(b, 1000)
	add, remove := orset(false, nil, elems("new")), orset(false, elems("new"), nil)
	for b.Loop() {
		if _, err := s.Apply("node-a", add, now); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Apply("node-a", remove, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyORMapCounter(b *testing.B) {
	m := crdtlog.NewORMap()
	for i := range 100 {
		if _, err := m.Apply(nodes[i%3], op(&crdtpb.ORMapDelta{Added: []*crdtpb.ORMapEntryDelta{entry(fmt.Sprint(i), pn(1))}}), now); err != nil {
			b.Fatal(err)
		}
	}
	o := op(&crdtpb.ORMapDelta{Updated: []*crdtpb.ORMapEntryDelta{entry("7", pn(1))}})
	for b.Loop() {
		if _, err := m.Apply("node-a", o, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMergeDeltaORSet1000(b *testing.B) {
	s := benchORSet(b, 1000)
	other := s.Clone()
	d, err := other.Apply("node-b", orset(false, nil, elems("new")), now)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := s.Merge(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeDecodeORSet1000(b *testing.B) {
	s := benchORSet(b, 1000)
	for b.Loop() {
		enc, err := crdtlog.Encode(s)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := crdtlog.Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}
