package partition

import (
	"strings"
	"testing"
	"time"
)

func TestLineageRoundTripAndDrop(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	mustNoErr(t, err)
	defer s.Close()
	if _, ok, err := s.Lineage(3); err != nil || ok {
		t.Fatalf("new partition: ok=%v err=%v", ok, err)
	}
	want := Lineage{TopicIDs: map[string][16]byte{"a.state": {1, 2}, "a.events": {3}}, Followed: time.UnixMilli(1_700_000_000_123)}
	mustNoErr(t, s.SetLineage(3, want))
	got, ok, err := s.Lineage(3)
	mustNoErr(t, err)
	if !ok || !got.Followed.Equal(want.Followed) || len(got.TopicIDs) != 2 || got.TopicIDs["a.state"] != want.TopicIDs["a.state"] || got.TopicIDs["a.events"] != want.TopicIDs["a.events"] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	mustNoErr(t, s.DropPartition(3))
	if _, ok, _ := s.Lineage(3); ok {
		t.Fatal("DropPartition kept the lineage")
	}
}

func TestDecodeLineageRejectsGarbage(t *testing.T) {
	good := Lineage{TopicIDs: map[string][16]byte{"t": {9}}, Followed: time.UnixMilli(5)}.encode()
	for _, b := range [][]byte{nil, {2}, good[:len(good)-1], append(append([]byte(nil), good...), 0)} {
		if _, err := decodeLineage(b); err == nil {
			t.Errorf("decodeLineage(%x) accepted", b)
		}
	}
}

func TestContinuable(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ids := map[string][16]byte{"ns.v.state": {1}, "ns.e.events": {2}}
	dr := map[string]time.Duration{"ns.v.state": time.Hour}
	fresh := Lineage{TopicIDs: map[string][16]byte{"ns.v.state": {1}, "ns.e.events": {2}}, Followed: now.Add(-time.Minute)}
	for _, tc := range []struct {
		name   string
		stored Lineage
		ok     bool
		ckpt   bool
		want   string // substring of the reason; "" means continuable
	}{
		{"nothing stored", Lineage{}, false, false, ""},
		{"fresh image", fresh, true, true, ""},
		{"checkpoints without lineage", Lineage{}, false, true, "no lineage"},
		{"recreated topic", Lineage{TopicIDs: map[string][16]byte{"ns.v.state": {7}}, Followed: fresh.Followed}, true, true, "created again"},
		{"older than delete.retention.ms", Lineage{TopicIDs: fresh.TopicIDs, Followed: now.Add(-2 * time.Hour)}, true, true, "delete.retention.ms"},
		{"within the margin of delete.retention.ms", Lineage{TopicIDs: fresh.TopicIDs, Followed: now.Add(-59*time.Minute - 30*time.Second)}, true, true, "delete.retention.ms"},
		{"a topic the image never read", Lineage{TopicIDs: map[string][16]byte{"ns.e.events": {2}}, Followed: now.Add(-2 * time.Hour)}, true, true, ""},
	} {
		got := Continuable(tc.stored, tc.ok, tc.ckpt, ids, dr, now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
