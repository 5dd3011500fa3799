package bench

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

func TestOwnerView(t *testing.T) {
	v := &ownerView{owner: map[int32]string{}}
	rec := func(p int32, node string, released bool) []byte {
		b, err := proto.Marshal(&kstatev1.OwnerRecord{Partition: p, NodeId: node, Released: released})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v.apply(rec(0, "a", false))
	v.apply(rec(1, "b", false))
	v.apply(rec(2, "a", false))
	v.apply([]byte{0xff}) // undecodable: ignored
	if got := v.ownedBy("a"); !slices.Equal(got, []int32{0, 2}) {
		t.Fatalf("ownedBy(a) = %v", got)
	}
	if !v.balanced(3, []string{"a", "b"}) {
		t.Fatal("3 partitions over a and b: balanced")
	}
	if v.balanced(3, []string{"a", "b", "c"}) {
		t.Fatal("c owns nothing: not balanced")
	}
	v.apply(rec(1, "b", true))
	if v.balanced(3, []string{"a", "b"}) {
		t.Fatal("partition 1 released: not balanced")
	}
	v.apply(rec(1, "c", false))
	if v.balanced(3, []string{"a", "b"}) {
		t.Fatal("partition 1 owned by c, which is not live: not balanced")
	}
}

func TestRecovery(t *testing.T) {
	r := &recovery{lastOK: map[int32]time.Time{}, pending: map[int32]bool{}}
	kill := time.Now()
	done := r.arm([]int32{3, 5}, kill)
	r.ok(3, kill.Add(-time.Millisecond), kill.Add(time.Second)) // started before the kill: not a sample
	r.ok(7, kill.Add(time.Millisecond), kill.Add(time.Second))  // not a partition of the killed node
	r.ok(3, kill.Add(2*time.Second), kill.Add(3*time.Second))
	r.ok(3, kill.Add(3*time.Second), kill.Add(4*time.Second)) // only the first success counts
	select {
	case <-done:
		t.Fatal("done before partition 5 recovered")
	default:
	}
	r.ok(5, kill.Add(time.Second), kill.Add(4500*time.Millisecond))
	select {
	case <-done:
	default:
		t.Fatal("not done after both partitions recovered")
	}
	if want := []time.Duration{3 * time.Second, 4500 * time.Millisecond}; !slices.Equal(r.samples, want) {
		t.Fatalf("samples %v, want %v", r.samples, want)
	}
	if r.disarm() != 0 {
		t.Fatal("nothing should be pending")
	}
	r.arm([]int32{1}, time.Now())
	if r.disarm() != 1 {
		t.Fatal("partition 1 never recovered: one unrecovered")
	}
	if r.fresh(8, time.Minute) {
		t.Fatal("partitions 0..7 have not all had a success")
	}
}
