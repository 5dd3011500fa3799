// Package sdktest runs SDK entities and actions in memory, without Kafka, a proxy or gRPC, for
// unit tests.
//
// The harnesses play the proxy's part of Cloudstate protocol 0.2 against the very code that
// serves a real proxy (sdk.EventSourcedSession, sdk.ValueSession, sdk.CrdtSession,
// sdk.Server.HandleAction*):
//
//   - EventSourced (NewEventSourced) activates the entity with init, replays a journal, sends
//     commands with ids from 1, keeps the events and snapshots of successful commands as a
//     journal, and, like a proxy, restarts the entity when a failure asks for it.
//
//   - Value (NewValue) keeps the value the entity stores, activates the entity with it, and
//     reports each command's update or delete.
//
//   - CRDT (NewCRDT) plays a kstate node for a CRDT entity: it keeps the replicated state with
//     kstate's CRDT code (crdtlog), replicates each command's changes, injects other nodes'
//     changes (Remote, RemoveNode), routes streamed messages to their streams (Stream, Next,
//     Cancel), and checks after every step that the entity sees what kstate says it should.
//
//   - Action (NewAction) calls unary, streamed-in, streamed-out and duplex handlers, the last
//     also interactively (Open).
//
//     func TestAddItem(t *testing.T) {
//     h := sdktest.NewEventSourced(t, shoppingcart.NewEntity(), "user-1")
//     if _, err := h.Command("AddItem", &shoppingcartpb.AddLineItem{UserId: "user-1", ProductId: "p1", Name: "Apple", Quantity: 2}); err != nil {
//     t.Fatal(err)
//     }
//     res, err := h.Command("GetCart", &shoppingcartpb.GetShoppingCart{UserId: "user-1"})
//     ...
//     h.Restart() // rebuilds the state from the journal and fails the test if it differs
//     }
//
//     func TestRemoveCart(t *testing.T) {
//     h := sdktest.NewValue(t, valuecart.NewEntity(), "user-1", sdktest.WithState(&domainpb.Cart{...}))
//     res, err := h.Command("RemoveCart", &valuecartpb.RemoveShoppingCart{UserId: "user-1"})
//     // res.Deleted is true; h.Stored() reports no value
//     }
//
//     func TestPresence(t *testing.T) {
//     h := sdktest.NewCRDT(t, chat.NewPresence(), "alice")
//     monitor, _ := h.Stream("Monitor", &chatpb.User{Name: "alice"})
//     connect, _ := h.Stream("Connect", &chatpb.User{Name: "alice"}) // monitor.Next() reports online
//     connect.Cancel()                                                // and then offline
//     }
//
//     func TestValidator(t *testing.T) {
//     h := sdktest.NewAction(t, validator.NewEntity())
//     res, err := h.Unary("AddItem", &shoppingcartpb.AddLineItem{UserId: "u", ProductId: "p", Quantity: 1})
//     // res.Forward names com.example.shoppingcart.ShoppingCart/AddItem
//     }
package sdktest

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/sdk"
)

// TB is the part of testing.TB the harness uses; *testing.T and *testing.B implement it. A nil
// TB makes the harness panic where it would fail the test, for use outside tests.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Option configures a harness.
type Option func(*config)

type config struct {
	log      hclog.Logger
	ctx      context.Context
	snapshot *snapshotOpt
	events   []proto.Message
	state    proto.Message // WithState
	crdtOps  []remoteOp    // WithRemoteOps
}

type snapshotOpt struct {
	seq int64
	msg proto.Message
}

// WithLogger sends the SDK's logs (command failures, panics with their stacks) to l. The default
// discards them.
func WithLogger(l hclog.Logger) Option { return func(c *config) { c.log = l } }

// WithContext sets the context command handlers see as ctx.Context(). The default is
// context.Background().
func WithContext(ctx context.Context) Option { return func(c *config) { c.ctx = ctx } }

// WithSnapshot starts the entity from a stored snapshot taken at sequence number seq, as a proxy
// does for an entity with history. msg is normally the entity's state type, or a type registered
// with sdk.Snapshot.
func WithSnapshot(seq int64, msg proto.Message) Option {
	return func(c *config) { c.snapshot = &snapshotOpt{seq: seq, msg: msg} }
}

// WithEvents puts events in the entity's journal before it starts, after the WithSnapshot
// snapshot if there is one; the entity replays them on activation. Use it to test a command
// against a given history.
func WithEvents(events ...proto.Message) Option {
	return func(c *config) { c.events = append(c.events, events...) }
}

