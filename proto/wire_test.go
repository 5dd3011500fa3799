package proto_test

import (
	"bytes"
	"encoding/hex"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// The expected encodings below are written out by hand from the protocol's field numbers and
// types (Cloudstate 0.2, HEAD layout): a tag byte is field<<3 | wire type (0 varint, 2 length
// delimited), nested messages are length prefixed. They do not come from the generated code, so
// a renumbered or retyped field fails here.
//
// Fields are written in field-number order. Encoders may emit fields in any order (Go's emits
// oneof members after the other fields), so the comparison is modulo field order at every level
// of nesting; everything else is byte for byte.

// wire joins hex fragments ("0a 01 73") into bytes.
func wire(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(parts, ""), " ", ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

// anyT is Any{type_url: "t", value: "v"}: 0a 01 't' 12 01 'v', 6 bytes.
func anyT() *anypb.Any { return &anypb.Any{TypeUrl: "t", Value: []byte("v")} }

const anyHex = "0a 01 74 12 01 76"

// md1 is Metadata{entries: [{key: "k", string_value: "v"}]}: 8 bytes.
func md1() *cloudstatepb.Metadata {
	return &cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{
		{Key: "k", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "v"}},
	}}
}

const md1Hex = "0a 06 0a 01 6b 12 01 76"

// canonical re-encodes b with the fields of every message level sorted by field number (stable,
// so repeated fields keep their order). md says which fields hold nested messages.
func canonical(t *testing.T, md protoreflect.MessageDescriptor, b []byte) []byte {
	t.Helper()
	type field struct {
		num protowire.Number
		raw []byte
	}
	var fields []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag in % x: %v", b, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			t.Fatalf("bad field %d in % x: %v", num, b, protowire.ParseError(m))
		}
		raw := b[:n+m]
		if fd := md.Fields().ByNumber(num); fd != nil && fd.Message() != nil && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			raw = protowire.AppendBytes(protowire.AppendTag(nil, num, typ), canonical(t, fd.Message(), v))
		}
		fields = append(fields, field{num, raw})
		b = b[n+m:]
	}
	sort.SliceStable(fields, func(i, j int) bool { return fields[i].num < fields[j].num })
	var out []byte
	for _, f := range fields {
		out = append(out, f.raw...)
	}
	return out
}

type wireCase struct {
	name string
	msg  proto.Message
	want []string // hex fragments
}

func checkWire(t *testing.T, cases []wireCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := wire(t, c.want...)
			got, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.msg)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			md := c.msg.ProtoReflect().Descriptor()
			if !bytes.Equal(canonical(t, md, got), canonical(t, md, want)) {
				t.Fatalf("encoding of %T\n got  % x\n want % x", c.msg, got, want)
			}
			back := c.msg.ProtoReflect().Type().New().Interface()
			if err := proto.Unmarshal(want, back); err != nil {
				t.Fatalf("unmarshal expected bytes: %v", err)
			}
			if len(back.ProtoReflect().GetUnknown()) != 0 {
				t.Fatalf("expected bytes decode with unknown fields % x", back.ProtoReflect().GetUnknown())
			}
			if !proto.Equal(back, c.msg) {
				t.Fatalf("expected bytes decode to %v, want %v", back, c.msg)
			}
		})
	}
}

