package validator_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
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
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/examples/validator"
	"github.com/kstatehq/kstate/examples/validator/validatorpb"
	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

func line(user, product string, qty int32) *shoppingcartpb.AddLineItem {
	return &shoppingcartpb.AddLineItem{UserId: user, ProductId: product, Name: "Product " + product, Quantity: qty}
}

func TestEntitiesRegisterTogether(t *testing.T) {
	if err := sdk.NewServer().Register(validator.Entities()...); err != nil {
		t.Fatal(err)
	}
	// The validator alone registers too: forward targets are checked against the descriptors,
	// not against the server's entities.
	if err := sdk.NewServer().Register(validator.NewEntity()); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		item *shoppingcartpb.AddLineItem
		want string
	}{
		{line("u1", "apl", 1), ""},
		{line("u1", "apl", validator.MaxQuantity), ""},
		{line("", "apl", 1), "The user id must not be empty."},
		{line("u1", "", 1), "The product id must not be empty."},
		{line("u1", "apl", 0), "Quantity for item apl must be between 1 and 1000, got 0."},
		{line("u1", "apl", -5), "Quantity for item apl must be between 1 and 1000, got -5."},
		{line("u1", "apl", validator.MaxQuantity+1), "Quantity for item apl must be between 1 and 1000, got 1001."},
	} {
		if got := validator.Validate(tc.item); got != tc.want {
			t.Errorf("Validate(%v) = %q, want %q", tc.item, got, tc.want)
		}
	}
}

