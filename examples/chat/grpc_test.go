package chat_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/examples/chat"
	"github.com/kstatehq/kstate/examples/chat/chatpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
)

// TestServedOverGRPC plays a proxy against the entities served the way cmd/chat-uf serves
// them: discovery, then a presence entity's stream with a monitor and a connection.
func TestServedOverGRPC(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.Register(chat.Entities()...); err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient("passthrough:///uf",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	spec, err := cloudstatepb.NewEntityDiscoveryClient(conn).Discover(ctx, &cloudstatepb.ProxyInfo{ProtocolMinorVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := []*cloudstatepb.Entity{
		{EntityType: sdk.EntityTypeCRDT, ServiceName: chat.PresenceService, PersistenceId: chat.PresencePersistenceID},
		{EntityType: sdk.EntityTypeCRDT, ServiceName: chat.FriendsService, PersistenceId: chat.FriendsPersistenceID},
	}
	if len(spec.GetEntities()) != 2 || !proto.Equal(spec.GetEntities()[0], want[0]) || !proto.Equal(spec.GetEntities()[1], want[1]) {
		t.Fatalf("entities %v", spec.GetEntities())
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range set.GetFile() {
		found = found || f.GetName() == "chat/chat.proto"
	}
	if !found {
		t.Fatal("chat/chat.proto is not in the descriptors")
	}

	s, err := crdtpb.NewCrdtClient(conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	command := func(id int64, method string) *crdtpb.CrdtStreamIn {
		payload, err := anypb.New(&chatpb.User{Name: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		return &crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Command{Command: &cloudstatepb.Command{
			EntityId: "alice", Id: id, Name: method, Payload: payload, Streamed: true,
		}}}
	}
	for _, in := range []*crdtpb.CrdtStreamIn{
		{Message: &crdtpb.CrdtStreamIn_Init{Init: &crdtpb.CrdtInit{ServiceName: chat.PresenceService, EntityId: "alice"}}},
		command(1, "Monitor"),
		command(2, "Connect"),
		{Message: &crdtpb.CrdtStreamIn_StreamCancelled{StreamCancelled: &cloudstatepb.StreamCancelled{EntityId: "alice", Id: 2}}},
	} {
		if err := s.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	status := func(m *crdtpb.CrdtStreamedMessage) bool {
		var st chatpb.OnlineStatus
		if err := m.GetClientAction().GetReply().GetPayload().UnmarshalTo(&st); err != nil {
			t.Fatal(err)
		}
		return st.GetOnline()
	}
	var got []string
	for range 5 {
		out, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch m := out.GetMessage().(type) {
		case *crdtpb.CrdtStreamOut_Reply:
			got = append(got, "reply")
			if !m.Reply.GetStreamed() {
				t.Fatalf("reply %v is not streamed", m.Reply)
			}
		case *crdtpb.CrdtStreamOut_StreamedMessage:
			if status(m.StreamedMessage) {
				got = append(got, "online")
			} else {
				got = append(got, "offline")
			}
		case *crdtpb.CrdtStreamOut_StreamCancelledResponse:
			got = append(got, "cancelled")
			if m.StreamCancelledResponse.GetStateAction().GetUpdate().GetVote() == nil {
				t.Fatalf("cancelled without the vote: %v", m.StreamCancelledResponse)
			}
		default:
			t.Fatalf("unexpected %v", out)
		}
	}
	if w := []string{"reply", "reply", "online", "cancelled", "offline"}; !slices.Equal(got, w) {
		t.Fatalf("messages %v, want %v", got, w)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
}
