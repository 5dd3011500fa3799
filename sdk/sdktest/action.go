package sdktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/sdk"
)

// Action calls an action's handlers in memory, through the same protocol handling that serves a
// real proxy (sdk.Server.HandleAction*): a call of each of the four gRPC shapes, with streamed
// inputs sent the way the proxy sends them (a first message naming the method, without payload).
// It is safe for concurrent use.
type Action struct {
	base
	srv     *sdk.Server
	ctx     context.Context
	service string
}

// ActionResult is one response of an action: the only one of a unary or streamed-in call, or one
// element of a streamed-out or duplex call. At most one of Reply, Forward and Failure is set;
// none is set for a response without a reply.
type ActionResult struct {
	// Reply is the reply message, or nil.
	Reply proto.Message
	// Forward is the forward, or nil.
	Forward *Forward
	// Failure is the failure, or nil.
	Failure *Failure
	// SideEffects are the response's side effects, in order. An action keeps them when it fails.
	SideEffects []SideEffect
}

// NoReply reports a response with neither a reply, a forward nor a failure.
func (r *ActionResult) NoReply() bool { return r.Reply == nil && r.Forward == nil && r.Failure == nil }

// NewAction registers a the way sdk.Server.Register does, failing the test on a definition error.
// Of the options, WithLogger and WithContext apply.
func NewAction(t TB, a *sdk.Action, opts ...Option) *Action {
	if t != nil {
		t.Helper()
	}
	cfg := config{ctx: context.Background()}
	for _, o := range opts {
		o(&cfg)
	}
	h := &Action{base: base{t: t}, ctx: cfg.ctx}
	switch {
	case a == nil:
		h.fatalf("sdktest: nil action")
		return h
	case cfg.snapshot != nil || len(cfg.events) > 0 || cfg.state != nil:
		h.fatalf("sdktest: WithSnapshot, WithEvents and WithState are for entities; actions are stateless")
		return h
	}
	h.service = a.ServiceName()
	h.srv = sdk.NewServer(sdk.WithLogger(cfg.log))
	if err := h.srv.Register(a); err != nil {
		h.fatalf("sdktest: %v", err)
	}
	return h
}

// command builds the message that names the method, with the options' metadata.
func (h *Action) command(method string, opts []CommandOption) *actionpb.ActionCommand {
	c := &cloudstatepb.Command{}
	for _, o := range opts {
		o(c)
	}
	return &actionpb.ActionCommand{ServiceName: h.service, Name: method, Metadata: c.GetMetadata()}
}

func (h *Action) payload(method string, in proto.Message) *anypb.Any {
	if h.t != nil {
		h.t.Helper()
	}
	if in == nil {
		h.fatalf("sdktest: action %s: nil input message", method)
		return nil
	}
	a, err := anypb.New(in)
	if err != nil {
		h.fatalf("sdktest: action %s: %v", method, err)
	}
	return a
}

// result converts a response. It returns the failure as an error, or nil.
func (h *Action) result(resp *actionpb.ActionResponse) (*ActionResult, error) {
	res := &ActionResult{SideEffects: h.sideEffects(resp.GetSideEffects())}
	switch r := resp.GetResponse().(type) {
	case *actionpb.ActionResponse_Reply:
		res.Reply = h.decode(r.Reply.GetPayload())
	case *actionpb.ActionResponse_Forward:
		res.Forward = h.forward(r.Forward)
	case *actionpb.ActionResponse_Failure:
		res.Failure = &Failure{CommandID: r.Failure.GetCommandId(), Description: r.Failure.GetDescription(), Restart: r.Failure.GetRestart()}
		return res, res.Failure
	}
	return res, nil
}

// results converts the elements of a response stream; the error is the first failure element's.
func (h *Action) results(resps []*actionpb.ActionResponse) ([]*ActionResult, error) {
	var err error
	out := make([]*ActionResult, 0, len(resps))
	for _, resp := range resps {
		res, ferr := h.result(resp)
		if err == nil {
			err = ferr
		}
		out = append(out, res)
	}
	return out, err
}

// Unary calls a unary method. On a failure the result is returned as well, with the side effects
// the action asked for, and the error is its *Failure.
func (h *Action) Unary(method string, in proto.Message, opts ...CommandOption) (*ActionResult, error) {
	if h.t != nil {
		h.t.Helper()
	}
	cmd := h.command(method, opts)
	cmd.Payload = h.payload(method, in)
	resp, err := h.srv.HandleActionUnary(h.ctx, cmd)
	if err != nil {
		h.fatalf("sdktest: action %s: %v", method, err)
		return nil, err
	}
	return h.result(resp)
}

