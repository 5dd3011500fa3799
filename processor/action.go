package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/frontdoor"
	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// Actions are stateless: they run on the node the request reaches, over ActionProtocol, in the
// four gRPC shapes. Their side effects run even when the response is a failure (PROTOCOL.md).

func (n *Node) actionClient() actionpb.ActionProtocolClient {
	return actionpb.NewActionProtocolClient(n.uf)
}

// unaryAction runs ActionProtocol.handleUnary and turns its response into the caller's result.
func (n *Node) unaryAction(ctx context.Context, m *catalog.Method, payload []byte, md *cloudstatepb.Metadata, key string) result {
	start := time.Now()
	resp, err := n.actionClient().HandleUnary(ctx, &actionpb.ActionCommand{
		ServiceName: m.Service.Name,
		Name:        m.Name,
		Payload:     &anypb.Any{TypeUrl: catalog.TypeURL(m.Input), Value: payload},
		Metadata:    n.tr.Metadata(ctx, md),
	})
	if err != nil {
		n.actionCallError(m.Service.Name, err)
		res := result{err: userFunctionErr(err)}
		n.observeCommand(m, res.err, start)
		return res
	}
	res := n.actionResult(ctx, m, resp, invocationBase(key))
	n.observeCommand(m, res.err, start)
	return res
}

// actionResult runs an ActionResponse's side effects (also after a failure), then yields its
// reply, the forward target's reply, its failure, or ErrNoReply. Forwards and side effects carry
// keys derived from base (see invocationBase): actions are stateless, so a client's key passes
// through to the entities they call instead of being remembered by the action.
func (n *Node) actionResult(ctx context.Context, m *catalog.Method, resp *actionpb.ActionResponse, base string) result {
	n.sideEffects(ctx, resp.GetSideEffects(), base)
	switch r := resp.GetResponse().(type) {
	case *actionpb.ActionResponse_Failure:
		return result{err: &catalog.CommandFailure{Description: r.Failure.GetDescription()}}
	case *actionpb.ActionResponse_Forward:
		return n.forward(ctx, r.Forward, forwardKey(base))
	case *actionpb.ActionResponse_Reply:
		return n.replyResult(m, &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: r.Reply}})
	default:
		return result{err: catalog.ErrNoReply}
	}
}

// streamAction serves the three streamed shapes of an action method.
func (n *Node) streamAction(m *catalog.Method, s frontdoor.CommandStream) error {
	ctx := s.Context()
	first := &actionpb.ActionCommand{ServiceName: m.Service.Name, Name: m.Name, Metadata: s.Metadata()}
	toAny := func(p []byte) *anypb.Any { return &anypb.Any{TypeUrl: catalog.TypeURL(m.Input), Value: p} }
	key, err := idempotencyKey(s.Metadata())
	if err != nil {
		return err
	}
	base, responses := invocationBase(key), 0
	// emit sends one response to the client: a reply or a forward's reply; a failure ends the call.
	// The forwards and side effects of each response derive their keys from its position.
	emit := func(resp *actionpb.ActionResponse) error {
		responses++
		res := n.actionResult(ctx, m, resp, derivedKey(base, "response/"+strconv.Itoa(responses)))
		switch {
		case errors.Is(res.err, catalog.ErrNoReply):
			return nil // no stream element
		case res.err != nil:
			return res.err
		}
		if res.md != nil {
			_ = s.SetHeader(res.md)
		}
		return s.Send(res.payload)
	}
	switch {
	case m.ClientStreaming && !m.ServerStreaming:
		st, err := n.actionClient().HandleStreamedIn(ctx)
		if err != nil {
			return userFunctionErr(err)
		}
		// The first message names the call and carries no payload. A Send that fails with io.EOF
		// means the user function already ended the call (it may answer before reading every
		// message): its answer, or its status, comes from CloseAndRecv.
		err = st.Send(first)
		for err == nil {
			var p []byte
			if p, err = s.Recv(); err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			err = st.Send(&actionpb.ActionCommand{Payload: toAny(p)})
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return userFunctionErr(err)
		}
		resp, err := st.CloseAndRecv()
		if err != nil {
			return userFunctionErr(err)
		}
		res := n.actionResult(ctx, m, resp, base)
		if errors.Is(res.err, catalog.ErrNoReply) {
			return catalog.ErrNoReply
		}
		if res.err != nil {
			return res.err
		}
		return s.Send(res.payload)

	case !m.ClientStreaming && m.ServerStreaming:
		p, err := s.Recv()
		if err != nil {
			return err
		}
		first.Payload = toAny(p)
		st, err := n.actionClient().HandleStreamedOut(ctx, first)
		if err != nil {
			return userFunctionErr(err)
		}
		for {
			resp, err := st.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return userFunctionErr(err)
			}
			if err := emit(resp); err != nil {
				return err
			}
		}

	default: // duplex
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := n.actionClient().HandleStreamed(ctx)
		if err != nil {
			return userFunctionErr(err)
		}
		if err := st.Send(first); err != nil {
			return userFunctionErr(err)
		}
		pumpErr := make(chan error, 1)
		go func() { // owned by this call; ends with the client's stream or ctx
			for {
				p, err := s.Recv()
				if err == io.EOF {
					pumpErr <- st.CloseSend()
					return
				}
				if err != nil {
					pumpErr <- err
					cancel()
					return
				}
				if err := st.Send(&actionpb.ActionCommand{Payload: toAny(p)}); err != nil {
					pumpErr <- userFunctionErr(err)
					return
				}
			}
		}()
		for {
			resp, err := st.Recv()
			if err == io.EOF {
				return <-pumpErr
			}
			if err != nil {
				select {
				case perr := <-pumpErr:
					if perr != nil {
						return perr // the client went away first
					}
				default:
				}
				return userFunctionErr(err)
			}
			if err := emit(resp); err != nil {
				return err
			}
		}
	}
}

// userFunctionErr reports a failed call to the user function as UNAVAILABLE, keeping the
// caller's own cancellation and deadline as they are.
func userFunctionErr(err error) error {
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded:
		return err
	}
	return fmt.Errorf("%w: user function: %v", catalog.ErrUnavailable, err)
}