func TestWireCloudstate(t *testing.T) {
	checkWire(t, []wireCase{
		{"MetadataEntry/string", &cloudstatepb.MetadataEntry{Key: "k", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "v"}},
			[]string{"0a 01 6b", "12 01 76"}},
		{"MetadataEntry/bytes", &cloudstatepb.MetadataEntry{Key: "b", Value: &cloudstatepb.MetadataEntry_BytesValue{BytesValue: []byte{0xff}}},
			[]string{"0a 01 62", "1a 01 ff"}},
		{"Metadata", md1(), []string{md1Hex}},
		{"Reply", &cloudstatepb.Reply{Payload: anyT(), Metadata: md1()},
			[]string{"0a 06", anyHex, "12 08", md1Hex}},
		{"Forward", &cloudstatepb.Forward{ServiceName: "s", CommandName: "c", Payload: anyT(), Metadata: md1()},
			[]string{"0a 01 73", "12 01 63", "1a 06", anyHex, "22 08", md1Hex}},
		{"ClientAction/reply", &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{Payload: anyT()}}},
			[]string{"0a 08", "0a 06", anyHex}},
		{"ClientAction/forward", &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: &cloudstatepb.Forward{ServiceName: "s"}}},
			[]string{"12 03", "0a 01 73"}},
		{"ClientAction/failure", &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{Description: "d"}}},
			[]string{"1a 03", "12 01 64"}},
		{"SideEffect", &cloudstatepb.SideEffect{ServiceName: "s", CommandName: "c", Payload: anyT(), Synchronous: true, Metadata: md1()},
			[]string{"0a 01 73", "12 01 63", "1a 06", anyHex, "20 01", "2a 08", md1Hex}},
		{"Command", &cloudstatepb.Command{EntityId: "e", Id: 7, Name: "n", Payload: anyT(), Streamed: true, Metadata: md1()},
			[]string{"0a 01 65", "10 07", "1a 01 6e", "22 06", anyHex, "28 01", "32 08", md1Hex}},
		{"StreamCancelled", &cloudstatepb.StreamCancelled{EntityId: "e", Id: 2},
			[]string{"0a 01 65", "10 02"}},
		{"Failure", &cloudstatepb.Failure{CommandId: 5, Description: "d", Restart: true},
			[]string{"08 05", "12 01 64", "18 01"}},
		{"EntitySpec", &cloudstatepb.EntitySpec{
			Proto: []byte{0x0a},
			Entities: []*cloudstatepb.Entity{{
				EntityType: "t", ServiceName: "s", PersistenceId: "p",
				PassivationStrategy: &cloudstatepb.EntityPassivationStrategy{
					Strategy: &cloudstatepb.EntityPassivationStrategy_Timeout{Timeout: &cloudstatepb.TimeoutPassivationStrategy{Timeout: 100}},
				},
			}},
			ServiceInfo: &cloudstatepb.ServiceInfo{ServiceName: "n"},
		}, []string{
			"0a 01 0a",
			"12 0f", "0a 01 74", "12 01 73", "1a 01 70", "22 04", "0a 02", "08 64",
			"1a 03", "0a 01 6e",
		}},
		{"ServiceInfo", &cloudstatepb.ServiceInfo{
			ServiceName: "a", ServiceVersion: "b", ServiceRuntime: "c", SupportLibraryName: "d",
			SupportLibraryVersion: "e", ProtocolMajorVersion: 3, ProtocolMinorVersion: 2,
		}, []string{"0a 01 61", "12 01 62", "1a 01 63", "22 01 64", "2a 01 65", "30 03", "38 02"}},
		{"UserFunctionError", &cloudstatepb.UserFunctionError{Message: "m"}, []string{"0a 01 6d"}},
		{"ProxyInfo", &cloudstatepb.ProxyInfo{
			ProtocolMajorVersion: 1, ProtocolMinorVersion: 2, ProxyName: "p", ProxyVersion: "v",
			SupportedEntityTypes: []string{"a", "b"},
		}, []string{"08 01", "10 02", "1a 01 70", "22 01 76", "2a 01 61", "2a 01 62"}},
		{"Eventing/topic", &cloudstatepb.Eventing{
			In:  &cloudstatepb.EventSource{ConsumerGroup: "g", Source: &cloudstatepb.EventSource_Topic{Topic: "t"}},
			Out: &cloudstatepb.EventDestination{Destination: &cloudstatepb.EventDestination_Topic{Topic: "o"}},
		}, []string{"0a 06", "0a 01 67", "12 01 74", "12 03", "0a 01 6f"}},
		{"EventSource/event_log", &cloudstatepb.EventSource{Source: &cloudstatepb.EventSource_EventLog{EventLog: "l"}},
			[]string{"1a 01 6c"}},
	})
}

