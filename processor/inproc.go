package processor

import (
	"context"
	"errors"
	"io"

	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
)

// In-process entities (WithEntities) skip the gRPC transport: an entity's "stream" is the Go
// SDK's session — the same protocol step function its gRPC handler runs — called directly. The
// messages exchanged are exactly those of the Cloudstate protocol; only the HTTP/2 stream, its
// buffers and its two goroutines per entity are gone.

// protoStream is the part of a Cloudstate bidi stream an entity driver uses.
type protoStream[I, O any] interface {
	Send(*I) error
	Recv() (*O, error)
	CloseSend() error
}

type (
	esStream    = protoStream[eventsourcedpb.EventSourcedStreamIn, eventsourcedpb.EventSourcedStreamOut]
	valueStream = protoStream[valueentitypb.ValueEntityStreamIn, valueentitypb.ValueEntityStreamOut]
)

// stepper is an SDK session: one input message in, at most one output message out; an error
// means the stream failed (the output then is the failure to report).
type stepper[I, O any] interface {
	StepContext(context.Context, *I) (*O, error)
}

// sessionStream adapts a stepper to protoStream. Send runs the step; Recv returns its output.
// Not safe for concurrent use; an entity driver uses it from its one goroutine.
type sessionStream[I, O any] struct {
	s      stepper[I, O]
	ctx    context.Context // the running command's (setContext); handlers see it
	out    *O
	failed bool
}

// setContext makes ctx — the command's, with the caller's deadline — what the next steps'
// handlers see as CommandContext.Context.
func (x *sessionStream[I, O]) setContext(ctx context.Context) { x.ctx = ctx }

var errNoOutput = errors.New("in-process entity produced no message for this input")

func (x *sessionStream[I, O]) Send(in *I) error {
	if x.failed {
		return io.EOF // the stream already failed, as a broken gRPC stream would say
	}
	ctx := x.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	out, err := x.s.StepContext(ctx, in)
	if out != nil {
		x.out = out
	}
	if err != nil {
		x.failed = true
	}
	return nil
}

func (x *sessionStream[I, O]) Recv() (*O, error) {
	if x.out != nil {
		out := x.out
		x.out = nil
		return out, nil
	}
	if x.failed {
		return nil, io.EOF
	}
	return nil, errNoOutput
}

func (x *sessionStream[I, O]) CloseSend() error { return nil }
