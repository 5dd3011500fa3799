// Package sdk is kstate's Go SDK: write stateful entities as typed Go functions bound to a gRPC
// service from a .proto file, and serve them to kstate (or any Cloudstate protocol 0.2 proxy),
// in process or as a separate user-function process.
//
// It implements the four kinds of Cloudstate services a Go program defines with plain functions:
//   - event-sourced entities (NewEventSourced, Command, Event, Snapshot): the state is the result
//     of a journal of events;
//   - value entities (NewValue, ValueCommand): the state is one value, stored whole on every
//     change;
//   - CRDT entities (NewCRDT, CRDTCommand, CRDTStreamed): the state is a CRDT (GCounter,
//     PNCounter, GSet, ORSet, LWWRegister, Flag, ORMap, Vote) replicated on every node;
//   - actions (NewAction, ActionUnary, ActionStreamedIn, ActionStreamedOut, ActionStreamed):
//     stateless functions in any of the four gRPC shapes.
//
// All four are served by the same Server and tested in memory with package sdktest.
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
// # Value entities
//
// A value entity keeps one state message per entity id, like a row in a key-value table. A
// command handler reads ctx.State() (the stored value, or the initial state when there is none),
// and calls ctx.Update with the new value or ctx.Delete; the proxy stores the change before it
// replies. examples/valuecart is the shopping cart as a value entity:
//
//	cart := sdk.NewValue("com.example.valueentity.shoppingcart.ShoppingCart",
//		func(entityID string) *domainpb.Cart { return &domainpb.Cart{} }).
//		PersistenceID("value-shopping-cart")
//	sdk.ValueCommand(cart, "AddItem", func(ctx *sdk.ValueContext[*domainpb.Cart], in *valuecartpb.AddLineItem) (*emptypb.Empty, error) {
//		c := ctx.State() // the command's own copy
//		c.Items = append(c.Items, &domainpb.LineItem{ProductId: in.GetProductId(), Quantity: in.GetQuantity()})
//		return &emptypb.Empty{}, ctx.Update(c)
//	})
//	sdk.ValueCommand(cart, "RemoveCart", func(ctx *sdk.ValueContext[*domainpb.Cart], _ *valuecartpb.RemoveShoppingCart) (*emptypb.Empty, error) {
//		ctx.Delete()
//		return &emptypb.Empty{}, nil
//	})
//
// Test it with sdktest.NewValue(t, cart, "user-1"), whose results show what was stored.
//
// # CRDT entities
//
// A CRDT entity's state is a conflict-free replicated data type: every kstate node holds a
// replica, a command is served on the node it reaches, and the changes made on different nodes
// merge without coordination. The state type is one of the eight CRDTs, with typed elements:
//
//	*sdk.GCounter                        Value, Increment (never down)
//	*sdk.PNCounter                       Value, Increment, Decrement
//	*sdk.GSet[E]                         Add, Contains, Elements, Len (never removed)
//	*sdk.ORSet[E]                        Add, Remove, Clear, Contains, Elements, Len (add wins)
//	*sdk.LWWRegister[T]                  Set, SetWithClock, Get, HasValue (last write wins)
//	*sdk.Flag                            Enable, Enabled (never disabled)
//	*sdk.ORMap[K, V]                     GetOrCreate, Get, Remove, Clear, Keys, All, Len (V a CRDT)
//	*sdk.Vote                            Vote, SelfVote, VotesFor, Voters, AtLeastOne, Majority, All
//
// E, T and K are generated message types (or *anypb.Any). A command handler changes the CRDT
// through ctx.State(); the SDK sends the changes with the reply as one operation delta, and a
// failed command (a returned error, or an illegal change such as a negative GCounter increment)
// leaves no trace. examples/chat keeps presence as a Vote and friends as an ORSet:
//
//	friends := sdk.NewCRDT[*sdk.ORSet[*chatpb.Friend]]("com.example.chat.Friends")
//	sdk.CRDTCommand(friends, "Add", func(ctx *sdk.CRDTContext[*sdk.ORSet[*chatpb.Friend]], in *chatpb.FriendRequest) (*emptypb.Empty, error) {
//		return &emptypb.Empty{}, ctx.State().Add(in.GetFriend())
//	})
//
// A server-streaming method gets a CRDTStreamed handler. Its reply is the stream's first
// element; ctx.OnChange registers a callback that runs after every later change of the CRDT
// (on this node or another) and may send the next element or end the stream, and ctx.OnCancel
// one that runs when the client cancels, and may change the CRDT:
//
//	sdk.CRDTStreamed(presence, "Connect", func(ctx *sdk.CRDTStreamContext[*sdk.Vote, *emptypb.Empty], in *chatpb.User) (*emptypb.Empty, error) {
//		ctx.OnCancel(func(cc *sdk.CRDTCancelContext[*sdk.Vote]) error { return cc.State().Vote(false) })
//		return nil, ctx.State().Vote(true) // online while connected
//	})
//
// Contexts also offer Delete, SetWriteConsistency (WriteLocal, WriteMajority, WriteAll),
// Forward, SideEffect and Fail. Test CRDT entities with sdktest.NewCRDT, which plays a kstate
// node with kstate's own CRDT code and can inject changes from other nodes.
//
// # Actions
//
// An action is a stateless service: the proxy calls it where the request lands, with no entity
// key and no ordering. Each method gets a handler of its gRPC shape; the context offers
// metadata, forwards, side effects and failures (examples/validator validates cart requests and
// forwards them to the cart):
//
//	v := sdk.NewAction("com.example.validator.CartValidator")
//	sdk.ActionUnary(v, "AddItem", func(ctx *sdk.ActionContext, in *shoppingcartpb.AddLineItem) (*emptypb.Empty, error) {
//		if reason := validator.Validate(in); reason != "" {
//			return nil, ctx.Fail("%s", reason)
//		}
//		return nil, ctx.Forward("com.example.shoppingcart.ShoppingCart", "AddItem", in)
//	})
//	// rpc AddItems(stream AddLineItem) returns (AddItemsResult): read with in.Recv() until io.EOF, or range over in.All()
//	sdk.ActionStreamedIn(v, "AddItems", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*shoppingcartpb.AddLineItem]) (*validatorpb.AddItemsResult, error) { ... })
//	// rpc CheckItems(CheckItemsRequest) returns (stream ItemCheck): send each element
//	sdk.ActionStreamedOut(v, "CheckItems", func(ctx *sdk.ActionContext, in *validatorpb.CheckItemsRequest, send func(*validatorpb.ItemCheck) error) error { ... })
//	// rpc M(stream In) returns (stream Out): both
//	sdk.ActionStreamed(a, "M", func(ctx *sdk.ActionContext, in *sdk.ActionStream[*In], send func(*Out) error) error { ... })
//
// A unary or streamed-in handler returns one response: a reply, no reply (a nil reply), a
// forward, or a failure. A streamed-out or duplex handler sends each element with send; a
// forward, a failure (ctx.Fail) or side effects asked for through ctx go with the next element
// (send(nil) sends an element without a reply), and a returned error ends the stream with a
// failure element. Unlike an entity's, an action's side effects are kept when it fails. Test
// actions with sdktest.NewAction, which calls each shape in memory.
//
// # Semantics
//
// Commands. The outcome of a command handler is one of: a reply (its events are persisted first),
// a forward (ctx.Forward; the client receives the target's reply), or a command failure (a non-nil
// error; the client receives err.Error(), and the command's events, side effects and forward are
// dropped, so the entity's state is as before the command). Side effects (ctx.SideEffect) are
// calls the proxy makes after the events are persisted.
//
// Value entity commands have the same outcomes; a failure drops the command's state change
// along with its side effects and forward.
//
// Panics. A panicking command handler is a command failure too, with a generic description
// (details and stack go to the log) and Failure.restart set: the handler may have modified state
// it was only allowed to read, so the proxy restarts the entity from its journal (or, for a value
// entity, its stored value). A panicking CRDT handler is a failure without restart: a CRDT
// changes only through its methods, and the SDK undoes a failed handler's changes, so the entity
// (and its open streams) go on. A panicking action handler is a failure with a generic
// description.
//
// Snapshots. With SnapshotEvery(n), a reply whose events take the sequence number across a
// multiple of n carries a snapshot of the state after those events; activation then starts from
// the latest snapshot and replays only the later events. The snapshot is the state message
// itself; Snapshot registers handlers for other snapshot types (to migrate old ones).
//
// Protocol. Server speaks Cloudstate protocol 0.2: cloudstate.EntityDiscovery (discovery sends
// the entities and a FileDescriptorSet of their services, state and event types, with all
// imports), cloudstate.eventsourced.EventSourced (one bidirectional stream per active entity:
// init with the latest snapshot, the events after it, then commands one at a time),
// cloudstate.valueentity.ValueEntity (one stream per active entity: init with the stored value,
// then commands; a reply carries a state action only when the command changed the state),
// cloudstate.crdt.Crdt (one stream per active entity: init with the state as a delta, then
// commands, deltas, cancellations and deletes, each answered with zero or more messages; see
// CrdtSession) and cloudstate.action.ActionProtocol (handleUnary, handleStreamedIn,
// handleStreamedOut and handleStreamed; a streamed input starts with a message naming the
// method, without payload). Payloads are google.protobuf.Any with type.googleapis.com type URLs.
// EventSourcedSession, ValueSession, CrdtSession and Server.HandleAction* are the same protocol
// handling without the transport.
package sdk
