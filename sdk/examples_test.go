package sdk_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

// The examples implement this service from kstate's test protos:
//
//	package kstate.test.v1;
//	service EventSourcedTwo { rpc Call(Request) returns (Response); }
//	message Request  { string id = 1 [(cloudstate.entity_key) = true]; string payload = 2; }
//	message Response { string message = 1; }
//	message Event    { string payload = 1; }
//	message State    { repeated string payloads = 1; }

// notes returns an entity that records each Request.payload as an Event.
func notes() *sdk.EventSourcedEntity[*testpb.State] {
	e := sdk.NewEventSourced("kstate.test.v1.EventSourcedTwo", func(string) *testpb.State { return &testpb.State{} })
	sdk.Command(e, "Call", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		if err := ctx.Emit(&testpb.Event{Payload: in.GetPayload()}); err != nil {
			return nil, err
		}
		return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), " ")}, nil
	})
	sdk.Event(e, func(s *testpb.State, ev *testpb.Event) *testpb.State {
		s.Payloads = append(s.Payloads, ev.GetPayload())
		return s
	})
	return e
}

func ExampleNewEventSourced() {
	// State type *testpb.State; a new entity starts with an empty one.
	e := sdk.NewEventSourced("kstate.test.v1.EventSourcedTwo", func(entityID string) *testpb.State {
		return &testpb.State{}
	}).
		PersistenceID("notes"). // the journal's name; default "EventSourcedTwo"
		SnapshotEvery(2).       // snapshot when the sequence crosses 2, 4, 6, ...
		Passivation(time.Minute)
	sdk.Command(e, "Call", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		if err := ctx.Emit(&testpb.Event{Payload: in.GetPayload()}); err != nil {
			return nil, err
		}
		// State already includes the event just emitted.
		return &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), " ")}, nil
	})
	sdk.Event(e, func(s *testpb.State, ev *testpb.Event) *testpb.State {
		s.Payloads = append(s.Payloads, ev.GetPayload())
		return s
	})

	// Run it in memory (in a test, pass t rather than nil).
	h := sdktest.NewEventSourced(nil, e, "n1")
	for _, p := range []string{"hello", "event-sourced", "world"} {
		res, err := h.Command("Call", &testpb.Request{Id: "n1", Payload: p})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s (snapshot: %v)\n", res.Reply.(*testpb.Response).GetMessage(), res.Snapshot != nil)
	}
	// Output:
	// hello (snapshot: false)
	// hello event-sourced (snapshot: true)
	// hello event-sourced world (snapshot: false)
}

func ExampleCommand() {
	e := sdk.NewEventSourced[*testpb.State]("kstate.test.v1.EventSourcedTwo", nil)
	sdk.Command(e, "Call", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		switch {
		case in.GetPayload() == "":
			// A command failure: the client gets the description, nothing is persisted.
			return nil, ctx.Fail("Payload of note %s must not be empty.", ctx.EntityID())
		case len(ctx.State().GetPayloads()) >= 2:
			// Hand the command to another service; the client gets that service's reply.
			return nil, ctx.Forward("kstate.test.v1.EventSourcedTest", "Process", in)
		}
		if err := ctx.Emit(&testpb.Event{Payload: in.GetPayload()}); err != nil {
			return nil, err
		}
		// Ask the proxy to notify another service once the event is persisted.
		if err := ctx.SideEffect("kstate.test.v1.EventSourcedTest", "Process", in, false); err != nil {
			return nil, err
		}
		return &testpb.Response{Message: fmt.Sprintf("note %d recorded", ctx.Sequence())}, nil
	})
	sdk.Event(e, func(s *testpb.State, ev *testpb.Event) *testpb.State {
		s.Payloads = append(s.Payloads, ev.GetPayload())
		return s
	})

	h := sdktest.NewEventSourced(nil, e, "n1")
	for _, p := range []string{"", "a", "b", "c"} {
		res, err := h.Command("Call", &testpb.Request{Id: "n1", Payload: p})
		switch {
		case err != nil:
			fmt.Println("failure:", err.(*sdktest.Failure).Description)
		case res.Forward != nil:
			fmt.Println("forwarded to", res.Forward.Service+"/"+res.Forward.Method)
		default:
			fmt.Println(res.Reply.(*testpb.Response).GetMessage(), "+", len(res.SideEffects), "side effect")
		}
	}
	// Output:
	// failure: Payload of note n1 must not be empty.
	// note 1 recorded + 1 side effect
	// note 2 recorded + 1 side effect
	// forwarded to kstate.test.v1.EventSourcedTest/Process
}

