package partition

import (
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

const (
	testPID      = "cart"
	valuePID     = "vcart"
	eventsTopic  = "kstate.cart.events"
	snapsTopic   = "kstate.cart.snapshots"
	stateTopic   = "kstate.vcart.state"
	eventTypeURL = "type.googleapis.com/test.ItemAdded"
	snapTypeURL  = "type.googleapis.com/test.Cart"
	valueTypeURL = "type.googleapis.com/test.Value"
)

// eventRec is the `.events` record of entity id's event seq at offset off.
func eventRec(p int32, id string, seq, off int64) Record {
	return Record{
		Kind: Events, PersistenceID: testPID, Topic: eventsTopic, Partition: p, Offset: off,
		Key:   []byte(id),
		Value: []byte(fmt.Sprintf("%s-ev-%d", id, seq)),
		Headers: []Header{
			{Key: kstatev1.HeaderSequence, Value: []byte(strconv.FormatInt(seq, 10))},
			{Key: kstatev1.HeaderType, Value: []byte(eventTypeURL)},
			{Key: kstatev1.HeaderCommandID, Value: []byte(fmt.Sprintf("cmd-%s-%d", id, seq))},
		},
	}
}

// snapPayload is the snapshot an entity has at seq.
func snapPayload(id string, seq int64) *anypb.Any {
	return &anypb.Any{TypeUrl: snapTypeURL, Value: []byte(fmt.Sprintf("%s-snap-%d", id, seq))}
}

// snapRec is the `.snapshots` record of entity id's snapshot at seq, at offset off.
func snapRec(p int32, id string, seq, off int64) Record {
	v, err := proto.Marshal(&kstatev1.SnapshotRecord{Sequence: seq, Snapshot: snapPayload(id, seq), JournalOffset: 1000 + seq})
	if err != nil {
		panic(err)
	}
	return Record{Kind: Snapshots, PersistenceID: testPID, Topic: snapsTopic, Partition: p, Offset: off, Key: []byte(id), Value: v}
}

// stateRec is a `.state` record; an empty val is a tombstone.
func stateRec(p int32, id, val string, off int64) Record {
	r := Record{Kind: State, PersistenceID: valuePID, Topic: stateTopic, Partition: p, Offset: off, Key: []byte(id)}
	if val == "" {
		r.Tombstone = true
		return r
	}
	r.Value = []byte(val)
	r.Headers = []Header{{Key: kstatev1.HeaderType, Value: []byte(valueTypeURL)}}
	return r
}

// storedEvent is what eventRec stores.
func storedEvent(id string, seq, off int64) *kstatev1.StoredEvent {
	return &kstatev1.StoredEvent{
		Sequence:  seq,
		Payload:   &anypb.Any{TypeUrl: eventTypeURL, Value: []byte(fmt.Sprintf("%s-ev-%d", id, seq))},
		Offset:    off,
		CommandId: fmt.Sprintf("cmd-%s-%d", id, seq),
	}
}

func protoEq(a, b proto.Message) bool { return proto.Equal(a, b) }

func mustNoErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
