package proto_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// fileSchema is the whole content of one .proto file, written out by hand from the protocol:
// every message with every field ("name=number type", "repeated", "oneof(name)"), every enum and
// every service. Nothing may be missing and nothing may be extra.
type fileSchema struct {
	path     string
	pkg      string
	messages map[string]string
	enums    map[string]string
	services map[string]string
	exts     map[string]string
}

var schemas = []struct {
	file protoreflect.FileDescriptor
	want fileSchema
}{
	{cloudstatepb.File_cloudstate_entity_proto, fileSchema{
		path: "cloudstate/entity.proto",
		pkg:  "cloudstate",
		messages: map[string]string{
			"Metadata":                   "entries=1 repeated cloudstate.MetadataEntry",
			"MetadataEntry":              "key=1 string; string_value=2 string oneof(value); bytes_value=3 bytes oneof(value)",
			"Reply":                      "payload=1 google.protobuf.Any; metadata=2 cloudstate.Metadata",
			"Forward":                    "service_name=1 string; command_name=2 string; payload=3 google.protobuf.Any; metadata=4 cloudstate.Metadata",
			"ClientAction":               "reply=1 cloudstate.Reply oneof(action); forward=2 cloudstate.Forward oneof(action); failure=3 cloudstate.Failure oneof(action)",
			"SideEffect":                 "service_name=1 string; command_name=2 string; payload=3 google.protobuf.Any; synchronous=4 bool; metadata=5 cloudstate.Metadata",
			"Command":                    "entity_id=1 string; id=2 int64; name=3 string; payload=4 google.protobuf.Any; streamed=5 bool; metadata=6 cloudstate.Metadata",
			"StreamCancelled":            "entity_id=1 string; id=2 int64",
			"Failure":                    "command_id=1 int64; description=2 string; restart=3 bool",
			"EntitySpec":                 "proto=1 bytes; entities=2 repeated cloudstate.Entity; service_info=3 cloudstate.ServiceInfo",
			"ServiceInfo":                "service_name=1 string; service_version=2 string; service_runtime=3 string; support_library_name=4 string; support_library_version=5 string; protocol_major_version=6 int32; protocol_minor_version=7 int32",
			"Entity":                     "entity_type=1 string; service_name=2 string; persistence_id=3 string; passivation_strategy=4 cloudstate.EntityPassivationStrategy",
			"EntityPassivationStrategy":  "timeout=1 cloudstate.TimeoutPassivationStrategy oneof(strategy)",
			"TimeoutPassivationStrategy": "timeout=1 int64",
			"UserFunctionError":          "message=1 string",
			"ProxyInfo":                  "protocol_major_version=1 int32; protocol_minor_version=2 int32; proxy_name=3 string; proxy_version=4 string; supported_entity_types=5 repeated string",
		},
		services: map[string]string{
			"EntityDiscovery": "discover(cloudstate.ProxyInfo) cloudstate.EntitySpec; reportError(cloudstate.UserFunctionError) google.protobuf.Empty",
		},
	}},
	{cloudstatepb.File_cloudstate_entity_key_proto, fileSchema{
		path: "cloudstate/entity_key.proto",
		pkg:  "cloudstate",
		exts: map[string]string{"entity_key": "google.protobuf.FieldOptions 1080 bool"},
	}},
	{cloudstatepb.File_cloudstate_legacy_entity_key_proto, fileSchema{
		path: "cloudstate/legacy_entity_key.proto",
		pkg:  "cloudstate",
		exts: map[string]string{"legacy_entity_key": "google.protobuf.FieldOptions 50002 bool"},
	}},
	{cloudstatepb.File_cloudstate_eventing_proto, fileSchema{
		path: "cloudstate/eventing.proto",
		pkg:  "cloudstate",
		messages: map[string]string{
			"Eventing":         "in=1 cloudstate.EventSource; out=2 cloudstate.EventDestination",
			"EventSource":      "consumer_group=1 string; topic=2 string oneof(source); event_log=3 string oneof(source)",
			"EventDestination": "topic=1 string oneof(destination)",
		},
		exts: map[string]string{"eventing": "google.protobuf.MethodOptions 1081 cloudstate.Eventing"},
	}},
	{eventsourcedpb.File_cloudstate_event_sourced_proto, fileSchema{
		path: "cloudstate/event_sourced.proto",
		pkg:  "cloudstate.eventsourced",
		messages: map[string]string{
			"EventSourcedInit":      "service_name=1 string; entity_id=2 string; snapshot=3 cloudstate.eventsourced.EventSourcedSnapshot",
			"EventSourcedSnapshot":  "snapshot_sequence=1 int64; snapshot=2 google.protobuf.Any",
			"EventSourcedEvent":     "sequence=1 int64; payload=2 google.protobuf.Any",
			"EventSourcedReply":     "command_id=1 int64; client_action=2 cloudstate.ClientAction; side_effects=3 repeated cloudstate.SideEffect; events=4 repeated google.protobuf.Any; snapshot=5 google.protobuf.Any",
			"EventSourcedStreamIn":  "init=1 cloudstate.eventsourced.EventSourcedInit oneof(message); event=2 cloudstate.eventsourced.EventSourcedEvent oneof(message); command=3 cloudstate.Command oneof(message)",
			"EventSourcedStreamOut": "reply=1 cloudstate.eventsourced.EventSourcedReply oneof(message); failure=2 cloudstate.Failure oneof(message)",
		},
		services: map[string]string{
			"EventSourced": "handle(stream cloudstate.eventsourced.EventSourcedStreamIn) stream cloudstate.eventsourced.EventSourcedStreamOut",
		},
	}},
	{valueentitypb.File_cloudstate_value_entity_proto, fileSchema{
		path: "cloudstate/value_entity.proto",
		pkg:  "cloudstate.valueentity",
		messages: map[string]string{
			"ValueEntityStreamIn":  "init=1 cloudstate.valueentity.ValueEntityInit oneof(message); command=2 cloudstate.Command oneof(message)",
			"ValueEntityInit":      "service_name=1 string; entity_id=2 string; state=3 cloudstate.valueentity.ValueEntityInitState",
			"ValueEntityInitState": "value=1 google.protobuf.Any",
			"ValueEntityStreamOut": "reply=1 cloudstate.valueentity.ValueEntityReply oneof(message); failure=2 cloudstate.Failure oneof(message)",
			"ValueEntityReply":     "command_id=1 int64; client_action=2 cloudstate.ClientAction; side_effects=3 repeated cloudstate.SideEffect; state_action=4 cloudstate.valueentity.ValueEntityAction",
			"ValueEntityAction":    "update=1 cloudstate.valueentity.ValueEntityUpdate oneof(action); delete=2 cloudstate.valueentity.ValueEntityDelete oneof(action)",
			"ValueEntityUpdate":    "value=1 google.protobuf.Any",
			"ValueEntityDelete":    "",
		},
		services: map[string]string{
			"ValueEntity": "handle(stream cloudstate.valueentity.ValueEntityStreamIn) stream cloudstate.valueentity.ValueEntityStreamOut",
		},
	}},
	{actionpb.File_cloudstate_action_proto, fileSchema{
		path: "cloudstate/action.proto",
		pkg:  "cloudstate.action",
		messages: map[string]string{
			"ActionCommand":  "service_name=2 string; name=3 string; payload=4 google.protobuf.Any; metadata=5 cloudstate.Metadata",
			"ActionResponse": "failure=1 cloudstate.Failure oneof(response); reply=2 cloudstate.Reply oneof(response); forward=3 cloudstate.Forward oneof(response); side_effects=4 repeated cloudstate.SideEffect",
		},
		services: map[string]string{
			"ActionProtocol": "handleUnary(cloudstate.action.ActionCommand) cloudstate.action.ActionResponse; " +
				"handleStreamedIn(stream cloudstate.action.ActionCommand) cloudstate.action.ActionResponse; " +
				"handleStreamedOut(cloudstate.action.ActionCommand) stream cloudstate.action.ActionResponse; " +
				"handleStreamed(stream cloudstate.action.ActionCommand) stream cloudstate.action.ActionResponse",
		},
	}},
	{crdtpb.File_cloudstate_crdt_proto, fileSchema{
		path: "cloudstate/crdt.proto",
		pkg:  "cloudstate.crdt",
		messages: map[string]string{
			"CrdtStreamIn":                "init=1 cloudstate.crdt.CrdtInit oneof(message); delta=2 cloudstate.crdt.CrdtDelta oneof(message); delete=3 cloudstate.crdt.CrdtDelete oneof(message); command=4 cloudstate.Command oneof(message); stream_cancelled=5 cloudstate.StreamCancelled oneof(message)",
			"CrdtStreamOut":               "reply=1 cloudstate.crdt.CrdtReply oneof(message); streamed_message=2 cloudstate.crdt.CrdtStreamedMessage oneof(message); stream_cancelled_response=3 cloudstate.crdt.CrdtStreamCancelledResponse oneof(message); failure=4 cloudstate.Failure oneof(message)",
			"CrdtInit":                    "service_name=1 string; entity_id=2 string; delta=3 cloudstate.crdt.CrdtDelta",
			"CrdtDelete":                  "",
			"CrdtDelta":                   "gcounter=1 cloudstate.crdt.GCounterDelta oneof(delta); pncounter=2 cloudstate.crdt.PNCounterDelta oneof(delta); gset=3 cloudstate.crdt.GSetDelta oneof(delta); orset=4 cloudstate.crdt.ORSetDelta oneof(delta); lwwregister=5 cloudstate.crdt.LWWRegisterDelta oneof(delta); flag=6 cloudstate.crdt.FlagDelta oneof(delta); ormap=7 cloudstate.crdt.ORMapDelta oneof(delta); vote=8 cloudstate.crdt.VoteDelta oneof(delta)",
			"GCounterDelta":               "increment=1 uint64",
			"PNCounterDelta":              "change=1 sint64",
			"GSetDelta":                   "added=1 repeated google.protobuf.Any",
			"ORSetDelta":                  "cleared=1 bool; removed=2 repeated google.protobuf.Any; added=3 repeated google.protobuf.Any",
			"LWWRegisterDelta":            "value=1 google.protobuf.Any; clock=2 cloudstate.crdt.CrdtClock; custom_clock_value=3 int64",
			"FlagDelta":                   "value=1 bool",
			"ORMapDelta":                  "cleared=1 bool; removed=2 repeated google.protobuf.Any; updated=3 repeated cloudstate.crdt.ORMapEntryDelta; added=4 repeated cloudstate.crdt.ORMapEntryDelta",
			"ORMapEntryDelta":             "key=1 google.protobuf.Any; delta=2 cloudstate.crdt.CrdtDelta",
			"VoteDelta":                   "self_vote=1 bool; votes_for=2 int32; total_voters=3 int32",
			"CrdtReply":                   "command_id=1 int64; client_action=2 cloudstate.ClientAction; side_effects=4 repeated cloudstate.SideEffect; state_action=5 cloudstate.crdt.CrdtStateAction; streamed=6 bool",
			"CrdtStateAction":             "update=1 cloudstate.crdt.CrdtDelta oneof(action); delete=2 cloudstate.crdt.CrdtDelete oneof(action); write_consistency=3 cloudstate.crdt.CrdtWriteConsistency",
			"CrdtStreamedMessage":         "command_id=1 int64; client_action=2 cloudstate.ClientAction; side_effects=3 repeated cloudstate.SideEffect; end_stream=4 bool",
			"CrdtStreamCancelledResponse": "command_id=1 int64; side_effects=2 repeated cloudstate.SideEffect; state_action=3 cloudstate.crdt.CrdtStateAction",
		},
		enums: map[string]string{
			"CrdtWriteConsistency": "LOCAL=0 MAJORITY=1 ALL=2",
			"CrdtClock":            "DEFAULT=0 REVERSE=1 CUSTOM=2 CUSTOM_AUTO_INCREMENT=3",
		},
		services: map[string]string{
			"Crdt": "handle(stream cloudstate.crdt.CrdtStreamIn) stream cloudstate.crdt.CrdtStreamOut",
		},
	}},
	{kstatev1.File_kstate_v1_node_proto, fileSchema{
		path: "kstate/v1/node.proto",
		pkg:  "kstate.v1",
		messages: map[string]string{
			"ForwardRequest":  "service=1 string; method=2 string; payload=3 bytes; metadata=4 cloudstate.Metadata; partition=5 int32; entity_id=6 string; hops=7 int32; idempotency_key=8 string",
			"ForwardResponse": "payload=1 bytes; metadata=2 cloudstate.Metadata",
		},
		services: map[string]string{
			"Node": "Forward(kstate.v1.ForwardRequest) kstate.v1.ForwardResponse",
		},
	}},
	{kstatev1.File_kstate_v1_records_proto, fileSchema{
		path: "kstate/v1/records.proto",
		pkg:  "kstate.v1",
		messages: map[string]string{
			"OwnerRecord":     "partition=1 int32; node_id=2 string; address=3 string; producer_id=4 int64; producer_epoch=5 int32; acquired_at=6 google.protobuf.Timestamp; released=7 bool",
			"SnapshotRecord":  "sequence=1 int64; snapshot=2 google.protobuf.Any; journal_offset=3 int64",
			"CommandEnvelope": "service=1 string; method=2 string; payload=3 google.protobuf.Any; metadata=4 cloudstate.Metadata; command_id=5 string",
			"CrdtDeltaRecord": "origin_node=1 string; origin_seq=2 int64; delta=3 cloudstate.crdt.CrdtDelta",
			"IdempotencyRecord": "persistence_id=1 string; key=2 string; request_hash=3 bytes; expires_at=4 google.protobuf.Timestamp; command_id=5 string; " +
				"reply=6 cloudstate.Reply oneof(outcome); failure=7 cloudstate.Failure oneof(outcome); forward=8 cloudstate.Forward oneof(outcome); forward_key=9 string",
		},
	}},
	{kstatev1.File_kstate_v1_crdt_proto, fileSchema{
		path: "kstate/v1/crdt.proto",
		pkg:  "kstate.v1",
		messages: map[string]string{
			"CrdtState":        "gcounter=1 kstate.v1.GCounterState oneof(state); pncounter=2 kstate.v1.PNCounterState oneof(state); gset=3 kstate.v1.GSetState oneof(state); orset=4 kstate.v1.ORSetState oneof(state); lwwregister=5 kstate.v1.LWWRegisterState oneof(state); flag=6 kstate.v1.FlagState oneof(state); ormap=7 kstate.v1.ORMapState oneof(state); vote=8 kstate.v1.VoteState oneof(state)",
			"NodeCount":        "node=1 string; count=2 uint64",
			"GCounterState":    "counts=1 repeated kstate.v1.NodeCount",
			"PNCounterState":   "increments=1 kstate.v1.GCounterState; decrements=2 kstate.v1.GCounterState",
			"GSetState":        "elements=1 repeated google.protobuf.Any",
			"CrdtDot":          "node=1 string; counter=2 uint64",
			"CausalContext":    "versions=1 repeated kstate.v1.NodeCount; cloud=2 repeated kstate.v1.CrdtDot",
			"ORSetElement":     "value=1 google.protobuf.Any; dots=2 repeated kstate.v1.CrdtDot",
			"ORSetState":       "elements=1 repeated kstate.v1.ORSetElement; context=2 kstate.v1.CausalContext",
			"LWWRegisterState": "value=1 google.protobuf.Any; clock=2 int64; node=3 string",
			"FlagState":        "enabled=1 bool",
			"ORMapValue":       "dot=1 kstate.v1.CrdtDot; value=2 kstate.v1.CrdtState",
			"ORMapEntry":       "key=1 google.protobuf.Any; values=2 repeated kstate.v1.ORMapValue",
			"ORMapState":       "entries=1 repeated kstate.v1.ORMapEntry; context=2 kstate.v1.CausalContext",
			"VoteEntry":        "node=1 string; version=2 uint64; vote=3 bool",
			"VoteState":        "votes=1 repeated kstate.v1.VoteEntry; removed=2 repeated kstate.v1.NodeCount",
		},
	}},
	{kstatev1.File_kstate_v1_storage_proto, fileSchema{
		path: "kstate/v1/storage.proto",
		pkg:  "kstate.v1",
		messages: map[string]string{
			"StoredEvent":    "sequence=1 int64; payload=2 google.protobuf.Any; offset=3 int64; command_id=4 string",
			"StoredSnapshot": "sequence=1 int64; snapshot=2 google.protobuf.Any; offset=3 int64",
			"EntityMeta":     "last_sequence=1 int64; snapshot_sequence=2 int64",
			"StoredValue":    "value=1 google.protobuf.Any; offset=2 int64",
		},
	}},
}