func TestWireEventSourced(t *testing.T) {
	checkWire(t, []wireCase{
		{"EventSourcedInit", &eventsourcedpb.EventSourcedInit{
			ServiceName: "s", EntityId: "e",
			Snapshot: &eventsourcedpb.EventSourcedSnapshot{SnapshotSequence: 5, Snapshot: anyT()},
		}, []string{"0a 01 73", "12 01 65", "1a 0a", "08 05", "12 06", anyHex}},
		{"EventSourcedEvent", &eventsourcedpb.EventSourcedEvent{Sequence: 3, Payload: anyT()},
			[]string{"08 03", "12 06", anyHex}},
		{"EventSourcedReply", &eventsourcedpb.EventSourcedReply{
			CommandId:    1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{}}},
			SideEffects:  []*cloudstatepb.SideEffect{{ServiceName: "s"}},
			Events:       []*anypb.Any{anyT(), anyT()},
			Snapshot:     anyT(),
		}, []string{"08 01", "12 02 0a 00", "1a 03 0a 01 73", "22 06", anyHex, "22 06", anyHex, "2a 06", anyHex}},
		{"EventSourcedStreamIn/init", &eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Init{
			Init: &eventsourcedpb.EventSourcedInit{ServiceName: "s"}}}, []string{"0a 03", "0a 01 73"}},
		{"EventSourcedStreamIn/event", &eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Event{
			Event: &eventsourcedpb.EventSourcedEvent{Sequence: 1}}}, []string{"12 02", "08 01"}},
		{"EventSourcedStreamIn/command", &eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{
			Command: &cloudstatepb.Command{Id: 1}}}, []string{"1a 02", "10 01"}},
		{"EventSourcedStreamOut/reply", &eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Reply{
			Reply: &eventsourcedpb.EventSourcedReply{CommandId: 1}}}, []string{"0a 02", "08 01"}},
		{"EventSourcedStreamOut/failure", &eventsourcedpb.EventSourcedStreamOut{Message: &eventsourcedpb.EventSourcedStreamOut_Failure{
			Failure: &cloudstatepb.Failure{Description: "d"}}}, []string{"12 03", "12 01 64"}},
	})
}

func TestWireValueEntity(t *testing.T) {
	checkWire(t, []wireCase{
		{"ValueEntityStreamIn/init", &valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{
			Init: &valueentitypb.ValueEntityInit{ServiceName: "s", EntityId: "e", State: &valueentitypb.ValueEntityInitState{Value: anyT()}},
		}}, []string{"0a 10", "0a 01 73", "12 01 65", "1a 08", "0a 06", anyHex}},
		// init.state is always set: an entity without state still sends the empty message.
		{"ValueEntityInit/empty state", &valueentitypb.ValueEntityInit{State: &valueentitypb.ValueEntityInitState{}},
			[]string{"1a 00"}},
		{"ValueEntityStreamIn/command", &valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{
			Command: &cloudstatepb.Command{Id: 1}}}, []string{"12 02", "10 01"}},
		{"ValueEntityStreamOut/reply", &valueentitypb.ValueEntityStreamOut{Message: &valueentitypb.ValueEntityStreamOut_Reply{
			Reply: &valueentitypb.ValueEntityReply{CommandId: 1}}}, []string{"0a 02", "08 01"}},
		{"ValueEntityStreamOut/failure", &valueentitypb.ValueEntityStreamOut{Message: &valueentitypb.ValueEntityStreamOut_Failure{
			Failure: &cloudstatepb.Failure{CommandId: 1}}}, []string{"12 02", "08 01"}},
		{"ValueEntityReply/update", &valueentitypb.ValueEntityReply{
			CommandId:    2,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Failure{Failure: &cloudstatepb.Failure{Description: "d"}}},
			SideEffects:  []*cloudstatepb.SideEffect{{Synchronous: true}},
			StateAction: &valueentitypb.ValueEntityAction{Action: &valueentitypb.ValueEntityAction_Update{
				Update: &valueentitypb.ValueEntityUpdate{Value: anyT()}}},
		}, []string{"08 02", "12 05 1a 03 12 01 64", "1a 02 20 01", "22 0a", "0a 08", "0a 06", anyHex}},
		{"ValueEntityAction/delete", &valueentitypb.ValueEntityAction{Action: &valueentitypb.ValueEntityAction_Delete{
			Delete: &valueentitypb.ValueEntityDelete{}}}, []string{"12 00"}},
	})
}