// StreamedIn calls a streamed-in method with the messages in, and returns its response as Unary
// does.
func (h *Action) StreamedIn(method string, in []proto.Message, opts ...CommandOption) (*ActionResult, error) {
	if h.t != nil {
		h.t.Helper()
	}
	msgs := []*actionpb.ActionCommand{h.command(method, opts)}
	for _, m := range in {
		msgs = append(msgs, &actionpb.ActionCommand{Payload: h.payload(method, m)})
	}
	var mu sync.Mutex // the handler may read from a goroutine of its own
	recv := func() (*actionpb.ActionCommand, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(msgs) == 0 {
			return nil, io.EOF
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}
	resp, err := h.srv.HandleActionStreamedIn(h.ctx, recv)
	if err != nil {
		h.fatalf("sdktest: action %s: %v", method, err)
		return nil, err
	}
	return h.result(resp)
}

// StreamedOut calls a streamed-out method and returns every element of its response stream. If
// an element is a failure, the error is the first such element's *Failure (a proxy ends the
// client's call there); the elements after it are returned too.
func (h *Action) StreamedOut(method string, in proto.Message, opts ...CommandOption) ([]*ActionResult, error) {
	if h.t != nil {
		h.t.Helper()
	}
	cmd := h.command(method, opts)
	cmd.Payload = h.payload(method, in)
	var mu sync.Mutex // the handler may send from several goroutines
	var resps []*actionpb.ActionResponse
	send := func(r *actionpb.ActionResponse) error {
		mu.Lock()
		defer mu.Unlock()
		resps = append(resps, r)
		return nil
	}
	if err := h.srv.HandleActionStreamedOut(h.ctx, cmd, send); err != nil {
		h.fatalf("sdktest: action %s: %v", method, err)
		return nil, err
	}
	return h.results(resps)
}

// Streamed calls a duplex method: it sends the messages in, closes the input, and returns every
// element of the response stream, as StreamedOut does. Use Open to interleave sends and
// receives.
func (h *Action) Streamed(method string, in []proto.Message, opts ...CommandOption) ([]*ActionResult, error) {
	if h.t != nil {
		h.t.Helper()
	}
	d := h.Open(method, opts...)
	defer d.Close()
	for _, m := range in {
		d.Send(m)
	}
	d.CloseSend()
	var resps []*actionpb.ActionResponse
	for {
		resp, err := d.recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			h.fatalf("sdktest: action %s: %v", method, err)
			return nil, err
		}
		resps = append(resps, resp)
	}
	return h.results(resps)
}

// Open starts a duplex call and returns it, for tests that interleave sends and receives. The
// handler runs in a goroutine of its own until it returns or the call is closed; Close the call
// when done (when t has a Cleanup method, as *testing.T does, the harness closes it at the end of
// the test).
func (h *Action) Open(method string, opts ...CommandOption) *Duplex {
	if h.t != nil {
		h.t.Helper()
	}
	ctx, cancel := context.WithCancel(h.ctx)
	d := &Duplex{h: h, method: method, cancel: cancel, done: make(chan struct{}), in: newQueue[*actionpb.ActionCommand](), out: newQueue[*actionpb.ActionResponse]()}
	d.in.push(h.command(method, opts))
	recv := func() (*actionpb.ActionCommand, error) {
		m, ok, closed := d.in.pop(ctx.Done())
		switch {
		case ok:
			return m, nil
		case closed:
			return nil, io.EOF
		}
		return nil, ctx.Err()
	}
	send := func(r *actionpb.ActionResponse) error {
		d.out.push(r)
		return nil
	}
	go func() {
		defer close(d.done)
		d.err = h.srv.HandleActionStreamed(ctx, recv, send)
		d.out.close()
	}()
	if c, ok := h.t.(interface{ Cleanup(func()) }); ok {
		c.Cleanup(d.Close)
	}
	return d
}

// Duplex is an open duplex call (Action.Open). Send and CloseSend must not be called
// concurrently with each other, nor Recv with itself.
type Duplex struct {
	h      *Action
	method string
	cancel context.CancelFunc
	done   chan struct{} // closed when the handler's goroutine ends
	in     *queue[*actionpb.ActionCommand]
	out    *queue[*actionpb.ActionResponse]
	err    error // the call's error; written before out is closed
}

// Send sends one message to the handler. It does not wait for the handler to read it.
func (d *Duplex) Send(in proto.Message) {
	if d.h.t != nil {
		d.h.t.Helper()
	}
	if !d.in.push(&actionpb.ActionCommand{Payload: d.h.payload(d.method, in)}) {
		d.h.fatalf("sdktest: action %s: Send after CloseSend", d.method)
	}
}

// CloseSend ends the input: the handler's next Recv, after the messages sent so far, returns
// io.EOF.
func (d *Duplex) CloseSend() { d.in.close() }

// Recv returns the next element of the response stream, waiting for the handler to send it. A
// failure element is returned with its *Failure as the error. After the last element Recv returns
// io.EOF.
func (d *Duplex) Recv() (*ActionResult, error) {
	if d.h.t != nil {
		d.h.t.Helper()
	}
	resp, err := d.recv()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			d.h.fatalf("sdktest: action %s: %v", d.method, err)
		}
		return nil, err
	}
	return d.h.result(resp)
}

func (d *Duplex) recv() (*actionpb.ActionResponse, error) {
	resp, ok, _ := d.out.pop(nil)
	if ok {
		return resp, nil
	}
	if d.err != nil {
		return nil, fmt.Errorf("call ended with %w", d.err)
	}
	return nil, io.EOF
}

// Close cancels the call's context, if the handler is still running, and waits for the handler
// to return. It may be called more than once.
func (d *Duplex) Close() {
	d.cancel()
	<-d.done
}

// queue is an unbounded FIFO with one consumer, so that neither side of an in-memory call blocks
// the other.
type queue[T any] struct {
	mu     sync.Mutex
	items  []T
	closed bool
	signal chan struct{} // capacity 1: something was pushed, or the queue closed
}

func newQueue[T any]() *queue[T] { return &queue[T]{signal: make(chan struct{}, 1)} }

// push appends v; it reports false if the queue is closed.
func (q *queue[T]) push(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.items = append(q.items, v)
	q.notify()
	return true
}

func (q *queue[T]) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.notify()
}

func (q *queue[T]) notify() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pop waits for the next item (ok), for the queue to be closed and empty (closed), or for stop.
func (q *queue[T]) pop(stop <-chan struct{}) (v T, ok, closed bool) {
	for {
		q.mu.Lock()
		switch {
		case len(q.items) > 0:
			v = q.items[0]
			q.items = q.items[1:]
			q.mu.Unlock()
			return v, true, false
		case q.closed:
			q.mu.Unlock()
			return v, false, true
		}
		q.mu.Unlock()
		select {
		case <-q.signal:
		case <-stop:
			return v, false, false
		}
	}
}