func describeMessage(md protoreflect.MessageDescriptor) string {
	var parts []string
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		s := fmt.Sprintf("%s=%d ", fd.Name(), fd.Number())
		if fd.Cardinality() == protoreflect.Repeated {
			s += "repeated "
		}
		switch {
		case fd.Message() != nil:
			s += string(fd.Message().FullName())
		case fd.Enum() != nil:
			s += string(fd.Enum().FullName())
		default:
			s += fd.Kind().String()
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			s += fmt.Sprintf(" oneof(%s)", od.Name())
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func describeService(sd protoreflect.ServiceDescriptor) string {
	var parts []string
	for i := 0; i < sd.Methods().Len(); i++ {
		m := sd.Methods().Get(i)
		in, out := "", ""
		if m.IsStreamingClient() {
			in = "stream "
		}
		if m.IsStreamingServer() {
			out = "stream "
		}
		parts = append(parts, fmt.Sprintf("%s(%s%s) %s%s", m.Name(), in, m.Input().FullName(), out, m.Output().FullName()))
	}
	return strings.Join(parts, "; ")
}

func describeEnum(ed protoreflect.EnumDescriptor) string {
	var parts []string
	for i := 0; i < ed.Values().Len(); i++ {
		v := ed.Values().Get(i)
		parts = append(parts, fmt.Sprintf("%s=%d", v.Name(), v.Number()))
	}
	return strings.Join(parts, " ")
}

func describeExtension(xd protoreflect.ExtensionDescriptor) string {
	typ := xd.Kind().String()
	if xd.Message() != nil {
		typ = string(xd.Message().FullName())
	}
	return fmt.Sprintf("%s %d %s", xd.ContainingMessage().FullName(), xd.Number(), typ)
}

// compare checks got against want key by key, reporting missing and extra names.
func compare(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var names []string
	for n := range got {
		names = append(names, n)
	}
	for n := range want {
		if _, ok := got[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		g, inGot := got[n]
		w, inWant := want[n]
		switch {
		case !inWant:
			t.Errorf("%s %s: not in the protocol: %s", what, n, g)
		case !inGot:
			t.Errorf("%s %s: missing", what, n)
		case g != w:
			t.Errorf("%s %s:\n got  %s\n want %s", what, n, g, w)
		}
	}
}

// TestSchema pins every message, field, enum, service and extension of the protocol files, with
// their file paths and proto packages (user descriptor sets import them by these paths).
func TestSchema(t *testing.T) {
	for _, s := range schemas {
		fd, want := s.file, s.want
		t.Run(want.path, func(t *testing.T) {
			if got := fd.Path(); got != want.path {
				t.Errorf("path %q, want %q", got, want.path)
			}
			if got := string(fd.Package()); got != want.pkg {
				t.Errorf("package %q, want %q", got, want.pkg)
			}
			got := map[string]string{}
			for i := 0; i < fd.Messages().Len(); i++ {
				md := fd.Messages().Get(i)
				if md.Messages().Len() != 0 || md.Enums().Len() != 0 {
					t.Errorf("message %s has nested declarations; the protocol has none", md.Name())
				}
				got[string(md.Name())] = describeMessage(md)
			}
			compare(t, "message", got, orEmpty(want.messages))

			got = map[string]string{}
			for i := 0; i < fd.Enums().Len(); i++ {
				got[string(fd.Enums().Get(i).Name())] = describeEnum(fd.Enums().Get(i))
			}
			compare(t, "enum", got, orEmpty(want.enums))

			got = map[string]string{}
			for i := 0; i < fd.Services().Len(); i++ {
				got[string(fd.Services().Get(i).Name())] = describeService(fd.Services().Get(i))
			}
			compare(t, "service", got, orEmpty(want.services))

			got = map[string]string{}
			for i := 0; i < fd.Extensions().Len(); i++ {
				got[string(fd.Extensions().Get(i).Name())] = describeExtension(fd.Extensions().Get(i))
			}
			compare(t, "extension", got, orEmpty(want.exts))
		})
	}
}

// TestGRPCMethodPaths pins the full gRPC method names kstate calls on user functions and nodes.
func TestGRPCMethodPaths(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{cloudstatepb.EntityDiscovery_Discover_FullMethodName, "/cloudstate.EntityDiscovery/discover"},
		{cloudstatepb.EntityDiscovery_ReportError_FullMethodName, "/cloudstate.EntityDiscovery/reportError"},
		{eventsourcedpb.EventSourced_Handle_FullMethodName, "/cloudstate.eventsourced.EventSourced/handle"},
		{valueentitypb.ValueEntity_Handle_FullMethodName, "/cloudstate.valueentity.ValueEntity/handle"},
		{crdtpb.Crdt_Handle_FullMethodName, "/cloudstate.crdt.Crdt/handle"},
		{actionpb.ActionProtocol_HandleUnary_FullMethodName, "/cloudstate.action.ActionProtocol/handleUnary"},
		{actionpb.ActionProtocol_HandleStreamedIn_FullMethodName, "/cloudstate.action.ActionProtocol/handleStreamedIn"},
		{actionpb.ActionProtocol_HandleStreamedOut_FullMethodName, "/cloudstate.action.ActionProtocol/handleStreamedOut"},
		{actionpb.ActionProtocol_HandleStreamed_FullMethodName, "/cloudstate.action.ActionProtocol/handleStreamed"},
		{kstatev1.Node_Forward_FullMethodName, "/kstate.v1.Node/Forward"},
		{string(eventsourcedpb.File_cloudstate_event_sourced_proto.Services().Get(0).FullName()), "cloudstate.eventsourced.EventSourced"},
		{string(valueentitypb.File_cloudstate_value_entity_proto.Services().Get(0).FullName()), "cloudstate.valueentity.ValueEntity"},
		{string(crdtpb.File_cloudstate_crdt_proto.Services().Get(0).FullName()), "cloudstate.crdt.Crdt"},
		{string(actionpb.File_cloudstate_action_proto.Services().Get(0).FullName()), "cloudstate.action.ActionProtocol"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