// CommandOption configures one command.
type CommandOption func(*cloudstatepb.Command)

// WithMetadata adds a string metadata entry to the command.
func WithMetadata(key, value string) CommandOption {
	return func(c *cloudstatepb.Command) {
		if c.Metadata == nil {
			c.Metadata = &cloudstatepb.Metadata{}
		}
		c.Metadata.Entries = append(c.Metadata.Entries, &cloudstatepb.MetadataEntry{
			Key: key, Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: value},
		})
	}
}

// EventSourced runs one event-sourced entity instance in memory. It is not safe for concurrent
// use.
type EventSourced[S proto.Message] struct {
	t         TB
	srv       *sdk.Server
	ctx       context.Context
	service   string
	entityID  string
	sess      *sdk.EventSourcedSession
	nextID    int64
	journal   []*eventsourcedpb.EventSourcedEvent
	snapshots []*eventsourcedpb.EventSourcedSnapshot // the initial one (WithSnapshot) first, if any
	firstSeq  int64                                  // sequence of the first event the journal could hold
}

// Result is what a successful command produced.
type Result struct {
	// CommandID is the id the harness gave the command; ids start at 1 per harness.
	CommandID int64
	// Reply is the reply message, or nil when the command forwarded.
	Reply proto.Message
	// Forward is the forward, or nil when the command replied.
	Forward *Forward
	// SideEffects are the command's side effects, in order.
	SideEffects []SideEffect
	// Events are the events the command emitted, in order.
	Events []proto.Message
	// Snapshot is the snapshot attached to the reply (the state after Events), or nil.
	Snapshot proto.Message
}

// Forward is a command's forward to another method.
type Forward struct {
	// Service is the target's full service name, Method its simple method name.
	Service, Method string
	// Message is the input the target receives.
	Message proto.Message
}

// SideEffect is a call the proxy makes after the command's events or state are persisted (for an
// action, when it receives the response).
type SideEffect struct {
	// Service is the target's full service name, Method its simple method name.
	Service, Method string
	// Message is the input the target receives.
	Message proto.Message
	// Synchronous side effects complete before the client gets the reply.
	Synchronous bool
}

// Failure is a command failure, as the client would receive it. Command returns it as its error;
// action calls return it as their error too.
type Failure struct {
	// CommandID is the failed command's id; 0 for actions, whose calls have no id.
	CommandID int64
	// Description is the message the client receives.
	Description string
	// Restart tells the proxy to restart the entity (the handler panicked). The harness then
	// restarts it before Command returns.
	Restart bool
}

// Error implements error.
func (f *Failure) Error() string {
	if f.CommandID == 0 {
		return "action failed: " + f.Description
	}
	if f.Restart {
		return fmt.Sprintf("command %d failed (entity restarted): %s", f.CommandID, f.Description)
	}
	return fmt.Sprintf("command %d failed: %s", f.CommandID, f.Description)
}

// Snapshot is a snapshot in the harness's journal.
type Snapshot[S proto.Message] struct {
	// Sequence is the sequence number of the last event the snapshot includes.
	Sequence int64
	// State is the snapshot, decoded as the entity's state type.
	State S
}

// NewEventSourced registers e the way sdk.Server.Register does (failing the test on a definition
// error) and activates the entity entityID: init, with the WithSnapshot snapshot if given, then
// replay of the WithEvents events.
func NewEventSourced[S proto.Message](t TB, e *sdk.EventSourcedEntity[S], entityID string, opts ...Option) *EventSourced[S] {
	if t != nil {
		t.Helper()
	}
	cfg := config{ctx: context.Background()}
	for _, o := range opts {
		o(&cfg)
	}
	h := &EventSourced[S]{t: t, ctx: cfg.ctx, entityID: entityID, firstSeq: 1}
	if e == nil {
		h.fatalf("sdktest: nil entity")
		return h
	}
	if cfg.state != nil {
		h.fatalf("sdktest: WithState is for value entities; start an event-sourced entity from WithSnapshot and WithEvents")
		return h
	}
	h.service = e.ServiceName()
	h.srv = sdk.NewServer(sdk.WithLogger(cfg.log))
	if err := h.srv.Register(e); err != nil {
		h.fatalf("sdktest: %v", err)
		return h
	}
	seq := int64(0)
	if cfg.snapshot != nil {
		a, err := anypb.New(cfg.snapshot.msg)
		if err != nil {
			h.fatalf("sdktest: WithSnapshot: %v", err)
			return h
		}
		seq = cfg.snapshot.seq
		h.firstSeq = seq + 1
		h.snapshots = append(h.snapshots, &eventsourcedpb.EventSourcedSnapshot{SnapshotSequence: seq, Snapshot: a})
	}
	for _, ev := range cfg.events {
		a, err := anypb.New(ev)
		if err != nil {
			h.fatalf("sdktest: WithEvents: %v", err)
			return h
		}
		seq++
		h.journal = append(h.journal, &eventsourcedpb.EventSourcedEvent{Sequence: seq, Payload: a})
	}
	h.sess = h.activate(true)
	return h
}

