package processor

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// valueDriver drives a value (key-value) entity over ValueEntity.handle: init always carries
// state (its value unset when there is none); an update or delete goes to the compacted .state
// topic in the partition's transaction, and the reply leaves after the commit.
type valueDriver struct {
	e       *entity
	stream  valueStream
	cancel  context.CancelFunc
	counter uint64
}

func (d *valueDriver) close() {
	if d.stream != nil {
		_ = d.stream.CloseSend()
		d.cancel()
		d.stream = nil
	}
}

// activate opens the stream with the state stored in Pebble.
func (d *valueDriver) activate() error {
	e := d.e
	stored, found, err := e.o.n.store.LoadValue(e.o.p, e.svc.PersistenceID, e.key.entityID)
	if err != nil {
		return fmt.Errorf("load from store: %w", err)
	}
	ctx, cancel := context.WithCancel(e.o.ctx)
	var stream valueStream
	if sdkSrv := e.o.n.sdkSrv; sdkSrv != nil {
		stream = &sessionStream[valueentitypb.ValueEntityStreamIn, valueentitypb.ValueEntityStreamOut]{s: sdkSrv.NewValueSession(ctx)}
	} else {
		s, err := valueentitypb.NewValueEntityClient(e.o.n.uf).Handle(ctx)
		if err != nil {
			cancel()
			return fmt.Errorf("open stream: %w", err)
		}
		stream = s
	}
	d.stream, d.cancel, d.counter = stream, cancel, 0
	state := &valueentitypb.ValueEntityInitState{}
	if found {
		state.Value = stored.GetValue()
	}
	init := &valueentitypb.ValueEntityInit{ServiceName: e.svc.Name, EntityId: e.key.entityID, State: state}
	if err := stream.Send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{Init: init}}); err != nil {
		return fmt.Errorf("send init: %w", err)
	}
	return nil
}

func (d *valueDriver) handle(r *request) error {
	e := d.e
	if d.stream == nil {
		if err := d.activate(); err != nil {
			r.finish(result{err: fmt.Errorf("%w: activate %s/%s: %v", ErrUnavailable, e.key.service, e.key.entityID, err)})
			return err
		}
	}
	d.counter++
	id := int64(d.counter)
	cmd := &cloudstatepb.Command{
		EntityId: e.key.entityID,
		Id:       id,
		Name:     r.method.Name,
		Payload:  &anypb.Any{TypeUrl: TypeURL(r.method.Input), Value: r.payload},
		Metadata: r.md,
	}
	if err := d.stream.Send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{Command: cmd}}); err != nil {
		r.finish(result{err: fmt.Errorf("%w: user function: %v", ErrUnavailable, err)})
		return err
	}
	t := time.AfterFunc(e.o.n.commandTimeout, d.cancel)
	out, err := d.stream.Recv()
	t.Stop()
	if err != nil {
		r.finish(result{err: fmt.Errorf("%w: user function: %v", ErrUnavailable, err)})
		return err
	}
	switch m := out.Message.(type) {
	case *valueentitypb.ValueEntityStreamOut_Failure:
		r.finish(result{err: &CommandFailure{Description: m.Failure.GetDescription()}})
		return fmt.Errorf("%w: %s", errCrashed, m.Failure.GetDescription())
	case *valueentitypb.ValueEntityStreamOut_Reply:
		return d.reply(r, id, m.Reply)
	default:
		r.finish(result{err: fmt.Errorf("%w: user function sent an empty message", ErrUnavailable)})
		return fmt.Errorf("%w: empty ValueEntityStreamOut", errCrashed)
	}
}

func (d *valueDriver) reply(r *request, id int64, rep *valueentitypb.ValueEntityReply) error {
	e := d.e
	if rep.GetCommandId() != id {
		r.finish(result{err: fmt.Errorf("%w: user function protocol error", ErrUnavailable)})
		return fmt.Errorf("%w: reply for command %d while %d is in flight", errCrashed, rep.GetCommandId(), id)
	}
	if f := rep.GetClientAction().GetFailure(); f != nil {
		// A failure drops the state change and the side effects.
		r.finish(result{err: &CommandFailure{Description: f.GetDescription(), Restart: f.GetRestart()}})
		if f.GetRestart() {
			d.close()
		}
		return nil
	}
	var recs []broker.Record
	if act := rep.GetStateAction(); act != nil {
		rec := broker.Record{
			Topic:     e.o.n.cfg.Broker.StateTopic(e.svc.PersistenceID),
			Partition: e.o.p,
			Key:       []byte(e.key.entityID),
			Headers: []broker.Header{
				{Key: kstatev1.HeaderCommandID, Value: []byte(e.o.n.commandID(e.o.p))},
				{Key: kstatev1.HeaderEntityType, Value: []byte(e.svc.Name)},
			},
		}
		switch a := act.GetAction().(type) {
		case *valueentitypb.ValueEntityAction_Update:
			v := a.Update.GetValue()
			// A present but empty value is not a tombstone: keep the slice non-nil.
			rec.Value = append(make([]byte, 0, len(v.GetValue())), v.GetValue()...)
			rec.Headers = append(rec.Headers, broker.Header{Key: kstatev1.HeaderType, Value: []byte(v.GetTypeUrl())})
		case *valueentitypb.ValueEntityAction_Delete:
			rec.Value = nil // tombstone
		default:
			r.finish(result{err: fmt.Errorf("%w: user function sent an empty state action", ErrUnavailable)})
			return fmt.Errorf("%w: empty ValueEntityAction", errCrashed)
		}
		recs = append(recs, rec)
	}
	if err := e.o.persist(recs); err != nil {
		r.finish(result{err: persistErr(err)})
		return fmt.Errorf("persist: %w", err)
	}
	e.o.n.complete(r, rep.GetClientAction(), rep.GetSideEffects())
	return nil
}
