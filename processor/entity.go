package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// entity is one active entity of a partition: a goroutine (run), started by the partition when
// its core activates the entity, that takes the commands the core dispatches — one at a time —
// and hands each to the driver of its kind, which speaks the Cloudstate protocol on one stream
// (PROTOCOL.md "Per entity"). The partition closes in to passivate or stop it.
type entity struct {
	o   *owner
	key entityKey
	svc *catalog.Service
	log hclog.Logger
	in  chan *request // capacity 1: the core never dispatches a second command before Done
	drv driver
	// keys is what the entity knows of its remembered idempotency keys; nil until its first
	// keyed command (see keyFilter).
	keys *keyFilter
}

// driver is the protocol of one entity kind. handle must answer r exactly once; a non-nil error
// means the stream is unusable and the entity is discarded (it reactivates from durable state).
type driver interface {
	handle(r *request) error
	close()
}

func (o *owner) newEntity(k entityKey, svc *catalog.Service) *entity {
	e := &entity{
		o:   o,
		key: k,
		svc: svc,
		log: o.log.With("service", k.Service, "entity", k.ID),
		in:  make(chan *request, 1),
	}
	switch svc.Kind {
	case catalog.Value:
		e.drv = &valueDriver{e: e}
	default:
		e.drv = &esDriver{e: e}
	}
	return e
}

// errCrashed marks a stream that failed: the entity is discarded and reactivated on its next
// command from durable state.
var errCrashed = errors.New("entity crashed")

func (e *entity) run() {
	defer e.drv.close()
	for r := range e.in {
		if e.settled(r) {
			e.o.notes <- doneNote{cmd: r.id, e: e}
			continue
		}
		r.cmdID = e.o.n.commandID(e.o.p)
		err := e.drv.handle(r)
		if err != nil {
			e.log.Warn("entity stream failed; it will be reactivated from durable state", "error", err)
			e.o.n.streamError(e.key.Service, err)
			e.drv.close()
		}
		// The partition loop always takes notes, also while it drains.
		e.o.notes <- doneNote{cmd: r.id, exited: err != nil, e: e}
		if err != nil {
			return
		}
	}
}

// openStream opens an entity's protocol stream: the in-process SDK session, or a gRPC stream to
// the user function that waits (until the command's deadline) for a user function that is
// restarting rather than failing at once.
func openStream[I, O any](e *entity, r *request, inproc func(context.Context) stepper[I, O], remote func(context.Context, ...grpc.CallOption) (protoStream[I, O], error)) (protoStream[I, O], context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(e.o.ctx)
	if inproc != nil {
		return &sessionStream[I, O]{s: inproc(ctx)}, cancel, nil
	}
	wait := e.o.n.commandTimeout
	if dl, ok := r.ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	t := time.AfterFunc(wait, cancel)
	s, err := remote(ctx, grpc.WaitForReady(true))
	if !t.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("open stream: %w", err)
	}
	return s, cancel, nil
}

// exchange sends one message and waits for the answer, cancelling the stream if the user function
// takes longer than the command timeout.
func exchange[I, O any](e *entity, r *request, s protoStream[I, O], cancel context.CancelFunc, in *I) (*O, error) {
	if cs, ok := s.(interface{ setContext(context.Context) }); ok {
		cs.setContext(r.ctx) // in-process handlers see the command's deadline
	}
	if err := s.Send(in); err != nil {
		return nil, err
	}
	t := time.AfterFunc(e.o.n.commandTimeout, cancel)
	defer t.Stop()
	return s.Recv()
}

// entityConn is an entity's protocol stream, shared by the drivers of every kind: the stream, its
// cancel function and the command ids handed out on it.
type entityConn[I, O any] struct {
	stream  protoStream[I, O]
	cancel  context.CancelFunc
	counter uint64 // command ids handed to the user function on the current stream
}

func (c *entityConn[I, O]) open(s protoStream[I, O], cancel context.CancelFunc) {
	c.stream, c.cancel, c.counter = s, cancel, 0
}

func (c *entityConn[I, O]) close() {
	if c.stream != nil {
		_ = c.stream.CloseSend()
		c.cancel()
		c.stream = nil
	}
}

