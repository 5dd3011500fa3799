package processor

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// valueDriver drives a value (key-value) entity over ValueEntity.handle: init always carries
// state (its value unset when there is none); an update or delete goes to the compacted .state
// topic in the partition's transaction, and the reply leaves after the commit.
type valueDriver struct {
	e *entity
	entityConn[valueentitypb.ValueEntityStreamIn, valueentitypb.ValueEntityStreamOut]
}

// activate opens the stream with the state stored in Pebble.
func (d *valueDriver) activate(r *request) error {
	e := d.e
	stored, found, err := e.o.n.store.LoadValue(e.o.p, e.svc.PersistenceID, e.key.ID)
	if err != nil {
		return fmt.Errorf("load from store: %w", err)
	}
	var inproc func(context.Context) stepper[valueentitypb.ValueEntityStreamIn, valueentitypb.ValueEntityStreamOut]
	if sdkSrv := e.o.n.sdkSrv; sdkSrv != nil {
		inproc = func(ctx context.Context) stepper[valueentitypb.ValueEntityStreamIn, valueentitypb.ValueEntityStreamOut] {
			return sdkSrv.NewValueSession(ctx)
		}
	}
	stream, cancel, err := openStream(e, r, inproc, func(ctx context.Context, opts ...grpc.CallOption) (valueStream, error) {
		return valueentitypb.NewValueEntityClient(e.o.n.uf).Handle(ctx, opts...)
	})
	if err != nil {
		return err
	}
	d.open(stream, cancel)
	state := &valueentitypb.ValueEntityInitState{}
	if found {
		state.Value = stored.GetValue()
	}
	init := &valueentitypb.ValueEntityInit{ServiceName: e.svc.Name, EntityId: e.key.ID, State: state}
	if err := stream.Send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{Init: init}}); err != nil {
		return fmt.Errorf("send init: %w", err)
	}
	return nil
}

// handle runs one command; see esDriver.handle.
func (d *valueDriver) handle(r *request) error {
	out, id, err := d.send(d.e, r, d.activate, func(c *cloudstatepb.Command) *valueentitypb.ValueEntityStreamIn {
		return &valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{Command: c}}
	})
	if err != nil {
		return err
	}
	switch m := out.Message.(type) {
	case *valueentitypb.ValueEntityStreamOut_Failure:
		r.finish(result{err: &catalog.CommandFailure{Description: m.Failure.GetDescription()}})
		return fmt.Errorf("%w: %s", errCrashed, m.Failure.GetDescription())
	case *valueentitypb.ValueEntityStreamOut_Reply:
		return d.reply(r, id, m.Reply)
	default:
		return protocolError(r, "user function sent an empty ValueEntityStreamOut")
	}
}

func (d *valueDriver) reply(r *request, id int64, rep *valueentitypb.ValueEntityReply) error {
	e := d.e
	if rep.GetCommandId() != id {
		return protocolError(r, "reply for command %d while %d is in flight", rep.GetCommandId(), id)
	}
	if f := rep.GetClientAction().GetFailure(); f != nil {
		// A failure drops the state change and the side effects; only its outcome is
		// remembered when it carries an idempotency key.
		if err := e.rememberFailure(r, rep.GetClientAction()); err != nil {
			r.finish(result{err: err})
			return nil
		}
		r.finish(result{err: &catalog.CommandFailure{Description: f.GetDescription(), Restart: f.GetRestart()}})
		if f.GetRestart() {
			// Reopen at once with the durable state, as Cloudstate's proxy does.
			d.close()
			if err := d.activate(r); err != nil {
				return fmt.Errorf("%w: reopen after restart: %v", errCrashed, err)
			}
		}
		return nil
	}
	var recs []broker.Record
	if act := rep.GetStateAction(); act != nil {
		rec := broker.Record{
			Topic:     e.o.n.cfg.Broker.StateTopic(e.svc.PersistenceID),
			Partition: e.o.p,
			Key:       []byte(e.key.ID),
			Headers: []broker.Header{
				{Key: kstatev1.HeaderCommandID, Value: []byte(r.cmdID)},
				{Key: kstatev1.HeaderEntityType, Value: []byte(e.svc.Name)},
			},
		}
		switch a := act.GetAction().(type) {
		case *valueentitypb.ValueEntityAction_Update:
			v := a.Update.GetValue()
			if v == nil {
				return protocolError(r, "a value update without a value (use delete to remove the state)")
			}
			// A present but empty value is not a tombstone: keep the slice non-nil.
			rec.Value = append(make([]byte, 0, len(v.GetValue())), v.GetValue()...)
			rec.Headers = append(rec.Headers, broker.Header{Key: kstatev1.HeaderType, Value: []byte(v.GetTypeUrl())})
		case *valueentitypb.ValueEntityAction_Delete:
			rec.Value = nil // tombstone
		default:
			return protocolError(r, "an empty ValueEntityAction")
		}
		recs = append(recs, rec)
	}
	recs, err := e.remember(r, rep.GetClientAction(), recs)
	if err != nil {
		return protocolError(r, "its reply cannot be remembered for the idempotency key: %v", err)
	}
	if err := e.o.persist(r, recs); err != nil {
		r.finish(result{err: err})
		return fmt.Errorf("persist: %w", err)
	}
	e.o.n.complete(r, rep.GetClientAction(), rep.GetSideEffects(), "")
	return nil
}