func (h *EventSourced[S]) fatalf(format string, args ...any) {
	if h.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	h.t.Helper()
	h.t.Fatalf(format, args...)
}

// activate opens a new session: init with the latest snapshot (if fromSnapshot), then replay of
// the journal after it.
func (h *EventSourced[S]) activate(fromSnapshot bool) *sdk.EventSourcedSession {
	if h.t != nil {
		h.t.Helper()
	}
	sess := h.srv.NewEventSourcedSession(h.ctx)
	init := &eventsourcedpb.EventSourcedInit{ServiceName: h.service, EntityId: h.entityID}
	after := int64(0)
	if fromSnapshot && len(h.snapshots) > 0 {
		init.Snapshot = h.snapshots[len(h.snapshots)-1]
		after = init.Snapshot.GetSnapshotSequence()
	}
	if _, err := sess.Step(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Init{Init: init}}); err != nil {
		h.fatalf("sdktest: init %s %q: %v", h.service, h.entityID, err)
		return sess
	}
	for _, ev := range h.journal {
		if ev.GetSequence() <= after {
			continue
		}
		if _, err := sess.Step(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Event{Event: ev}}); err != nil {
			h.fatalf("sdktest: replay %s %q: %v", h.service, h.entityID, err)
			return sess
		}
	}
	return sess
}

// Command sends a command to the entity and returns what it produced. A command failure is
// returned as a *Failure error (with a nil Result); if the failure asks for a restart, the harness
// restarts the entity first, as a proxy would. A reply that breaks the protocol, or a stream
// failure, fails the test.
func (h *EventSourced[S]) Command(name string, in proto.Message, opts ...CommandOption) (*Result, error) {
	if h.t != nil {
		h.t.Helper()
	}
	if in == nil {
		h.fatalf("sdktest: command %s: nil input message", name)
		return nil, errors.New("sdktest: nil input message")
	}
	payload, err := anypb.New(in)
	if err != nil {
		h.fatalf("sdktest: command %s: %v", name, err)
		return nil, err
	}
	h.nextID++
	cmd := &cloudstatepb.Command{EntityId: h.entityID, Id: h.nextID, Name: name, Payload: payload}
	for _, o := range opts {
		o(cmd)
	}
	out, err := h.sess.Step(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{Command: cmd}})
	if err != nil {
		h.fatalf("sdktest: command %s: stream failure: %v", name, err)
		return nil, err
	}
	reply := out.GetReply()
	if reply == nil {
		h.fatalf("sdktest: command %s: no reply, got %v", name, out)
		return nil, errors.New("sdktest: no reply")
	}
	if reply.GetCommandId() != cmd.GetId() {
		h.fatalf("sdktest: command %s: reply for command %d, want %d", name, reply.GetCommandId(), cmd.GetId())
	}
	if f := reply.GetClientAction().GetFailure(); f != nil {
		if len(reply.GetEvents()) > 0 || len(reply.GetSideEffects()) > 0 || reply.GetSnapshot() != nil {
			h.fatalf("sdktest: command %s: a failure reply carries events, side effects or a snapshot", name)
		}
		fail := &Failure{CommandID: f.GetCommandId(), Description: f.GetDescription(), Restart: f.GetRestart()}
		if fail.Restart {
			h.sess = h.activate(true)
		}
		return nil, fail
	}
	if reply.GetSnapshot() != nil && len(reply.GetEvents()) == 0 {
		h.fatalf("sdktest: command %s: a snapshot without events", name)
	}
	res := &Result{CommandID: cmd.GetId()}
	switch a := reply.GetClientAction().GetAction().(type) {
	case *cloudstatepb.ClientAction_Reply:
		res.Reply = h.decode(a.Reply.GetPayload())
	case *cloudstatepb.ClientAction_Forward:
		res.Forward = &Forward{Service: a.Forward.GetServiceName(), Method: a.Forward.GetCommandName(), Message: h.decode(a.Forward.GetPayload())}
	default:
		h.fatalf("sdktest: command %s: reply without a client action", name)
	}
	for _, se := range reply.GetSideEffects() {
		res.SideEffects = append(res.SideEffects, SideEffect{
			Service: se.GetServiceName(), Method: se.GetCommandName(), Message: h.decode(se.GetPayload()), Synchronous: se.GetSynchronous(),
		})
	}
	seq := h.lastSeq()
	for _, ev := range reply.GetEvents() {
		seq++
		h.journal = append(h.journal, &eventsourcedpb.EventSourcedEvent{Sequence: seq, Payload: ev})
		res.Events = append(res.Events, h.decode(ev))
	}
	if snap := reply.GetSnapshot(); snap != nil {
		h.snapshots = append(h.snapshots, &eventsourcedpb.EventSourcedSnapshot{SnapshotSequence: seq, Snapshot: snap})
		res.Snapshot = h.decode(snap)
	}
	if got := h.sess.Sequence(); got != seq {
		h.fatalf("sdktest: command %s: entity is at sequence %d, journal at %d", name, got, seq)
	}
	return res, nil
}

