package partition

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

const idemTopic = "kstate.app.idempotency"

// idemRec is an `.idempotency` record of entity id remembering key's reply until expires.
func idemRec(p int32, id, key, reply string, expires time.Time, off int64) Record {
	v, err := proto.Marshal(&kstatev1.IdempotencyRecord{
		PersistenceId: testPID, Key: key, ExpiresAt: timestamppb.New(expires), CommandId: "c-" + key,
		Outcome: &kstatev1.IdempotencyRecord_Reply{Reply: &cloudstatepb.Reply{Payload: &anypb.Any{Value: []byte(reply)}}},
	})
	if err != nil {
		panic(err)
	}
	return Record{Kind: Idempotency, Topic: idemTopic, Partition: p, Offset: off, Key: []byte(id), Value: v}
}

func TestIdempotencyStoreLoadAndExpire(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1_700_000_000, 0)
	recs := []Record{
		idemRec(3, "alice", "k1", "r1", t0.Add(time.Hour), 0),
		idemRec(3, "alice", "k2", "r2", t0.Add(2*time.Hour), 1),
		idemRec(3, "bob", "k1", "r3", t0.Add(time.Hour), 2),
		// The same key again, later (after the first expired and a retry ran): replaces it.
		idemRec(3, "bob", "k1", "r4", t0.Add(3*time.Hour), 3),
	}
	if err := s.Apply(3, recs, nil); err != nil {
		t.Fatal(err)
	}
	load := func(id, key string) string {
		t.Helper()
		ir, ok, err := s.LoadIdempotency(3, testPID, id, key)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return ""
		}
		return string(ir.GetReply().GetPayload().GetValue())
	}
	if got := load("alice", "k1"); got != "r1" {
		t.Fatalf("alice/k1 = %q, want r1", got)
	}
	if got := load("bob", "k1"); got != "r4" {
		t.Fatalf("bob/k1 = %q, want the later r4", got)
	}
	if got := load("carol", "k1"); got != "" {
		t.Fatalf("carol/k1 = %q, want none", got)
	}
	// Another partition does not see p's entries.
	if _, ok, _ := s.LoadIdempotency(4, testPID, "alice", "k1"); ok {
		t.Fatal("partition 4 sees partition 3's key")
	}

	// The keys of an entity, bounded.
	if keys, complete, err := s.IdempotencyKeys(3, testPID, "alice", 10); err != nil || !complete || len(keys) != 2 || keys[0] != "k1" || keys[1] != "k2" {
		t.Fatalf("alice's keys: %v %v %v", keys, complete, err)
	}
	if keys, complete, err := s.IdempotencyKeys(3, testPID, "alice", 1); err != nil || complete || len(keys) != 1 {
		t.Fatalf("alice's keys, limit 1: %v %v %v", keys, complete, err)
	}
	if keys, complete, err := s.IdempotencyKeys(3, testPID, "ali", 10); err != nil || !complete || len(keys) != 0 {
		t.Fatalf("a prefix of alice has no keys: %v %v %v", keys, complete, err)
	}

	// Nothing has expired before the first expiry.
	if n, err := s.ExpireIdempotency(3, t0.Add(time.Hour-time.Nanosecond), 100); err != nil || n != 0 {
		t.Fatalf("expire before the first expiry: %d, %v", n, err)
	}
	// At the first expiry: alice/k1 goes; bob/k1's old index entry is consumed but its newer
	// record stays.
	if n, err := s.ExpireIdempotency(3, t0.Add(time.Hour), 100); err != nil || n != 2 {
		t.Fatalf("expire at the first expiry: %d, %v; want 2 entries consumed", n, err)
	}
	if got := load("alice", "k1"); got != "" {
		t.Fatalf("alice/k1 = %q after expiry", got)
	}
	if got := load("bob", "k1"); got != "r4" {
		t.Fatalf("bob/k1 = %q, the replacing record must survive the old expiry", got)
	}
	// The limit bounds one sweep.
	if n, err := s.ExpireIdempotency(3, t0.Add(4*time.Hour), 1); err != nil || n != 1 {
		t.Fatalf("limited sweep: %d, %v", n, err)
	}
	if n, err := s.ExpireIdempotency(3, t0.Add(4*time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
	if load("alice", "k2") != "" || load("bob", "k1") != "" {
		t.Fatal("entries left after everything expired")
	}
	// The records moved the topic's checkpoint like any other.
	offs, err := s.Offsets(3)
	if err != nil || offs[idemTopic] != 4 {
		t.Fatalf("checkpoint %v, %v; want 4", offs, err)
	}
}

func TestIdempotencyRecordValidation(t *testing.T) {
	good := idemRec(0, "alice", "k", "r", time.Unix(2_000_000_000, 0), 0)
	if err := Validate(&good); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	bad := map[string]*kstatev1.IdempotencyRecord{
		"no persistence id": {Key: "k", ExpiresAt: timestamppb.Now(), Outcome: &kstatev1.IdempotencyRecord_Failure{Failure: &cloudstatepb.Failure{}}},
		"no key":            {PersistenceId: testPID, ExpiresAt: timestamppb.Now(), Outcome: &kstatev1.IdempotencyRecord_Failure{Failure: &cloudstatepb.Failure{}}},
		"no expiry":         {PersistenceId: testPID, Key: "k", Outcome: &kstatev1.IdempotencyRecord_Failure{Failure: &cloudstatepb.Failure{}}},
		"no outcome":        {PersistenceId: testPID, Key: "k", ExpiresAt: timestamppb.Now()},
	}
	for name, ir := range bad {
		v, _ := proto.Marshal(ir)
		r := Record{Kind: Idempotency, Topic: idemTopic, Key: []byte("alice"), Value: v}
		if err := Validate(&r); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: %v, want ErrMalformedRecord", name, err)
		}
	}
	for name, r := range map[string]Record{
		"tombstone": {Kind: Idempotency, Topic: idemTopic, Key: []byte("alice"), Tombstone: true},
		"garbage":   {Kind: Idempotency, Topic: idemTopic, Key: []byte("alice"), Value: []byte{0xff, 0xff}},
		"no key":    {Kind: Idempotency, Topic: idemTopic, Value: good.Value},
	} {
		if err := Validate(&r); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: %v, want ErrMalformedRecord", name, err)
		}
	}
}
