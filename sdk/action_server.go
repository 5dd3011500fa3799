package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// The four methods below are the user-function side of cloudstate.action.ActionProtocol with the
// transport taken out, as EventSourcedSession and ValueSession are for entities. The gRPC server
// calls them for every action call; sdktest calls them in memory; an embedding runtime may call
// them directly. They are safe for concurrent use.
//
// Problems the proxy or client can cause (an unknown service or method, a method called in the
// wrong shape, a payload of the wrong type, a streamed call without its first message) are
// answered in band with a failure response, as Cloudstate's language supports do. The error
// results are only for a broken call: recv or send failed with something other than io.EOF, or
// ctx was done when the handler failed (the client went away, or the server is shutting down).

// HandleActionUnary handles a handleUnary call: cmd names the service and method and carries
// the input. The response has a reply, a forward, a failure or no response, plus side effects.
func (s *Server) HandleActionUnary(ctx context.Context, cmd *actionpb.ActionCommand) (*actionpb.ActionResponse, error) {
	c, fail := s.startAction(ctx, cmd, shapeUnary)
	if fail != nil {
		return fail, nil
	}
	in, err := decodeInput(cmd.GetName(), cmd.GetPayload(), c.method.in)
	if err != nil {
		c.log.Warn("bad action payload", "error", err)
		return actionFailure(err.Error()), nil
	}
	out, err := c.run(in, nil)
	return c.finishSingle(out, err, nil)
}

// HandleActionStreamedIn handles a handleStreamedIn call. recv returns the call's messages and
// io.EOF after the last one. The first message names the service and method and carries the
// call's metadata, but no payload (Cloudstate protocol 0.2); each later message carries one
// input. A payload in the first message, which the protocol does not send, is taken as the first
// input rather than lost. The single response is as for HandleActionUnary.
func (s *Server) HandleActionStreamedIn(ctx context.Context, recv func() (*actionpb.ActionCommand, error)) (*actionpb.ActionResponse, error) {
	header, err := recv()
	switch {
	case errors.Is(err, io.EOF):
		return actionFailure(noHeader), nil
	case err != nil:
		return nil, err
	}
	c, fail := s.startAction(ctx, header, shapeStreamedIn)
	if fail != nil {
		return fail, nil
	}
	input := c.input(header, recv)
	out, err := c.run(nil, input)
	return c.finishSingle(out, err, input)
}

// HandleActionStreamedOut handles a handleStreamedOut call: cmd names the service and method and
// carries the input, and send sends each element of the response stream, an ActionResponse as
// for HandleActionUnary. It returns when the handler has returned and the last element is sent.
func (s *Server) HandleActionStreamedOut(ctx context.Context, cmd *actionpb.ActionCommand, send func(*actionpb.ActionResponse) error) error {
	c, fail := s.startAction(ctx, cmd, shapeStreamedOut)
	if fail != nil {
		return send(fail)
	}
	in, err := decodeInput(cmd.GetName(), cmd.GetPayload(), c.method.in)
	if err != nil {
		c.log.Warn("bad action payload", "error", err)
		return send(actionFailure(err.Error()))
	}
	c.transport = send
	_, err = c.run(in, nil)
	return c.finishStream(err, nil)
}

// HandleActionStreamed handles a handleStreamed (duplex) call: recv as for
// HandleActionStreamedIn, send as for HandleActionStreamedOut. recv and send may be called
// concurrently with each other, never each with itself.
func (s *Server) HandleActionStreamed(ctx context.Context, recv func() (*actionpb.ActionCommand, error), send func(*actionpb.ActionResponse) error) error {
	header, err := recv()
	switch {
	case errors.Is(err, io.EOF):
		return send(actionFailure(noHeader))
	case err != nil:
		return err
	}
	c, fail := s.startAction(ctx, header, shapeStreamed)
	if fail != nil {
		return send(fail)
	}
	c.transport = send
	input := c.input(header, recv)
	_, err = c.run(nil, input)
	return c.finishStream(err, input)
}

const noHeader = "cloudstate protocol violation: the stream ended before its first message, which names the service and command"

// actionFailure returns a response that only carries a failure.
func actionFailure(description string) *actionpb.ActionResponse {
	return &actionpb.ActionResponse{Response: &actionpb.ActionResponse_Failure{Failure: &cloudstatepb.Failure{Description: description}}}
}

// startAction finds the handler a call is for. When there is none, or it has another shape, it
// returns the failure response to answer with.
func (s *Server) startAction(ctx context.Context, header *actionpb.ActionCommand, shape actionShape) (*actionCore, *actionpb.ActionResponse) {
	log := s.log.With("service", header.GetServiceName(), "command", header.GetName())
	m, ok := s.lookup(header.GetServiceName()).(*actionModel)
	if !ok {
		log.Warn("action call for an unknown service")
		return nil, actionFailure(fmt.Sprintf("unknown action service %q (registered: %s)",
			header.GetServiceName(), strings.Join(s.serviceNames(EntityTypeAction), ", ")))
	}
	h := m.methods[protoreflect.Name(header.GetName())]
	if h == nil {
		log.Warn("unknown action command")
		return nil, actionFailure(fmt.Sprintf("unknown command %q for action %s (its methods are %s)",
			header.GetName(), m.desc.FullName(), methodNames(m.desc)))
	}
	if h.shape != shape {
		log.Warn("action method called in the wrong shape", "shape", shape, "want", h.shape)
		return nil, actionFailure(fmt.Sprintf("command %s of %s is %s, but the proxy called it as %s",
			header.GetName(), m.desc.FullName(), h.shape, shape))
	}
	return &actionCore{ctx: ctx, log: log, method: h, header: header}, nil
}

