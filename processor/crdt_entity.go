package processor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
)

// crdtOut is one message from the user function (or the error that ended its stream).
type crdtOut struct {
	m   *crdtpb.CrdtStreamOut
	err error
}

// crdtSession is the state of a CRDT entity's run loop: its stream, its calls in flight and the
// state the user function believes the CRDT has (ufView), from which the change a remote delta
// makes is computed.
type crdtSession struct {
	e        *crdtEntity
	ctx      context.Context
	stream   crdtStream
	outs     chan crdtOut
	inflight map[int64]*crdtCall
	nextID   int64
	ufView   crdtlog.CRDT
	pubq     chan crdtlog.CRDT // LOCAL writes' deltas (nil: a delete), published in order
	results  chan streamResult
}

// streamResult is a forward's reply for a streamed call, computed off the run loop.
type streamResult struct {
	c   *crdtCall
	res result
}

// errCrdtDeleted ends the calls of a CRDT entity that was deleted.
var errCrdtDeleted = fmt.Errorf("%w: the CRDT entity was deleted", catalog.ErrUnavailable)

func (e *crdtEntity) run() {
	defer close(e.done)
	ctx, cancel := context.WithCancel(e.h.n.ctx)
	s := &crdtSession{e: e, ctx: ctx, outs: make(chan crdtOut, 16), inflight: map[int64]*crdtCall{},
		pubq: make(chan crdtlog.CRDT, 64), results: make(chan streamResult, 16)}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for d := range s.pubq {
			pctx, pcancel := context.WithTimeout(context.WithoutCancel(e.h.n.ctx), 30*time.Second)
			if err := e.h.publish(pctx, e.p, e.ref, e.svc.Name, d); err != nil {
				e.log.Warn("a LOCAL CRDT change could not be replicated; it stays on this node until the entity restarts", "error", err)
			}
			pcancel()
		}
	}()
	err := s.loop()
	s.failAll(err)
	if s.stream != nil {
		_ = s.stream.CloseSend()
	}
	cancel()
	close(s.pubq)
	<-pubDone
	e.rep.mu.Lock()
	if e.rep.inst == e {
		e.rep.inst = nil
	}
	e.rep.mu.Unlock()
	e.h.release(e.ref, e.rep)
}

// loop runs until the entity passivates, fails or the node stops; the error ends the calls still
// in flight.
func (s *crdtSession) loop() error {
	e := s.e
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	armIdle := func() {
		if len(s.inflight) == 0 && e.svc.Passivation > 0 {
			idle.Reset(e.svc.Passivation)
		}
	}
	for {
		select {
		case c := <-e.calls:
			idle.Stop()
			if err := s.command(c); err != nil {
				return err
			}
		case c := <-e.cancels:
			if s.inflight[c.id] == c && c.stream && !c.cancelled {
				c.cancelled = true
				if err := s.send(&crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_StreamCancelled{
					StreamCancelled: &cloudstatepb.StreamCancelled{EntityId: e.ref.id, Id: c.id}}}); err != nil {
					return err
				}
			}
		case <-e.changed:
			if s.stream == nil {
				continue
			}
			deleted, err := s.pushChange()
			if err != nil {
				return err
			}
			if deleted {
				return errCrdtDeleted
			}
		case o := <-s.outs:
			if o.err != nil {
				return fmt.Errorf("%w: user function stream of CRDT %s/%s: %v", catalog.ErrUnavailable, e.svc.Name, e.ref.id, o.err)
			}
			done, err := s.handle(o.m)
			if err != nil {
				return err
			}
			if done {
				return errCrdtDeleted
			}
			armIdle()
		case sr := <-s.results:
			s.deliver(sr.c, sr.res)
		case <-idle.C:
			if len(s.inflight) == 0 {
				return nil // passivated
			}
		case <-s.ctx.Done():
			return fmt.Errorf("%w: the node is stopping", catalog.ErrUnavailable)
		}
	}
}

