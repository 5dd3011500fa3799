package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// entity drives one active event-sourced entity: one EventSourced.handle stream to the user
// function, commands one at a time (PROTOCOL.md "Per entity"). Its goroutine (run) is owned by the
// partition, which sends it requests on in and closes in to passivate or stop it.
type entity struct {
	o       *owner
	key     entityKey
	svc     *Service
	log     hclog.Logger
	in      chan *request
	taken   uint64
	counter uint64 // command ids handed to the user function on the current stream

	stream  eventsourcedpb.EventSourced_HandleClient
	cancel  context.CancelFunc
	lastSeq int64
}

func (o *owner) newEntity(k entityKey, svc *Service) *entity {
	return &entity{
		o:   o,
		key: k,
		svc: svc,
		log: o.log.With("service", k.service, "entity", k.entityID),
		in:  make(chan *request, o.n.cfg.EntityQueue),
	}
}

// errCrashed marks a stream that failed: the entity is discarded and reactivated on its next
// command from durable state.
var errCrashed = errors.New("entity crashed")

func (e *entity) run() {
	defer e.close()
	timeout := e.svc.Passivation
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-e.in:
			if !ok {
				return // passivated or partition stopped
			}
			e.taken++
			if err := e.handle(r); err != nil {
				e.log.Warn("entity stream failed; it will be reactivated from durable state", "error", err)
				e.close()
				select {
				case e.o.exited <- e:
				case <-e.o.ctx.Done():
				}
				return
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(timeout)
		case <-timer.C:
			select {
			case e.o.idle <- idleNote{e: e, taken: e.taken}:
			case <-e.o.ctx.Done():
			}
		}
	}
}

func (e *entity) close() {
	if e.stream != nil {
		_ = e.stream.CloseSend()
		e.cancel()
		e.stream = nil
	}
}

// activate opens the stream and sends init (with the snapshot) and the events after it, all read
// from Pebble (never from Kafka).
func (e *entity) activate() error {
	img, err := e.o.n.store.LoadEventSourced(e.o.p, e.svc.PersistenceID, e.key.entityID)
	if err != nil {
		return fmt.Errorf("load from store: %w", err)
	}
	ctx, cancel := context.WithCancel(e.o.ctx)
	stream, err := eventsourcedpb.NewEventSourcedClient(e.o.n.uf).Handle(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("open stream: %w", err)
	}
	e.stream, e.cancel, e.counter = stream, cancel, 0
	init := &eventsourcedpb.EventSourcedInit{ServiceName: e.svc.Name, EntityId: e.key.entityID}
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
	e.lastSeq = img.LastSequence
	return nil
}

// handle runs one command. A non-nil error means the stream is unusable and the entity must be
// discarded; the request has been answered either way.
func (e *entity) handle(r *request) error {
	if e.stream == nil {
		if err := e.activate(); err != nil {
			r.finish(result{err: fmt.Errorf("%w: activate %s/%s: %v", ErrUnavailable, e.key.service, e.key.entityID, err)})
			return err
		}
	}
	e.counter++
	id := int64(e.counter)
	cmd := &cloudstatepb.Command{
		EntityId: e.key.entityID,
		Id:       id,
		Name:     r.method.Name,
		Payload:  &anypb.Any{TypeUrl: TypeURL(r.method.Input), Value: r.payload},
		Metadata: r.md,
	}
	if err := e.stream.Send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{Command: cmd}}); err != nil {
		r.finish(result{err: fmt.Errorf("%w: user function: %v", ErrUnavailable, err)})
		return err
	}
	out, err := e.recv()
	if err != nil {
		r.finish(result{err: fmt.Errorf("%w: user function: %v", ErrUnavailable, err)})
		return err
	}
	switch m := out.Message.(type) {
	case *eventsourcedpb.EventSourcedStreamOut_Failure:
		// A stream-level failure crashes the entity (PROTOCOL.md "Failures").
		r.finish(result{err: &CommandFailure{Description: m.Failure.GetDescription()}})
		return fmt.Errorf("%w: %s", errCrashed, m.Failure.GetDescription())
	case *eventsourcedpb.EventSourcedStreamOut_Reply:
		return e.reply(r, id, m.Reply)
	default:
		r.finish(result{err: fmt.Errorf("%w: user function sent an empty message", ErrUnavailable)})
		return fmt.Errorf("%w: empty EventSourcedStreamOut", errCrashed)
	}
}