// send hands r's command to the user function and returns its answer and the command id. It
// activates the entity first when it has no stream. A stream that broke while the entity was idle
// (the user function restarted) is reopened from durable state and the command sent once more:
// nothing of a command is persisted before its reply. On an error r has been answered, and the
// stream is unusable.
func (c *entityConn[I, O]) send(e *entity, r *request, activate func(*request) error, wrap func(*cloudstatepb.Command) *I) (*O, int64, error) {
	for attempt := 0; ; attempt++ {
		fresh := c.stream == nil
		if fresh {
			span := e.o.n.tr.StartActivation(r.ctx, e.key.Service, e.key.ID, e.o.p)
			err := activate(r)
			endSpan(span, err)
			if err != nil {
				r.finish(result{err: fmt.Errorf("%w: activate %s/%s: %v", catalog.ErrUnavailable, e.key.Service, e.key.ID, err)})
				return nil, 0, err
			}
		}
		c.counter++
		id := int64(c.counter)
		out, err := exchange(e, r, c.stream, c.cancel, wrap(e.command(r, id)))
		if err == nil {
			return out, id, nil
		}
		if !fresh && attempt == 0 && r.ctx.Err() == nil {
			e.log.Debug("entity stream broke while idle; reopening", "error", err)
			c.close()
			continue
		}
		r.finish(result{err: userFunctionErr(err)})
		return nil, 0, err
	}
}

// esDriver drives an event-sourced entity over EventSourced.handle.
type esDriver struct {
	e *entity
	entityConn[eventsourcedpb.EventSourcedStreamIn, eventsourcedpb.EventSourcedStreamOut]
	lastSeq int64
}

// activate opens the stream and sends init (with the snapshot) and the events after it, all read
// from Pebble (never from Kafka).
func (d *esDriver) activate(r *request) error {
	e := d.e
	img, err := e.o.n.store.LoadEventSourced(e.o.p, e.svc.PersistenceID, e.key.ID)
	if err != nil {
		return fmt.Errorf("load from store: %w", err)
	}
	var inproc func(context.Context) stepper[eventsourcedpb.EventSourcedStreamIn, eventsourcedpb.EventSourcedStreamOut]
	if sdkSrv := e.o.n.sdkSrv; sdkSrv != nil {
		inproc = func(ctx context.Context) stepper[eventsourcedpb.EventSourcedStreamIn, eventsourcedpb.EventSourcedStreamOut] {
			return sdkSrv.NewEventSourcedSession(ctx)
		}
	}
	stream, cancel, err := openStream(e, r, inproc, func(ctx context.Context, opts ...grpc.CallOption) (esStream, error) {
		return eventsourcedpb.NewEventSourcedClient(e.o.n.uf).Handle(ctx, opts...)
	})
	if err != nil {
		return err
	}
	d.open(stream, cancel)
	init := &eventsourcedpb.EventSourcedInit{ServiceName: e.svc.Name, EntityId: e.key.ID}
	if img.Snapshot != nil {
		init.Snapshot = &eventsourcedpb.EventSourcedSnapshot{
			SnapshotSequence: img.Snapshot.Sequence,
			Snapshot:         img.Snapshot.Snapshot,
		}
	}
	if err := stream.Send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Init{Init: init}}); err != nil {
		return fmt.Errorf("send init: %w", err)
	}
	for _, ev := range img.Events {
		msg := &eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Event{
			Event: &eventsourcedpb.EventSourcedEvent{Sequence: ev.Sequence, Payload: ev.Payload},
		}}
		if err := stream.Send(msg); err != nil {
			return fmt.Errorf("send event %d: %w", ev.Sequence, err)
		}
	}
	d.lastSeq = img.LastSequence
	return nil
}

// handle runs one command. A non-nil error means the stream is unusable and the entity must be
// discarded; the request has been answered either way.
func (d *esDriver) handle(r *request) error {
	out, id, err := d.send(d.e, r, d.activate, func(c *cloudstatepb.Command) *eventsourcedpb.EventSourcedStreamIn {
		return &eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{Command: c}}
	})
	if err != nil {
		return err
	}
	switch m := out.Message.(type) {
	case *eventsourcedpb.EventSourcedStreamOut_Failure:
		// A stream-level failure crashes the entity (PROTOCOL.md "Failures").
		r.finish(result{err: &catalog.CommandFailure{Description: m.Failure.GetDescription()}})
		return fmt.Errorf("%w: %s", errCrashed, m.Failure.GetDescription())
	case *eventsourcedpb.EventSourcedStreamOut_Reply:
		return d.reply(r, id, m.Reply)
	default:
		return protocolError(r, "user function sent an empty EventSourcedStreamOut")
	}
}