// open starts the user function's stream and sends init with the replica's state.
func (s *crdtSession) open(first *request) error {
	e := s.e
	n := e.h.n
	wait := n.commandTimeout
	if dl, ok := first.ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	octx, ocancel := context.WithTimeout(s.ctx, wait)
	defer ocancel()
	stream, err := crdtpb.NewCrdtClient(n.uf).Handle(s.ctx, grpc.WaitForReady(true))
	if err == nil && octx.Err() != nil {
		err = octx.Err()
	}
	if err != nil {
		return fmt.Errorf("%w: open CRDT stream: %v", catalog.ErrUnavailable, err)
	}
	s.stream = stream
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			m, err := stream.Recv()
			select {
			case s.outs <- crdtOut{m: m, err: err}:
			case <-s.ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	init := &crdtpb.CrdtInit{ServiceName: e.svc.Name, EntityId: e.ref.id}
	e.rep.mu.Lock()
	if v, ok := e.rep.live.(*crdtlog.Vote); ok && !e.rep.deleted && !slices.Contains(v.Voters(), n.cfg.NodeID) {
		// A node hosting a Vote entity is one of its voters (the user function counts itself):
		// it casts false until its user function votes.
		if d, err := v.Cast(n.cfg.NodeID, false); err == nil && d != nil {
			select {
			case s.pubq <- d:
			default:
				s.e.log.Warn("the publisher is full; this node's initial vote is replicated with its next change")
			}
		}
	}
	if e.rep.live != nil && !e.rep.deleted {
		init.Delta = e.rep.live.InitDelta(n.cfg.NodeID)
		s.ufView = e.rep.live.Clone()
	}
	e.rep.mu.Unlock()
	return s.send(&crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Init{Init: init}})
}

func (s *crdtSession) send(m *crdtpb.CrdtStreamIn) error {
	if err := s.stream.Send(m); err != nil {
		return fmt.Errorf("%w: send to the user function: %v", catalog.ErrUnavailable, err)
	}
	return nil
}

// command sends a client call to the user function.
func (s *crdtSession) command(c *crdtCall) error {
	if err := c.r.ctx.Err(); err != nil {
		c.r.finish(result{err: fmt.Errorf("%w: the command did not run", err)})
		return nil
	}
	if s.stream == nil {
		if err := s.open(c.r); err != nil {
			c.r.finish(result{err: err})
			return err
		}
	}
	s.nextID++
	c.id = s.nextID
	s.inflight[c.id] = c
	return s.send(&crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Command{Command: &cloudstatepb.Command{
		EntityId: s.e.ref.id,
		Id:       c.id,
		Name:     c.r.method.Name,
		Payload:  &anypb.Any{TypeUrl: catalog.TypeURL(c.r.method.Input), Value: c.r.payload},
		Streamed: c.stream,
		Metadata: c.r.md,
	}}})
}

// pushChange sends the user function the change remote deltas made to the replica, or the delete.
func (s *crdtSession) pushChange() (deleted bool, err error) {
	e := s.e
	e.rep.mu.Lock()
	if e.rep.deleted {
		e.rep.mu.Unlock()
		return true, s.send(&crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delete{Delete: &crdtpb.CrdtDelete{}}})
	}
	if e.rep.live == nil {
		e.rep.mu.Unlock()
		return false, nil
	}
	var before crdtlog.CRDT = s.ufView
	if before == nil {
		before = crdtlog.New(e.rep.live.Kind())
	}
	d, err := crdtlog.ChangeDelta(before, e.rep.live, e.h.n.cfg.NodeID)
	s.ufView = e.rep.live.Clone()
	e.rep.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("%w: CRDT %s/%s: %v", catalog.ErrUnavailable, e.svc.Name, e.ref.id, err)
	}
	if d == nil {
		return false, nil
	}
	return false, s.send(&crdtpb.CrdtStreamIn{Message: &crdtpb.CrdtStreamIn_Delta{Delta: d}})
}

