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

// entity is one active entity of a partition: a goroutine (run), owned by the partition, that
// takes the entity's commands one at a time from in and hands each to the driver of its kind,
// which speaks the Cloudstate protocol on one stream (PROTOCOL.md "Per entity"). The partition
// closes in to passivate or stop it.
type entity struct {
	o     *owner
	key   entityKey
	svc   *Service
	log   hclog.Logger
	in    chan *request
	taken uint64
	drv   driver
}

// driver is the protocol of one entity kind. handle must answer r exactly once; a non-nil error
// means the stream is unusable and the entity is discarded (it reactivates from durable state).
type driver interface {
	handle(r *request) error
	close()
}

func (o *owner) newEntity(k entityKey, svc *Service) *entity {
	e := &entity{
		o:   o,
		key: k,
		svc: svc,
		log: o.log.With("service", k.service, "entity", k.entityID),
		in:  make(chan *request, o.n.cfg.EntityQueue),
	}
	switch svc.Kind {
	case Value:
		e.drv = &valueDriver{e: e}
	default:
		e.drv = &esDriver{e: e}
	}
	return e
}

// esDriver drives an event-sourced entity over EventSourced.handle.
type esDriver struct {
	e       *entity
	stream  esStream
	cancel  context.CancelFunc
	counter uint64 // command ids handed to the user function on the current stream
	lastSeq int64
}

// errCrashed marks a stream that failed: the entity is discarded and reactivated on its next
// command from durable state.
var errCrashed = errors.New("entity crashed")

func (e *entity) run() {
	defer e.drv.close()
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
			if err := e.drv.handle(r); err != nil {
				e.log.Warn("entity stream failed; it will be reactivated from durable state", "error", err)
				e.drv.close()
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

func (d *esDriver) close() {
	if d.stream != nil {
		_ = d.stream.CloseSend()
		d.cancel()
		d.stream = nil
	}
}

// activate opens the stream and sends init (with the snapshot) and the events after it, all read
// from Pebble (never from Kafka).
func (d *esDriver) activate() error {
	img, err := d.e.o.n.store.LoadEventSourced(d.e.o.p, d.e.svc.PersistenceID, d.e.key.entityID)
	if err != nil {
		return fmt.Errorf("load from store: %w", err)
	}
	ctx, cancel := context.WithCancel(d.e.o.ctx)
	var stream esStream
	if sdkSrv := d.e.o.n.sdkSrv; sdkSrv != nil {
		stream = &sessionStream[eventsourcedpb.EventSourcedStreamIn, eventsourcedpb.EventSourcedStreamOut]{s: sdkSrv.NewEventSourcedSession(ctx)}
	} else {
		s, err := eventsourcedpb.NewEventSourcedClient(d.e.o.n.uf).Handle(ctx)
		if err != nil {
			cancel()
			return fmt.Errorf("open stream: %w", err)
		}
		stream = s
	}
	d.stream, d.cancel, d.counter = stream, cancel, 0
	init := &eventsourcedpb.EventSourcedInit{ServiceName: d.e.svc.Name, EntityId: d.e.key.entityID}
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
	if d.stream == nil {
		if err := d.activate(); err != nil {
			r.finish(result{err: fmt.Errorf("%w: activate %s/%s: %v", ErrUnavailable, d.e.key.service, d.e.key.entityID, err)})
			return err
		}
	}
	d.counter++
	id := int64(d.counter)
	cmd := &cloudstatepb.Command{
		EntityId: d.e.key.entityID,
		Id:       id,
		Name:     r.method.Name,
		Payload:  &anypb.Any{TypeUrl: TypeURL(r.method.Input), Value: r.payload},
		Metadata: r.md,
	}
	if err := d.stream.Send(&eventsourcedpb.EventSourcedStreamIn{Message: &eventsourcedpb.EventSourcedStreamIn_Command{Command: cmd}}); err != nil {
		r.finish(result{err: fmt.Errorf("%w: user function: %v", ErrUnavailable, err)})
		return err
	}
	out, err := d.recv()
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
		return d.reply(r, id, m.Reply)
	default:
		r.finish(result{err: fmt.Errorf("%w: user function sent an empty message", ErrUnavailable)})
		return fmt.Errorf("%w: empty EventSourcedStreamOut", errCrashed)
	}
}

// recv reads the user function's answer, crashing the stream if it takes longer than the
// command timeout.
func (d *esDriver) recv() (*eventsourcedpb.EventSourcedStreamOut, error) {
	t := time.AfterFunc(d.e.o.n.commandTimeout, d.cancel)
	defer t.Stop()
	return d.stream.Recv()
}

func (d *esDriver) reply(r *request, id int64, rep *eventsourcedpb.EventSourcedReply) error {
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
			d.close()
		}
		return nil
	}
	if rep.GetSnapshot() != nil && len(rep.GetEvents()) == 0 {
		r.finish(result{err: fmt.Errorf("%w: user function sent a snapshot without events", ErrUnavailable)})
		return fmt.Errorf("%w: snapshot without events", errCrashed)
	}
	recs, seq := d.records(r, rep)
	if err := d.e.o.persist(recs); err != nil {
		// Not durable (or unknown): the user function's state has moved ahead of the log, so the
		// stream is restarted from durable state.
		r.finish(result{err: persistErr(err)})
		return fmt.Errorf("persist: %w", err)
	}
	d.lastSeq = seq
	d.e.o.n.complete(r, rep.GetClientAction(), rep.GetSideEffects())
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
	cmdID := d.e.o.n.commandID(d.e.o.p)
	recs := make([]broker.Record, 0, len(events)+1)
	for _, ev := range events {
		seq++
		recs = append(recs, broker.Record{
			Topic:     cfg.EventsTopic(pid),
			Partition: d.e.o.p,
			Key:       []byte(d.e.key.entityID),
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
				Key:       []byte(d.e.key.entityID),
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
