// Package sdk is kstate's Go SDK: write stateful entities as typed Go functions bound to a gRPC
// service from a .proto file, and serve them to kstate (or any Cloudstate protocol 0.2 proxy),
// in process or as a separate user-function process.
//
// This version implements event-sourced entities. Value entities and actions will be further
// implementations of Entity, served by the same Server.
//
// # Tutorial: an event-sourced shopping cart
//
// 1. Describe the API and the persisted messages in .proto files, and generate Go code with
// protoc-gen-go (examples/shoppingcart has both files):
//
//	service ShoppingCart {
//	  rpc AddItem(AddLineItem) returns (google.protobuf.Empty);
//	  rpc RemoveItem(RemoveLineItem) returns (google.protobuf.Empty);
//	  rpc GetCart(GetShoppingCart) returns (Cart);
//	}
//	message AddLineItem { string user_id = 1 [(cloudstate.entity_key) = true]; string product_id = 2; string name = 3; int32 quantity = 4; }
//
//	// package com.example.shoppingcart.persistence
//	message ItemAdded { LineItem item = 1; }          // events
//	message ItemRemoved { string product_id = 1; }
//	message Cart { repeated LineItem items = 1; }     // the state, and its snapshot
//
// The proxy routes each command to the entity named by the fields marked entity_key, so all
// commands for "user-1" reach one entity, one at a time.
//
// 2. Define the entity: its service, its state type and initial state, and its settings.
//
//	cart := sdk.NewEventSourced("com.example.shoppingcart.ShoppingCart",
//		func(entityID string) *domainpb.Cart { return &domainpb.Cart{} }).
//		PersistenceID("shopping-cart").
//		SnapshotEvery(5).
//		Passivation(30 * time.Second)
//
// 3. Add a command handler per method. A handler reads the state, validates the command, emits
// events and replies. It never changes the state itself:
//
//	sdk.Command(cart, "AddItem", func(ctx *sdk.CommandContext[*domainpb.Cart], in *shoppingcartpb.AddLineItem) (*emptypb.Empty, error) {
//		if in.GetQuantity() <= 0 {
//			return nil, ctx.Fail("Quantity for item %s must be greater than zero.", in.GetProductId())
//		}
//		return &emptypb.Empty{}, ctx.Emit(&domainpb.ItemAdded{Item: &domainpb.LineItem{
//			ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity()}})
//	})
//
// 4. Add an event handler per event type: a pure function from the state and an event to the
// next state. Emit applies it at once (so ctx.State() sees the event), and activation replays the
// journal through it, so it must not depend on anything else:
//
//	sdk.Event(cart, func(c *domainpb.Cart, e *domainpb.ItemAdded) *domainpb.Cart {
//		c.Items = append(c.Items, e.GetItem()) // the real sample merges quantities
//		return c
//	})
//
// 5. Test it in memory with package sdktest, which plays the proxy without Kafka or gRPC:
//
//	h := sdktest.NewEventSourced(t, cart, "user-1")
//	res, err := h.Command("AddItem", &shoppingcartpb.AddLineItem{UserId: "user-1", ProductId: "apple", Quantity: 2})
//	h.Restart() // replays the journal and fails the test if the state comes out different
//
// 6. Serve it. Standalone, as a user function a kstate node calls on USER_FUNCTION_HOST:USER_FUNCTION_PORT:
//
//	err := sdk.ListenAndServe(ctx, cart)
//
// or in process, by putting a Server's services on a grpc.Server the runtime talks to:
//
//	srv := sdk.NewServer(sdk.WithLogger(log))
//	if err := srv.Register(cart); err != nil { ... } // checks every method has a handler of the right types
//	srv.RegisterGRPC(grpcServer)
//
// # Semantics
//
// Commands. The outcome of a command handler is one of: a reply (its events are persisted first),
// a forward (ctx.Forward; the client receives the target's reply), or a command failure (a non-nil
// error; the client receives err.Error(), and the command's events, side effects and forward are
// dropped, so the entity's state is as before the command). Side effects (ctx.SideEffect) are
// calls the proxy makes after the events are persisted.
//
// Panics. A panicking command handler is a command failure too, with a generic description
// (details and stack go to the log) and Failure.restart set: the handler may have modified state
// it was only allowed to read, so the proxy restarts the entity from its journal.
//
// Snapshots. With SnapshotEvery(n), a reply whose events take the sequence number across a
// multiple of n carries a snapshot of the state after those events; activation then starts from
// the latest snapshot and replays only the later events. The snapshot is the state message
// itself; Snapshot registers handlers for other snapshot types (to migrate old ones).
//
// Protocol. Server speaks Cloudstate protocol 0.2: cloudstate.EntityDiscovery (discovery sends
// the entities and a FileDescriptorSet of their services, state and event types, with all
// imports) and cloudstate.eventsourced.EventSourced (one bidirectional stream per active entity:
// init with the latest snapshot, the events after it, then commands one at a time). Payloads are
// google.protobuf.Any with type.googleapis.com type URLs. EventSourcedSession is the same protocol
// handling without the transport.
package sdk