func ExampleEvent() {
	e := sdk.NewEventSourced[*testpb.State]("kstate.test.v1.EventSourcedTwo", nil)
	sdk.Command(e, "Call", func(ctx *sdk.CommandContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		return &testpb.Response{}, ctx.Emit(&testpb.Event{Payload: in.GetPayload()})
	})
	// Event handlers are pure: the state after the event depends on the state and the event only.
	// Here the state keeps the last two payloads.
	sdk.Event(e, func(s *testpb.State, ev *testpb.Event) *testpb.State {
		s.Payloads = append(s.Payloads, ev.GetPayload())
		if n := len(s.Payloads); n > 2 {
			s.Payloads = s.Payloads[n-2:]
		}
		return s
	})

	h := sdktest.NewEventSourced(nil, e, "n1")
	for _, p := range []string{"a", "b", "c"} {
		if _, err := h.Command("Call", &testpb.Request{Payload: p}); err != nil {
			fmt.Println(err)
		}
	}
	fmt.Println(h.State().GetPayloads())
	h.Restart() // replays the three events; the state comes out the same
	fmt.Println(h.State().GetPayloads())
	// Output:
	// [b c]
	// [b c]
}

func ExampleSnapshot() {
	e := notes()
	// Snapshots used to be a single Event holding all notes separated by ";". The SDK now writes
	// State snapshots, and restores the old ones with this handler.
	sdk.Snapshot(e, func(old *testpb.Event) *testpb.State {
		return &testpb.State{Payloads: strings.Split(old.GetPayload(), ";")}
	})

	h := sdktest.NewEventSourced(nil, e, "n1", sdktest.WithSnapshot(2, &testpb.Event{Payload: "first;second"}))
	res, err := h.Command("Call", &testpb.Request{Payload: "third"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Reply.(*testpb.Response).GetMessage(), "at sequence", h.Sequence())
	// Output:
	// first second third at sequence 3
}

func ExampleServer() {
	srv := sdk.NewServer(sdk.WithServiceInfo("notes", "v1"))
	if err := srv.Register(notes()); err != nil {
		fmt.Println(err)
		return
	}

	// Put the Cloudstate services on a gRPC server of your own; here one served in memory.
	g := grpc.NewServer()
	srv.RegisterGRPC(g)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()

	// What a proxy does first: discovery.
	conn, err := grpc.NewClient("passthrough:///user-function",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	spec, err := cloudstatepb.NewEntityDiscoveryClient(conn).Discover(context.Background(), &cloudstatepb.ProxyInfo{ProtocolMinorVersion: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ent := range spec.GetEntities() {
		fmt.Println(ent.GetEntityType(), ent.GetServiceName(), ent.GetPersistenceId())
	}
	info := spec.GetServiceInfo()
	fmt.Println(info.GetServiceName(), info.GetServiceVersion(), info.GetSupportLibraryName(), info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion())
	// Output:
	// cloudstate.eventsourced.EventSourced kstate.test.v1.EventSourcedTwo EventSourcedTwo
	// notes v1 kstate-go-sdk 0 2
}

func ExampleServer_Serve() {
	srv := sdk.NewServer()
	if err := srv.Register(notes()); err != nil {
		fmt.Println(err)
		return
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, lis) }()
	// ... a proxy connects to lis.Addr() ...
	cancel()
	fmt.Println("Serve returned", <-done)
	// Output:
	// Serve returned <nil>
}

func ExampleListenAndServe() {
	// A standalone user function: serve on USER_FUNCTION_HOST:USER_FUNCTION_PORT (default
	// 127.0.0.1:8080) until interrupted.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := sdk.ListenAndServe(ctx, notes()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func ExampleMetadata() {
	e := sdk.NewEventSourced[*testpb.State]("kstate.test.v1.EventSourcedTwo", nil)
	sdk.Command(e, "Call", func(ctx *sdk.CommandContext[*testpb.State], _ *testpb.Request) (*testpb.Response, error) {
		md := ctx.Metadata()
		return &testpb.Response{Message: fmt.Sprintf("%d entries, user %q", md.Len(), md.Get("x-user"))}, nil
	})
	h := sdktest.NewEventSourced(nil, e, "n1")
	res, _ := h.Command("Call", &testpb.Request{}, sdktest.WithMetadata("X-User", "alice"))
	fmt.Println(res.Reply.(*testpb.Response).GetMessage())
	// Output:
	// 1 entries, user "alice"
}