// input returns the input stream of a streamed-in or duplex call whose first message is header.
func (c *actionCore) input(header *actionpb.ActionCommand, recv func() (*actionpb.ActionCommand, error)) *actionInput {
	in := &actionInput{c: c, typ: c.method.in, recv: recv}
	if p := header.GetPayload(); p != nil && (p.GetTypeUrl() != "" || len(p.GetValue()) > 0) {
		in.first = p
	}
	return in
}

// run calls the handler, turning a panic into a failure with a generic description.
func (c *actionCore) run(in proto.Message, input *actionInput) (out proto.Message, err error) {
	if perr := guard(c.log, "action handler", func() { out, err = c.method.call(c, in, input) }); perr != nil {
		return nil, &CommandError{Description: fmt.Sprintf("unexpected failure in action %s; see the user function's log", c.header.GetName())}
	}
	return out, err
}

// finishSingle returns the response of a unary or streamed-in call once its handler returned out
// and herr.
func (c *actionCore) finishSingle(out proto.Message, herr error, input *actionInput) (*actionpb.ActionResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	if input != nil && input.brokenBy != nil {
		return nil, input.brokenBy
	}
	err := herr
	if err == nil {
		err = c.err
	}
	if err != nil {
		if cerr := c.ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return c.failure(err), nil
	}
	resp, err := c.build(out)
	if err != nil {
		return c.failure(err), nil
	}
	return resp, nil
}

// finishStream ends a streamed-out or duplex call once its handler returned herr: it sends a
// failure element for herr, or what is still pending (a failure, a forward, side effects), if
// anything.
func (c *actionCore) finishStream(herr error, input *actionInput) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	switch {
	case c.sendErr != nil:
		return c.sendErr
	case input != nil && input.brokenBy != nil:
		return input.brokenBy
	}
	if herr != nil || c.err != nil {
		if cerr := c.ctx.Err(); cerr != nil {
			return cerr
		}
	}
	if herr != nil {
		return c.transport(c.failure(herr))
	}
	if c.err == nil && c.forward == nil && len(c.effects) == 0 {
		return nil
	}
	return c.transport(c.next(nil))
}

// actionService implements cloudstate.action.ActionProtocol over gRPC.
type actionService struct {
	actionpb.UnimplementedActionProtocolServer
	s    *Server
	quit <-chan struct{} // closed when Serve shuts down; nil under RegisterGRPC
}

// callContext returns the context of one call: parent, also cancelled when Serve shuts down.
func (a *actionService) callContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	if a.quit != nil {
		// Owned by the call: it ends when the call's cancel runs, at the latest.
		go func() {
			select {
			case <-a.quit:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return ctx, cancel
}

// status maps a broken call's error to a gRPC status.
func (a *actionService) status(err error) error {
	if err == nil {
		return nil
	}
	select {
	case <-a.quit:
		return status.Error(codes.Unavailable, "user function is shutting down")
	default:
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.FromContextError(err).Err()
}

// HandleUnary serves a unary action call.
func (a *actionService) HandleUnary(ctx context.Context, cmd *actionpb.ActionCommand) (*actionpb.ActionResponse, error) {
	ctx, cancel := a.callContext(ctx)
	defer cancel()
	resp, err := a.s.HandleActionUnary(ctx, cmd)
	if err != nil {
		return nil, a.status(err)
	}
	return resp, nil
}

// HandleStreamedIn serves a streamed-in action call.
func (a *actionService) HandleStreamedIn(stream actionpb.ActionProtocol_HandleStreamedInServer) error {
	ctx, cancel := a.callContext(stream.Context())
	defer cancel()
	recv, stop := pumpRecv(ctx, stream.Recv)
	defer stop()
	resp, err := a.s.HandleActionStreamedIn(ctx, recv)
	if err != nil {
		return a.status(err)
	}
	return stream.SendAndClose(resp)
}

// HandleStreamedOut serves a streamed-out action call.
func (a *actionService) HandleStreamedOut(cmd *actionpb.ActionCommand, stream actionpb.ActionProtocol_HandleStreamedOutServer) error {
	ctx, cancel := a.callContext(stream.Context())
	defer cancel()
	return a.status(a.s.HandleActionStreamedOut(ctx, cmd, stream.Send))
}

// HandleStreamed serves a duplex action call.
func (a *actionService) HandleStreamed(stream actionpb.ActionProtocol_HandleStreamedServer) error {
	ctx, cancel := a.callContext(stream.Context())
	defer cancel()
	recv, stop := pumpRecv(ctx, stream.Recv)
	defer stop()
	return a.status(a.s.HandleActionStreamed(ctx, recv, stream.Send))
}

// pumpRecv receives from a stream in a goroutine, so that the returned recv also returns when ctx
// is done (with ctx's error). recv's first error is sticky. The goroutine belongs to the call: it
// ends when the stream's Recv fails, which happens at the latest when the call returns; stop
// lets it end without delivering.
func pumpRecv[T any](ctx context.Context, streamRecv func() (*T, error)) (recv func() (*T, error), stop func()) {
	msgs := make(chan recvResult[T])
	done := make(chan struct{})
	go func() {
		for {
			m, err := streamRecv()
			select {
			case msgs <- recvResult[T]{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var last error
	recv = func() (*T, error) {
		if last != nil {
			return nil, last
		}
		select {
		case r := <-msgs:
			last = r.err
			return r.msg, r.err
		case <-ctx.Done():
			last = ctx.Err()
			return nil, last
		}
	}
	return recv, func() { close(done) }
}