// command is the protocol Command for request r with stream command id id.
func (e *entity) command(r *request, id int64) *cloudstatepb.Command {
	return &cloudstatepb.Command{
		EntityId: e.key.ID,
		Id:       id,
		Name:     r.method.Name,
		Payload:  &anypb.Any{TypeUrl: catalog.TypeURL(r.method.Input), Value: r.payload},
		Metadata: e.o.n.tr.Metadata(r.ctx, r.md), // the command span's trace context
	}
}

// protocolError answers a command whose user function broke the protocol (INTERNAL: retrying
// cannot help) and crashes the entity.
func protocolError(r *request, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	r.finish(result{err: status.Errorf(codes.Internal, "user function protocol error: %s", msg)})
	return fmt.Errorf("%w: %s", errCrashed, msg)
}

func (d *esDriver) reply(r *request, id int64, rep *eventsourcedpb.EventSourcedReply) error {
	if rep.GetCommandId() != id {
		return protocolError(r, "reply for command %d while %d is in flight", rep.GetCommandId(), id)
	}
	if f := rep.GetClientAction().GetFailure(); f != nil {
		// A failed command's events and side effects are dropped; only its outcome is
		// remembered when it carries an idempotency key.
		if err := d.e.rememberFailure(r, rep.GetClientAction()); err != nil {
			r.finish(result{err: err})
			return nil
		}
		r.finish(result{err: &catalog.CommandFailure{Description: f.GetDescription(), Restart: f.GetRestart()}})
		if f.GetRestart() {
			// Close and reopen at once, as Cloudstate's proxy does: the user function sees init
			// and the persisted events only.
			d.close()
			if err := d.activate(r); err != nil {
				return fmt.Errorf("%w: reopen after restart: %v", errCrashed, err)
			}
		}
		return nil
	}
	if rep.GetSnapshot() != nil && len(rep.GetEvents()) == 0 {
		return protocolError(r, "a snapshot without events")
	}
	recs, seq := d.records(r, rep)
	recs, err := d.e.remember(r, rep.GetClientAction(), recs)
	if err != nil {
		return protocolError(r, "its reply cannot be remembered for the idempotency key: %v", err)
	}
	if err := d.e.o.persist(r, recs); err != nil {
		// Not durable (or unknown): the user function's state has moved ahead of the log, so the
		// stream is restarted from durable state.
		r.finish(result{err: err})
		return fmt.Errorf("persist: %w", err)
	}
	d.lastSeq = seq
	d.e.o.n.complete(r, rep.GetClientAction(), rep.GetSideEffects(), "")
	return nil
}

// records builds the journal (and snapshot) records of a reply: key = entity id, value = the
// event's bytes, headers sequence/type/command id.
func (d *esDriver) records(r *request, rep *eventsourcedpb.EventSourcedReply) ([]broker.Record, int64) {
	seq := d.lastSeq
	events := rep.GetEvents()
	if len(events) == 0 {
		return nil, seq
	}
	cfg := &d.e.o.n.cfg.Broker
	pid := d.e.svc.PersistenceID
	cmdID := r.cmdID
	recs := make([]broker.Record, 0, len(events)+1)
	for _, ev := range events {
		seq++
		recs = append(recs, broker.Record{
			Topic:     cfg.EventsTopic(pid),
			Partition: d.e.o.p,
			Key:       []byte(d.e.key.ID),
			Value:     ev.GetValue(),
			Headers: []broker.Header{
				{Key: kstatev1.HeaderSequence, Value: []byte(strconv.FormatInt(seq, 10))},
				{Key: kstatev1.HeaderType, Value: []byte(ev.GetTypeUrl())},
				{Key: kstatev1.HeaderCommandID, Value: []byte(cmdID)},
				{Key: kstatev1.HeaderEntityType, Value: []byte(d.e.svc.Name)},
			},
		})
	}
	if snap := rep.GetSnapshot(); snap != nil {
		v, err := marshal(&kstatev1.SnapshotRecord{Sequence: seq, Snapshot: snap, JournalOffset: -1})
		if err == nil {
			recs = append(recs, broker.Record{
				Topic:     cfg.SnapshotsTopic(pid),
				Partition: d.e.o.p,
				Key:       []byte(d.e.key.ID),
				Value:     v,
				Headers:   []broker.Header{{Key: kstatev1.HeaderSequence, Value: []byte(strconv.FormatInt(seq, 10))}},
			})
		}
	}
	return recs, seq
}
