package valuecart_test

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

	"github.com/kstatehq/kstate/examples/valuecart"
	"github.com/kstatehq/kstate/examples/valuecart/domainpb"
	"github.com/kstatehq/kstate/examples/valuecart/valuecartpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	"github.com/kstatehq/kstate/sdk"
)

// TestServedOverGRPC plays a proxy against the cart served the way cmd/valuecart-uf serves it:
// discovery, then one entity stream.
func TestServedOverGRPC(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.Register(valuecart.NewEntity()); err != nil {
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
	want := &cloudstatepb.Entity{EntityType: sdk.EntityTypeValue, ServiceName: valuecart.ServiceName, PersistenceId: valuecart.PersistenceID}
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
	for _, name := range []string{valuecart.ServiceName, "com.example.valueentity.shoppingcart.persistence.Cart", "google.api.http"} {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err != nil {
			t.Errorf("%s not in the descriptor set", name)
		}
	}

	stream, err := valueentitypb.NewValueEntityClient(conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(in *valueentitypb.ValueEntityStreamIn) {
		t.Helper()
		if err := stream.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	command := func(id int64, name string, msg proto.Message) *valueentitypb.ValueEntityReply {
		t.Helper()
		a, err := anypb.New(msg)
		if err != nil {
			t.Fatal(err)
		}
		send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{
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
	value, _ := anypb.New(&domainpb.Cart{Items: []*domainpb.LineItem{{ProductId: "apl", Name: "Apple", Quantity: 1}}})
	send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{Init: &valueentitypb.ValueEntityInit{
		ServiceName: valuecart.ServiceName, EntityId: "user-1", State: &valueentitypb.ValueEntityInitState{Value: value},
	}}})

	r := command(1, "AddItem", &valuecartpb.AddLineItem{UserId: "user-1", ProductId: "ban", Name: "Banana", Quantity: 6})
	var cart domainpb.Cart
	if err := r.GetStateAction().GetUpdate().GetValue().UnmarshalTo(&cart); err != nil || len(cart.GetItems()) != 2 {
		t.Fatalf("AddItem state action %v: %v", r.GetStateAction(), err)
	}
	if got := r.GetClientAction().GetReply().GetPayload().GetTypeUrl(); got != "type.googleapis.com/google.protobuf.Empty" {
		t.Fatalf("reply type %q", got)
	}
	r = command(2, "RemoveItem", &valuecartpb.RemoveLineItem{UserId: "user-1", ProductId: "kiwi"})
	if f := r.GetClientAction().GetFailure(); f.GetDescription() != "Cannot remove item kiwi because it is not in the cart." || f.GetRestart() || r.GetStateAction() != nil {
		t.Fatalf("remove kiwi: %v", r)
	}
	r = command(3, "GetCart", &valuecartpb.GetShoppingCart{UserId: "user-1"})
	if r.GetStateAction() != nil {
		t.Fatalf("GetCart sent a state action: %v", r.GetStateAction())
	}
	var got valuecartpb.Cart
	if err := r.GetClientAction().GetReply().GetPayload().UnmarshalTo(&got); err != nil {
		t.Fatal(err)
	}
	wantCart(t, &got, item("apl", "Apple", 1), item("ban", "Banana", 6))
	r = command(4, "RemoveCart", &valuecartpb.RemoveShoppingCart{UserId: "user-1"})
	if r.GetStateAction().GetDelete() == nil {
		t.Fatalf("RemoveCart state action %v, want a delete", r.GetStateAction())
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("stream still open after CloseSend")
	}
}