// recv reads the user function's answer, crashing the stream if it takes longer than the
// command timeout.
func (e *entity) recv() (*eventsourcedpb.EventSourcedStreamOut, error) {
	t := time.AfterFunc(e.o.n.commandTimeout, e.cancel)
	defer t.Stop()
	return e.stream.Recv()
}

func (e *entity) reply(r *request, id int64, rep *eventsourcedpb.EventSourcedReply) error {
	if rep.GetCommandId() != id {
		err := fmt.Errorf("%w: reply for command %d while %d is in flight", errCrashed, rep.GetCommandId(), id)
		r.finish(result{err: fmt.Errorf("%w: user function protocol error", ErrUnavailable)})
		return err
	}
	if f := rep.GetClientAction().GetFailure(); f != nil {
		// A failed command's events and side effects are dropped.
		r.finish(result{err: &CommandFailure{Description: f.GetDescription(), Restart: f.GetRestart()}})
		if f.GetRestart() {
			// Close and reopen: the next command sees init and the persisted events only.
			e.close()
		}
		return nil
	}
	if rep.GetSnapshot() != nil && len(rep.GetEvents()) == 0 {
		r.finish(result{err: fmt.Errorf("%w: user function sent a snapshot without events", ErrUnavailable)})
		return fmt.Errorf("%w: snapshot without events", errCrashed)
	}
	recs, seq := e.records(r, rep)
	if err := e.o.persist(r.ctx, recs); err != nil {
		// Not durable (or unknown): the user function's state has moved ahead of the log, so the
		// stream is restarted from durable state.
		r.finish(result{err: persistErr(err)})
		return fmt.Errorf("persist: %w", err)
	}
	e.lastSeq = seq
	e.o.n.complete(r, rep.GetClientAction(), rep.GetSideEffects())
	return nil
}

// records builds the journal (and snapshot) records of a reply: key = entity id, value = the
// event's bytes, headers sequence/type/command id.
func (e *entity) records(r *request, rep *eventsourcedpb.EventSourcedReply) ([]broker.Record, int64) {
	seq := e.lastSeq
	events := rep.GetEvents()
	if len(events) == 0 {
		return nil, seq
	}
	cfg := &e.o.n.cfg.Broker
	pid := e.svc.PersistenceID
	cmdID := e.o.n.commandID(e.o.p)
	recs := make([]broker.Record, 0, len(events)+1)
	for _, ev := range events {
		seq++
		recs = append(recs, broker.Record{
			Topic:     cfg.EventsTopic(pid),
			Partition: e.o.p,
			Key:       []byte(e.key.entityID),
			Value:     ev.GetValue(),
			Headers: []broker.Header{
				{Key: kstatev1.HeaderSequence, Value: []byte(strconv.FormatInt(seq, 10))},
				{Key: kstatev1.HeaderType, Value: []byte(ev.GetTypeUrl())},
				{Key: kstatev1.HeaderCommandID, Value: []byte(cmdID)},
				{Key: kstatev1.HeaderEntityType, Value: []byte(e.svc.Name)},
			},
		})
	}
	if snap := rep.GetSnapshot(); snap != nil {
		v, err := marshal(&kstatev1.SnapshotRecord{Sequence: seq, Snapshot: snap, JournalOffset: -1})
		if err == nil {
			recs = append(recs, broker.Record{
				Topic:     cfg.SnapshotsTopic(pid),
				Partition: e.o.p,
				Key:       []byte(e.key.entityID),
				Value:     v,
				Headers:   []broker.Header{{Key: kstatev1.HeaderSequence, Value: []byte(strconv.FormatInt(seq, 10))}},
			})
		}
	}
	return recs, seq
}

// persistErr turns a commit failure into what the caller sees: the command's outcome is not
// known to have committed, so the client is told to retry (UNAVAILABLE).
func persistErr(err error) error {
	if errors.Is(err, ErrNotOwner) {
		return err
	}
	return fmt.Errorf("%w: commit: %v", ErrUnavailable, err)
}