// handle takes one message of the user function; done reports that the entity was deleted.
func (s *crdtSession) handle(m *crdtpb.CrdtStreamOut) (done bool, err error) {
	e := s.e
	switch msg := m.GetMessage().(type) {
	case *crdtpb.CrdtStreamOut_Reply:
		rep := msg.Reply
		c := s.inflight[rep.GetCommandId()]
		if c == nil {
			return false, s.protocolError("reply for command %d, which is not in flight", rep.GetCommandId())
		}
		ca := rep.GetClientAction()
		if f := ca.GetFailure(); f != nil {
			// A failed command changes nothing.
			delete(s.inflight, c.id)
			c.r.finish(result{err: &catalog.CommandFailure{Description: f.GetDescription()}})
			return false, nil
		}
		deleted, err := s.stateAction(rep.GetStateAction())
		if err != nil {
			delete(s.inflight, c.id)
			c.r.finish(result{err: status.Errorf(codes.Internal, "user function protocol error: %v", err)})
			return false, err
		}
		if c.stream && rep.GetStreamed() && !deleted {
			// The call stays open; the reply, if any, is its first message.
			s.streamAction(c, ca, rep.GetSideEffects())
			return false, nil
		}
		delete(s.inflight, c.id)
		e.h.n.complete(c.r, ca, rep.GetSideEffects(), "")
		return deleted, nil
	case *crdtpb.CrdtStreamOut_StreamedMessage:
		sm := msg.StreamedMessage
		c := s.inflight[sm.GetCommandId()]
		if c == nil || !c.stream {
			return false, s.protocolError("streamed message for command %d, which has no open stream", sm.GetCommandId())
		}
		if f := sm.GetClientAction().GetFailure(); f != nil {
			s.endStream(c, &catalog.CommandFailure{Description: f.GetDescription()})
			return false, nil
		}
		s.streamAction(c, sm.GetClientAction(), sm.GetSideEffects())
		if sm.GetEndStream() {
			s.endStream(c, nil)
		}
		return false, nil
	case *crdtpb.CrdtStreamOut_StreamCancelledResponse:
		cr := msg.StreamCancelledResponse
		c := s.inflight[cr.GetCommandId()]
		if c == nil || !c.cancelled {
			return false, s.protocolError("stream-cancelled response for command %d, which was not cancelled", cr.GetCommandId())
		}
		deleted, err := s.stateAction(cr.GetStateAction())
		if err != nil {
			return false, err
		}
		s.endStream(c, nil)
		if len(cr.GetSideEffects()) > 0 {
			e.h.n.sideEffectsInBackground(cr.GetSideEffects(), c.r.dedupBase())
		}
		return deleted, nil
	case *crdtpb.CrdtStreamOut_Failure:
		desc := msg.Failure.GetDescription()
		if c := s.inflight[msg.Failure.GetCommandId()]; c != nil {
			delete(s.inflight, c.id)
			if c.stream {
				s.endStream(c, &catalog.CommandFailure{Description: desc})
			} else {
				c.r.finish(result{err: &catalog.CommandFailure{Description: desc}})
			}
		}
		return false, fmt.Errorf("%w: %s", errCrashed, desc)
	}
	return false, s.protocolError("user function sent an empty CrdtStreamOut")
}

// protocolError reports a user function that broke the protocol: its entity stream is restarted.
func (s *crdtSession) protocolError(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.e.log.Warn("user function protocol error; restarting the CRDT entity", "error", msg)
	return status.Errorf(codes.Internal, "user function protocol error: %s", msg)
}

