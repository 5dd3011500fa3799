package chatpb_test

import (
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/examples/chat/chatpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

func TestEntityKeys(t *testing.T) {
	for m, key := range map[proto.Message]protoreflect.Name{
		&chatpb.User{}:          "name",
		&chatpb.FriendRequest{}: "user",
	} {
		fields := m.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			got := proto.GetExtension(fd.Options(), cloudstatepb.E_EntityKey).(bool)
			if want := fd.Name() == key; got != want {
				t.Errorf("%s: entity_key = %v, want %v", fd.FullName(), got, want)
			}
		}
	}
}

func TestShapesAndHTTPRules(t *testing.T) {
	file := chatpb.File_chat_chat_proto
	presence := file.Services().ByName("Presence")
	for _, m := range []protoreflect.Name{"Connect", "Monitor"} {
		if md := presence.Methods().ByName(m); md == nil || !md.IsStreamingServer() || md.IsStreamingClient() {
			t.Errorf("Presence.%s is not server-streaming", m)
		}
	}
	rule := func(svc, method protoreflect.Name) *annotations.HttpRule {
		md := file.Services().ByName(svc).Methods().ByName(method)
		r, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
		return r
	}
	if r := rule("Presence", "Monitor"); r.GetGet() != "/presence/{name}" {
		t.Errorf("Monitor: %v", r)
	}
	if r := rule("Friends", "Add"); r.GetPost() != "/friends/{user}/add" || r.GetBody() != "friend" {
		t.Errorf("Add: %v", r)
	}
	if r := rule("Friends", "GetFriends"); r.GetGet() != "/friends/{name}" {
		t.Errorf("GetFriends: %v", r)
	}
}