func TestWireAction(t *testing.T) {
	checkWire(t, []wireCase{
		// Field 1 is unused: service_name is field 2.
		{"ActionCommand/service_name", &actionpb.ActionCommand{ServiceName: "s"}, []string{"12 01 73"}},
		{"ActionCommand", &actionpb.ActionCommand{ServiceName: "s", Name: "n", Payload: anyT(), Metadata: md1()},
			[]string{"12 01 73", "1a 01 6e", "22 06", anyHex, "2a 08", md1Hex}},
		{"ActionResponse/failure", &actionpb.ActionResponse{
			Response:    &actionpb.ActionResponse_Failure{Failure: &cloudstatepb.Failure{Description: "d"}},
			SideEffects: []*cloudstatepb.SideEffect{{ServiceName: "s"}},
		}, []string{"0a 03 12 01 64", "22 03 0a 01 73"}},
		{"ActionResponse/reply", &actionpb.ActionResponse{Response: &actionpb.ActionResponse_Reply{Reply: &cloudstatepb.Reply{Payload: anyT()}}},
			[]string{"12 08", "0a 06", anyHex}},
		{"ActionResponse/forward", &actionpb.ActionResponse{Response: &actionpb.ActionResponse_Forward{Forward: &cloudstatepb.Forward{ServiceName: "s"}}},
			[]string{"1a 03", "0a 01 73"}},
	})
}

func flagDelta() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Flag{Flag: &crdtpb.FlagDelta{Value: true}}}
}

func pnDelta(change int64) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: &crdtpb.PNCounterDelta{Change: change}}}
}