// stateAction applies a command's state action to the replica and publishes it — at once for
// LOCAL, and durably before it returns for MAJORITY and ALL (every node follows the delta topic,
// so a write durable in Kafka reaches every replica). deleted reports a delete.
func (s *crdtSession) stateAction(sa *crdtpb.CrdtStateAction) (deleted bool, err error) {
	if sa == nil {
		return false, nil
	}
	e := s.e
	self := e.h.n.cfg.NodeID
	now := time.Now().UnixMilli()
	var delta crdtlog.CRDT // nil with deleted: a delete
	e.rep.mu.Lock()
	switch a := sa.GetAction().(type) {
	case *crdtpb.CrdtStateAction_Update:
		op := a.Update
		if e.rep.live == nil || e.rep.deleted {
			c, err := crdtlog.NewFromOp(op)
			if err != nil {
				e.rep.mu.Unlock()
				return false, err
			}
			e.rep.live, e.rep.deleted = c, false
		}
		d, err := e.rep.live.Apply(self, op, now)
		if err != nil {
			e.rep.mu.Unlock()
			return false, err
		}
		base := s.ufView
		if base == nil {
			base = crdtlog.New(e.rep.live.Kind())
		}
		if s.ufView, err = crdtlog.Expected(base, self, op, now); err != nil {
			s.ufView = e.rep.live.Clone()
		}
		if d == nil {
			e.rep.mu.Unlock()
			return false, nil
		}
		delta = d
	case *crdtpb.CrdtStateAction_Delete:
		e.rep.live, e.rep.deleted = nil, true
		s.ufView = nil
		deleted = true
	default:
		e.rep.mu.Unlock()
		return false, fmt.Errorf("an empty CrdtStateAction")
	}
	e.rep.mu.Unlock()
	if sa.GetWriteConsistency() == crdtpb.CrdtWriteConsistency_LOCAL {
		select {
		case s.pubq <- delta:
			return deleted, nil
		default: // the publisher is behind: publish this one in line
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, e.h.n.commandTimeout)
	defer cancel()
	if err := e.h.publish(ctx, e.p, e.ref, e.svc.Name, delta); err != nil {
		return deleted, fmt.Errorf("%w: replicate the CRDT change: %v", catalog.ErrOutcomeUnknown, err)
	}
	return deleted, nil
}

// streamAction runs a streamed message's side effects and sends its reply (or its forward's) on
// the call's stream.
func (s *crdtSession) streamAction(c *crdtCall, ca *cloudstatepb.ClientAction, effects []*cloudstatepb.SideEffect) {
	n := s.e.h.n
	if len(effects) > 0 {
		n.sideEffectsInBackground(effects, c.r.dedupBase())
	}
	switch {
	case ca.GetForward() != nil:
		f := ca.GetForward()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			res := n.forward(c.r.ctx, f, forwardKey(c.r.dedupBase()+"/"+fmt.Sprint(c.id)))
			select {
			case s.results <- streamResult{c: c, res: res}:
			case <-s.ctx.Done():
			}
		}()
	case ca.GetReply() != nil:
		s.deliver(c, n.replyResult(c.r.method, ca))
	}
}

// deliver sends one result on a streamed call: a reply message, or the error that ends it.
func (s *crdtSession) deliver(c *crdtCall, res result) {
	if c.closed {
		return
	}
	if res.err != nil {
		s.endStream(c, res.err)
		return
	}
	select {
	case c.msgs <- res.payload:
	default:
		s.endStream(c, status.Errorf(codes.ResourceExhausted, "the client reads the stream of %s too slowly", c.r.method.FullName))
	}
}

// endStream ends a streamed call with err (nil: OK).
func (s *crdtSession) endStream(c *crdtCall, err error) {
	delete(s.inflight, c.id)
	if c.closed {
		return
	}
	c.closed, c.end = true, err
	close(c.msgs)
}

// failAll ends every call in flight with err.
func (s *crdtSession) failAll(err error) {
	if err == nil {
		err = fmt.Errorf("%w: the CRDT entity passivated", catalog.ErrUnavailable)
	}
	for _, c := range s.inflight {
		if c.stream {
			s.endStream(c, err)
		} else {
			c.r.finish(result{err: err})
		}
	}
	s.inflight = nil
}