func (h *EventSourced[S]) lastSeq() int64 {
	if n := len(h.journal); n > 0 {
		return h.journal[n-1].GetSequence()
	}
	return h.firstSeq - 1
}

func (h *EventSourced[S]) decode(a *anypb.Any) proto.Message {
	if h.t != nil {
		h.t.Helper()
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		h.fatalf("sdktest: decode %s: %v", a.GetTypeUrl(), err)
	}
	return m
}

// Events returns the entity's journal: the WithEvents events, then every event of every
// successful command, in order.
func (h *EventSourced[S]) Events() []proto.Message {
	evs := make([]proto.Message, len(h.journal))
	for i, ev := range h.journal {
		evs[i] = h.decode(ev.GetPayload())
	}
	return evs
}

// Snapshots returns the snapshots taken so far, oldest first, after the WithSnapshot snapshot if
// there is one. Snapshots of a type other than S (possible only with WithSnapshot) fail the test.
func (h *EventSourced[S]) Snapshots() []Snapshot[S] {
	snaps := make([]Snapshot[S], 0, len(h.snapshots))
	for _, sn := range h.snapshots {
		m, ok := h.decode(sn.GetSnapshot()).(S)
		if !ok {
			h.fatalf("sdktest: snapshot at %d is a %s, not the state type", sn.GetSnapshotSequence(), sn.GetSnapshot().GetTypeUrl())
			continue
		}
		snaps = append(snaps, Snapshot[S]{Sequence: sn.GetSnapshotSequence(), State: m})
	}
	return snaps
}

// State returns a copy of the entity's current state.
func (h *EventSourced[S]) State() S {
	return proto.Clone(h.sess.State()).(S)
}

// Sequence returns the sequence number of the entity's last event.
func (h *EventSourced[S]) Sequence() int64 { return h.sess.Sequence() }

// Restart passivates the entity and activates it again, as a proxy does: init with the latest
// snapshot, then replay of the events after it. It fails the test unless the rebuilt state equals
// the state before the restart. When the journal starts at sequence 1 it also replays the whole
// journal from the initial state, without snapshots, and checks that state too: together, the
// checks show that the event handlers are pure and that snapshots agree with the events.
func (h *EventSourced[S]) Restart() {
	if h.t != nil {
		h.t.Helper()
	}
	before := h.sess.State()
	if h.firstSeq == 1 {
		full := h.activate(false)
		if !proto.Equal(full.State(), before) {
			h.fatalf("sdktest: replaying all %d events from the initial state gives\n  %v\nbut the entity's state was\n  %v\n(event handlers must be pure functions of state and event)",
				len(h.journal), full.State(), before)
		}
	}
	h.sess = h.activate(true)
	if !proto.Equal(h.sess.State(), before) {
		h.fatalf("sdktest: restarting from the latest snapshot and the events after it gives\n  %v\nbut the entity's state was\n  %v",
			h.sess.State(), before)
	}
}