func TestAddItemForwardsValidItems(t *testing.T) {
	h := sdktest.NewAction(t, validator.NewEntity())
	in := line("u1", "apl", 3)
	res, err := h.Unary("AddItem", in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply != nil || res.Forward == nil || len(res.SideEffects) != 0 {
		t.Fatalf("result %+v, want only a forward", res)
	}
	if res.Forward.Service != shoppingcart.ServiceName || res.Forward.Method != "AddItem" || !proto.Equal(res.Forward.Message, in) {
		t.Fatalf("forward %+v", res.Forward)
	}
}

func TestAddItemFailsInvalidItems(t *testing.T) {
	h := sdktest.NewAction(t, validator.NewEntity())
	for _, in := range []*shoppingcartpb.AddLineItem{line("", "apl", 1), line("u1", "", 1), line("u1", "apl", 0), line("u1", "apl", 1001)} {
		res, err := h.Unary("AddItem", in)
		var f *sdktest.Failure
		if !errors.As(err, &f) || f.Description != validator.Validate(in) || res.Forward != nil || len(res.SideEffects) != 0 {
			t.Fatalf("%v: %+v, %v; want the failure %q and nothing else", in, res, err, validator.Validate(in))
		}
	}
}

func TestAddItemsAddsValidItemsAndReportsTheOthers(t *testing.T) {
	h := sdktest.NewAction(t, validator.NewEntity())
	items := []proto.Message{line("u1", "apl", 1), line("u1", "ban", 0), line("u2", "cak", 2), line("", "dat", 1)}
	res, err := h.StreamedIn("AddItems", items)
	if err != nil {
		t.Fatal(err)
	}
	got := res.Reply.(*validatorpb.AddItemsResult)
	want := &validatorpb.AddItemsResult{Accepted: 2, Rejected: []*validatorpb.ItemCheck{
		{Index: 1, ProductId: "ban", Reason: "Quantity for item ban must be between 1 and 1000, got 0."},
		{Index: 3, ProductId: "dat", Reason: "The user id must not be empty."},
	}}
	if !proto.Equal(got, want) {
		t.Fatalf("result\n got %v\nwant %v", got, want)
	}
	// The valid items go to their carts, synchronously, in order.
	if len(res.SideEffects) != 2 {
		t.Fatalf("side effects %+v", res.SideEffects)
	}
	for i, want := range []proto.Message{items[0], items[2]} {
		se := res.SideEffects[i]
		if se.Service != shoppingcart.ServiceName || se.Method != "AddItem" || !se.Synchronous || !proto.Equal(se.Message, want) {
			t.Errorf("side effect %d: %+v", i, se)
		}
	}
	// An empty stream accepts nothing.
	res, err = h.StreamedIn("AddItems", nil)
	if err != nil || !proto.Equal(res.Reply, &validatorpb.AddItemsResult{}) || len(res.SideEffects) != 0 {
		t.Fatalf("empty stream: %+v, %v", res, err)
	}
}

func TestCheckItemsStreamsAVerdictPerItem(t *testing.T) {
	h := sdktest.NewAction(t, validator.NewEntity())
	elems, err := h.StreamedOut("CheckItems", &validatorpb.CheckItemsRequest{Items: []*shoppingcartpb.AddLineItem{
		line("u1", "apl", 1), line("u1", "", 1), line("u1", "cak", 5000),
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []*validatorpb.ItemCheck{
		{Index: 0, ProductId: "apl", Valid: true},
		{Index: 1, Reason: "The product id must not be empty."},
		{Index: 2, ProductId: "cak", Reason: "Quantity for item cak must be between 1 and 1000, got 5000."},
	}
	if len(elems) != len(want) {
		t.Fatalf("%d elements, want %d", len(elems), len(want))
	}
	for i, e := range elems {
		if !proto.Equal(e.Reply, want[i]) || e.Forward != nil || len(e.SideEffects) != 0 {
			t.Errorf("element %d: %+v, want %v", i, e, want[i])
		}
	}
	if elems, err := h.StreamedOut("CheckItems", &validatorpb.CheckItemsRequest{}); err != nil || len(elems) != 0 {
		t.Fatalf("no items: %v, %v", elems, err)
	}
}

// TestServedWithTheCart serves Entities over gRPC as cmd/validator-uf does, and plays the proxy:
// discovery, then the validator's forward, followed to the cart's entity stream.
func TestServedWithTheCart(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.Register(validator.Entities()...); err != nil {
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
	var kinds []string
	for _, e := range spec.GetEntities() {
		kinds = append(kinds, e.GetServiceName()+"="+e.GetEntityType())
	}
	if got, want := strings.Join(kinds, " "), validator.ServiceName+"=cloudstate.action.ActionProtocol "+shoppingcart.ServiceName+"=cloudstate.eventsourced.EventSourced"; got != want {
		t.Fatalf("entities %s, want %s", got, want)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{validator.ServiceName, "com.example.validator.ItemCheck", shoppingcart.ServiceName, "com.example.shoppingcart.AddLineItem"} {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err != nil {
			t.Errorf("%s not in the descriptor set", name)
		}
	}

	actions := actionpb.NewActionProtocolClient(conn)
	payload, _ := anypb.New(line("u1", "apl", 2))
	resp, err := actions.HandleUnary(ctx, &actionpb.ActionCommand{ServiceName: validator.ServiceName, Name: "AddItem", Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	fw := resp.GetForward()
	if fw.GetServiceName() != shoppingcart.ServiceName || fw.GetCommandName() != "AddItem" || !proto.Equal(fw.GetPayload(), payload) {
		t.Fatalf("response %v, want a forward of the payload to the cart", resp)
	}
	bad, _ := anypb.New(line("u1", "apl", 0))
	resp, err = actions.HandleUnary(ctx, &actionpb.ActionCommand{ServiceName: validator.ServiceName, Name: "AddItem", Payload: bad})
	if err != nil || resp.GetFailure().GetDescription() != "Quantity for item apl must be between 1 and 1000, got 0." {
		t.Fatalf("invalid item: %v, %v", resp, err)
	}

	// Streamed out over gRPC: one ActionResponse per verdict.
	req, _ := anypb.New(&validatorpb.CheckItemsRequest{Items: []*shoppingcartpb.AddLineItem{line("u1", "a", 1), line("u1", "b", 0)}})
	stream, err := actions.HandleStreamedOut(ctx, &actionpb.ActionCommand{ServiceName: validator.ServiceName, Name: "CheckItems", Payload: req})
	if err != nil {
		t.Fatal(err)
	}
	var verdicts []bool
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var check validatorpb.ItemCheck
		if err := r.GetReply().GetPayload().UnmarshalTo(&check); err != nil {
			t.Fatal(err)
		}
		verdicts = append(verdicts, check.GetValid())
	}
	if len(verdicts) != 2 || !verdicts[0] || verdicts[1] {
		t.Fatalf("verdicts %v", verdicts)
	}
}
