package shoppingcart_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/domainpb"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/sdk"
)

// TestServedOverGRPC plays a proxy against the cart served the way cmd/shoppingcart-uf serves
// it: discovery, then one entity stream.
func TestServedOverGRPC(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.Register(shoppingcart.NewEntity()); err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
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
	want := &cloudstatepb.Entity{EntityType: sdk.EntityTypeEventSourced, ServiceName: shoppingcart.ServiceName, PersistenceId: "shopping-cart"}
	if len(spec.GetEntities()) != 1 || !proto.Equal(spec.GetEntities()[0], want) {
		t.Fatalf("entities %v", spec.GetEntities())
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{shoppingcart.ServiceName, "com.example.shoppingcart.persistence.ItemAdded", "google.api.http"} {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err != nil {
			t.Errorf("%s not in the descriptor set", name)
		}
	}

	stream, err := eventsourcedpb.NewEventSourcedClient(conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(in *eventsourcedpb.EventSourcedStreamIn) {
		t.Helper()
		if err := stream.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	command := func(id int64, name string, msg proto.Message) *eventsourcedpb.EventSourcedReply {
		t.Helper()
		a, err := anypb.New(msg)
		if err != nil {
			t.Fatal(err)
		}
		send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{
			Command: &cloudstatepb.Command{EntityId: "user-1", Id: id, Name: name, Payload: a},
		}})
		out, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if out.GetReply().GetCommandId() != id {
			t.Fatalf("command %d: got %v", id, out)
		}
		return out.GetReply()
	}
	snap, _ := anypb.New(&domainpb.Cart{Items: []*domainpb.LineItem{{ProductId: "apl", Name: "Apple", Quantity: 1}}})
	send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Init{Init: &eventsourcedpb.EventSourcedInit{
		ServiceName: shoppingcart.ServiceName, EntityId: "user-1",
		Snapshot: &eventsourcedpb.EventSourcedSnapshot{SnapshotSequence: 3, Snapshot: snap},
	}}})
	ev, _ := anypb.New(&domainpb.ItemAdded{Item: &domainpb.LineItem{ProductId: "apl", Name: "Apple", Quantity: 2}})
	send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Event{Event: &eventsourcedpb.EventSourcedEvent{Sequence: 4, Payload: ev}}})

	r := command(1, "AddItem", &shoppingcartpb.AddLineItem{UserId: "user-1", ProductId: "ban", Name: "Banana", Quantity: 6})
	if len(r.GetEvents()) != 1 || r.GetSnapshot() == nil {
		t.Fatalf("event 5: events %v, snapshot %v", r.GetEvents(), r.GetSnapshot())
	}
	r = command(2, "RemoveItem", &shoppingcartpb.RemoveLineItem{UserId: "user-1", ProductId: "kiwi"})
	if f := r.GetClientAction().GetFailure(); f.GetDescription() != "Cannot remove item kiwi because it is not in the cart." || f.GetRestart() {
		t.Fatalf("remove kiwi: %v", r)
	}
	r = command(3, "GetCart", &shoppingcartpb.GetShoppingCart{UserId: "user-1"})
	if got := r.GetClientAction().GetReply().GetPayload().GetTypeUrl(); got != "type.googleapis.com/com.example.shoppingcart.Cart" {
		t.Fatalf("reply type %q", got)
	}
	var cart shoppingcartpb.Cart
	if err := r.GetClientAction().GetReply().GetPayload().UnmarshalTo(&cart); err != nil {
		t.Fatal(err)
	}
	wantCart(t, &cart, item("apl", "Apple", 3), item("ban", "Banana", 6))
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("stream still open after CloseSend")
	}
}
