package partition

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"testing"
)

func TestEscapedRoundTripAndOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0x00, 0x01, 0x02, 'a', 'b', 0xfe, 0xff}
	var strs []string
	strs = append(strs, "", "\x00", "\x00\x00", "\x00\x01", "\x01", "a", "a\x00", "a\x00b", "ab", "\xff")
	for range 500 {
		n := rng.IntN(6)
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		strs = append(strs, string(b))
	}
	for _, s := range strs {
		enc := appendEscaped(nil, s)
		got, rest, err := decodeEscaped(append(enc, 0x42))
		if err != nil || got != s || !bytes.Equal(rest, []byte{0x42}) {
			t.Fatalf("round trip of %q: got %q rest %x err %v", s, got, rest, err)
		}
	}
	// Order is kept, and no encoding is a prefix of another's.
	sort.Strings(strs)
	for i := 1; i < len(strs); i++ {
		a, b := appendEscaped(nil, strs[i-1]), appendEscaped(nil, strs[i])
		if strs[i-1] == strs[i] {
			continue
		}
		if bytes.Compare(a, b) >= 0 {
			t.Fatalf("order lost: %q (%x) >= %q (%x)", strs[i-1], a, strs[i], b)
		}
		if bytes.HasPrefix(b, a) {
			t.Fatalf("%x is a prefix of %x", a, b)
		}
	}
}

func TestDecodeEscapedRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {'a'}, {'a', 0x00}, {0x00, 0x05}} {
		if _, _, err := decodeEscaped(b); err == nil {
			t.Errorf("decodeEscaped(%x) accepted", b)
		}
	}
}

func TestEntityBoundsHoldOnlyTheEntity(t *testing.T) {
	ids := []string{"", "a", "a\x00", "a\x00\x01", "a\x01", "ab", "b", "\x00"}
	pids := []string{"cart", "cart\x00", "car"}
	for _, pid := range pids {
		for _, id := range ids {
			lower, upper := entityBounds(7, pid, id)
			for _, pid2 := range pids {
				for _, id2 := range ids {
					for _, k := range [][]byte{
						appendMetaKey(nil, 7, pid2, id2),
						appendSnapshotKey(nil, 7, pid2, id2),
						appendEventKey(nil, 7, pid2, id2, 1),
						appendEventKey(nil, 7, pid2, id2, 1<<62),
					} {
						in := bytes.Compare(k, lower) >= 0 && bytes.Compare(k, upper) < 0
						if want := pid == pid2 && id == id2; in != want {
							t.Fatalf("key %x of %q/%q in bounds of %q/%q: %v, want %v", k, pid2, id2, pid, id, in, want)
						}
					}
				}
			}
			// Other partitions and other tags stay outside.
			for _, k := range [][]byte{appendMetaKey(nil, 6, pid, id), appendMetaKey(nil, 8, pid, id), appendValueKey(nil, 7, pid, id), offsetKey(7, pid)} {
				if bytes.Compare(k, lower) >= 0 && bytes.Compare(k, upper) < 0 {
					t.Fatalf("foreign key %x inside %q/%q", k, pid, id)
				}
			}
		}
	}
}

func TestEventKeysSortBySequence(t *testing.T) {
	prev := appendSnapshotKey(nil, 0, "p", "e")
	if meta := appendMetaKey(nil, 0, "p", "e"); bytes.Compare(meta, prev) >= 0 {
		t.Fatal("meta must sort before snapshot")
	}
	for _, seq := range []int64{1, 2, 255, 256, 1 << 20, 1 << 40, 1<<63 - 1} {
		k := appendEventKey(nil, 0, "p", "e", seq)
		if bytes.Compare(prev, k) >= 0 {
			t.Fatalf("event %d does not sort after its predecessor", seq)
		}
		ek, err := decodeEntityKey(k)
		if err != nil || ek.seq != seq || ek.sub != subEvent || ek.persistenceID != "p" || ek.entityID != "e" {
			t.Fatalf("decode event key %d: %+v %v", seq, ek, err)
		}
		prev = k
	}
}

func TestPartitionBounds(t *testing.T) {
	for _, p := range []int32{0, 1, 255, 256, 1<<31 - 1} {
		lower, upper := partitionBounds(p)
		for _, k := range [][]byte{offsetKey(p, "t"), appendMetaKey(nil, p, "x", "y"), appendEventKey(nil, p, "\xff", "\xff", 1<<63-1), appendValueKey(nil, p, "\xff\xff", "\xff")} {
			if bytes.Compare(k, lower) < 0 || bytes.Compare(k, upper) >= 0 {
				t.Fatalf("key %x of partition %d outside [%x, %x)", k, p, lower, upper)
			}
		}
		if bytes.Compare(schemaKey, upper) < 0 {
			t.Fatalf("schema key inside partition %d", p)
		}
	}
}

func TestDecodeEntityKeyRejects(t *testing.T) {
	good := appendEventKey(nil, 1, "p", "e", 3)
	bad := [][]byte{
		nil,
		offsetKey(1, "t"),
		good[:len(good)-1],
		append(appendMetaKey(nil, 1, "p", "e"), 0),
		append(appendEntityPrefix(nil, 1, "p", "e"), 0x09),
		appendEntityPrefix(nil, 1, "p", "e"),
	}
	for _, k := range bad {
		if _, err := decodeEntityKey(k); err == nil {
			t.Errorf("decodeEntityKey(%x) accepted", k)
		}
	}
}