func TestWireCrdt(t *testing.T) {
	checkWire(t, []wireCase{
		// CrdtStreamIn after #479: init 1, delta 2, delete 3, command 4, stream_cancelled 5.
		{"CrdtStreamIn/init", &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Init{Init: &crdtpb.CrdtInit{
			ServiceName: "s", EntityId: "e",
			Delta: &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: 1}}},
		}}}, []string{"0a 0c", "0a 01 73", "12 01 65", "1a 04", "0a 02 08 01"}},
		{"CrdtStreamIn/delta", &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delta{Delta: flagDelta()}},
			[]string{"12 04", "32 02 08 01"}},
		{"CrdtStreamIn/delete", &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delete{Delete: &crdtpb.CrdtDelete{}}},
			[]string{"1a 00"}},
		{"CrdtStreamIn/command", &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Command{Command: &cloudstatepb.Command{EntityId: "e"}}},
			[]string{"22 03", "0a 01 65"}},
		{"CrdtStreamIn/stream_cancelled", &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_StreamCancelled{
			StreamCancelled: &cloudstatepb.StreamCancelled{EntityId: "e", Id: 3}}},
			[]string{"2a 05", "0a 01 65", "10 03"}},
		{"CrdtStreamOut/reply", &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Reply{Reply: &crdtpb.CrdtReply{CommandId: 1}}},
			[]string{"0a 02 08 01"}},
		{"CrdtStreamOut/streamed_message", &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamedMessage{
			StreamedMessage: &crdtpb.CrdtStreamedMessage{CommandId: 1}}}, []string{"12 02 08 01"}},
		{"CrdtStreamOut/stream_cancelled_response", &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_StreamCancelledResponse{
			StreamCancelledResponse: &crdtpb.CrdtStreamCancelledResponse{CommandId: 1}}}, []string{"1a 02 08 01"}},
		{"CrdtStreamOut/failure", &crdtpb.CrdtStreamOut{Message: &crdtpb.CrdtStreamOut_Failure{Failure: &cloudstatepb.Failure{CommandId: 1}}},
			[]string{"22 02 08 01"}},

		// The eight deltas.
		{"CrdtDelta/gcounter", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: 300}}},
			[]string{"0a 03", "08 ac 02"}},
		// sint64: zigzag, -1 -> 1.
		{"PNCounterDelta/-1", &crdtpb.PNCounterDelta{Change: -1}, []string{"08 01"}},
		{"PNCounterDelta/+1", &crdtpb.PNCounterDelta{Change: 1}, []string{"08 02"}},
		{"PNCounterDelta/-3", &crdtpb.PNCounterDelta{Change: -3}, []string{"08 05"}},
		{"CrdtDelta/pncounter", pnDelta(-1), []string{"12 02", "08 01"}},
		{"CrdtDelta/gset", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gset{Gset: &crdtpb.GSetDelta{Added: []*anypb.Any{anyT()}}}},
			[]string{"1a 08", "0a 06", anyHex}},
		{"CrdtDelta/orset", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{
			Cleared: true, Removed: []*anypb.Any{anyT()}, Added: []*anypb.Any{anyT()},
		}}}, []string{"22 12", "08 01", "12 06", anyHex, "1a 06", anyHex}},
		{"CrdtDelta/lwwregister", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: &crdtpb.LWWRegisterDelta{
			Value: anyT(), Clock: crdtpb.CrdtClock_CUSTOM, CustomClockValue: 123,
		}}}, []string{"2a 0c", "0a 06", anyHex, "10 02", "18 7b"}},
		{"LWWRegisterDelta/clocks", &crdtpb.LWWRegisterDelta{Clock: crdtpb.CrdtClock_CUSTOM_AUTO_INCREMENT},
			[]string{"10 03"}},
		{"LWWRegisterDelta/reverse", &crdtpb.LWWRegisterDelta{Clock: crdtpb.CrdtClock_REVERSE},
			[]string{"10 01"}},
		{"CrdtDelta/flag", flagDelta(), []string{"32 02", "08 01"}},
		{"CrdtDelta/ormap", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: &crdtpb.ORMapDelta{
			Cleared: true,
			Removed: []*anypb.Any{anyT()},
			Updated: []*crdtpb.ORMapEntryDelta{{Key: anyT(), Delta: flagDelta()}},
			Added: []*crdtpb.ORMapEntryDelta{{Key: anyT(), Delta: &crdtpb.CrdtDelta{
				Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: true}}}}},
		}}}, []string{
			"3a 2a",
			"08 01",
			"12 06", anyHex,
			"1a 0e", "0a 06", anyHex, "12 04", "32 02 08 01",
			"22 0e", "0a 06", anyHex, "12 04", "42 02 08 01",
		}},
		{"CrdtDelta/vote", &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: true, VotesFor: 2, TotalVoters: 3}}},
			[]string{"42 06", "08 01", "10 02", "18 03"}},

		// CrdtReply: field 3 unused; side_effects 4, state_action 5 (tag 0x2a), streamed 6.
		{"CrdtReply", &crdtpb.CrdtReply{
			CommandId:    1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{}}},
			SideEffects:  []*cloudstatepb.SideEffect{{ServiceName: "s"}},
			StateAction: &crdtpb.CrdtStateAction{
				Action:           &crdtpb.CrdtStateAction_Update{Update: pnDelta(-1)},
				WriteConsistency: crdtpb.CrdtWriteConsistency_MAJORITY,
			},
			Streamed: true,
		}, []string{"08 01", "12 02 0a 00", "22 03 0a 01 73", "2a 08", "0a 04 12 02 08 01", "18 01", "30 01"}},
		// CrdtStateAction after #479: update 1, delete 2, write_consistency 3.
		{"CrdtStateAction/delete", &crdtpb.CrdtStateAction{
			Action:           &crdtpb.CrdtStateAction_Delete{Delete: &crdtpb.CrdtDelete{}},
			WriteConsistency: crdtpb.CrdtWriteConsistency_ALL,
		}, []string{"12 00", "18 02"}},
		{"CrdtStreamedMessage", &crdtpb.CrdtStreamedMessage{
			CommandId:    1,
			ClientAction: &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: &cloudstatepb.Reply{}}},
			SideEffects:  []*cloudstatepb.SideEffect{{ServiceName: "s"}},
			EndStream:    true,
		}, []string{"08 01", "12 02 0a 00", "1a 03 0a 01 73", "20 01"}},
		{"CrdtStreamCancelledResponse", &crdtpb.CrdtStreamCancelledResponse{
			CommandId:   1,
			SideEffects: []*cloudstatepb.SideEffect{{ServiceName: "s"}},
			StateAction: &crdtpb.CrdtStateAction{Action: &crdtpb.CrdtStateAction_Update{Update: &crdtpb.CrdtDelta{
				Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{}}}}},
		}, []string{"08 01", "12 03 0a 01 73", "1a 04", "0a 02", "42 00"}},
	})
}

func TestWireKstate(t *testing.T) {
	checkWire(t, []wireCase{
		{"ForwardRequest", &kstatev1.ForwardRequest{
			Service: "s", Method: "m", Payload: []byte{0x01}, Metadata: md1(), Partition: 3, EntityId: "e", Hops: 1,
		}, []string{"0a 01 73", "12 01 6d", "1a 01 01", "22 08", md1Hex, "28 03", "32 01 65", "38 01"}},
		{"ForwardResponse", &kstatev1.ForwardResponse{Payload: []byte{0x01}, Metadata: md1()},
			[]string{"0a 01 01", "12 08", md1Hex}},
		{"OwnerRecord", &kstatev1.OwnerRecord{
			Partition: 1, NodeId: "n", Address: "a", ProducerId: 9, ProducerEpoch: 2,
			AcquiredAt: &timestamppb.Timestamp{Seconds: 1, Nanos: 2}, Released: true,
		}, []string{"08 01", "12 01 6e", "1a 01 61", "20 09", "28 02", "32 04 08 01 10 02", "38 01"}},
		{"SnapshotRecord", &kstatev1.SnapshotRecord{Sequence: 5, Snapshot: anyT(), JournalOffset: 7},
			[]string{"08 05", "12 06", anyHex, "18 07"}},
		{"CommandEnvelope", &kstatev1.CommandEnvelope{Service: "s", Method: "m", Payload: anyT(), Metadata: md1(), CommandId: "c"},
			[]string{"0a 01 73", "12 01 6d", "1a 06", anyHex, "22 08", md1Hex, "2a 01 63"}},
		{"CrdtDeltaRecord", &kstatev1.CrdtDeltaRecord{OriginNode: "n", OriginSeq: 4, Delta: pnDelta(-1)},
			[]string{"0a 01 6e", "10 04", "1a 04", "12 02 08 01"}},
		{"StoredEvent", &kstatev1.StoredEvent{Sequence: 1, Payload: anyT(), Offset: 2, CommandId: "c"},
			[]string{"08 01", "12 06", anyHex, "18 02", "22 01 63"}},
		{"StoredSnapshot", &kstatev1.StoredSnapshot{Sequence: 1, Snapshot: anyT(), Offset: 2},
			[]string{"08 01", "12 06", anyHex, "18 02"}},
		{"EntityMeta", &kstatev1.EntityMeta{LastSequence: 3, SnapshotSequence: 2}, []string{"08 03", "10 02"}},
		{"StoredValue", &kstatev1.StoredValue{Value: anyT(), Offset: 2}, []string{"0a 06", anyHex, "10 02"}},
	})
}

// TestWireOptions pins the option extensions the proxy reads from user descriptors, by their
// encoding inside FieldOptions/MethodOptions.
func TestWireOptions(t *testing.T) {
	fieldOpts := func(set func(*descriptorpb.FieldOptions)) proto.Message {
		o := &descriptorpb.FieldOptions{}
		set(o)
		return o
	}
	checkWire(t, []wireCase{
		// 1080<<3|0 = 8640 = varint c0 43.
		{"entity_key", fieldOpts(func(o *descriptorpb.FieldOptions) { proto.SetExtension(o, cloudstatepb.E_EntityKey, true) }),
			[]string{"c0 43", "01"}},
		// 50002<<3|0 = 400016 = varint 90 b5 18.
		{"legacy_entity_key", fieldOpts(func(o *descriptorpb.FieldOptions) { proto.SetExtension(o, cloudstatepb.E_LegacyEntityKey, true) }),
			[]string{"90 b5 18", "01"}},
	})
	m := &descriptorpb.MethodOptions{}
	proto.SetExtension(m, cloudstatepb.E_Eventing, &cloudstatepb.Eventing{
		Out: &cloudstatepb.EventDestination{Destination: &cloudstatepb.EventDestination_Topic{Topic: "o"}},
	})
	// 1081<<3|2 = 8650 = varint ca 43.
	checkWire(t, []wireCase{{"eventing", m, []string{"ca 43", "05", "12 03 0a 01 6f"}}})
}
