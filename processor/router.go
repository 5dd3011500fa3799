package processor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/frontdoor"
	"github.com/kstatehq/kstate/processor/internal/metrics"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// defaultRouteTimeout bounds routing when the caller set no deadline.
const defaultRouteTimeout = 30 * time.Second

// notOwnerMsg prefixes the status a node returns for a forwarded command whose partition it does
// not own; the forwarding node then looks the owner up again and retries.
const notOwnerMsg = "kstate: not the owner of partition"

// dispatcher is the Node as the front door's frontdoor.Dispatcher, so that Node itself exports no
// dispatch methods over the internal catalog's types.
type dispatcher struct{ n *Node }

var _ frontdoor.Dispatcher = dispatcher{}

// Unary runs a unary command wherever its entity lives.
func (d dispatcher) Unary(ctx context.Context, m *catalog.Method, entityID string, payload []byte, md *cloudstatepb.Metadata) ([]byte, *cloudstatepb.Metadata, error) {
	key, err := idempotencyKey(md)
	if err != nil {
		return nil, nil, err
	}
	res := d.n.invoke(ctx, m, entityID, payload, md, key)
	return res.payload, res.md, res.err
}

// Stream runs a streamed call (see Node.stream).
func (d dispatcher) Stream(ctx context.Context, m *catalog.Method, s frontdoor.CommandStream) error {
	return d.n.stream(ctx, m, s)
}

// stream runs a streamed call: actions in all streamed shapes, CRDT entities server-streaming.
func (n *Node) stream(ctx context.Context, m *catalog.Method, s frontdoor.CommandStream) error {
	switch m.Service.Kind {
	case catalog.Action:
		return n.streamAction(m, s)
	case catalog.CRDT:
		return n.crdt.streamed(ctx, m, s)
	}
	return status.Errorf(codes.Unimplemented, "method %s: %s entities have no streamed calls", m.FullName, m.Service.Kind)
}

// invoke routes one command: to a local partition, or to the owner node over kstate.v1.Node.
// A stale owner map is refreshed and the command retried within the caller's deadline: always
// when it never ran, and also when its outcome is unknown if it carries an idempotency key (key),
// since the owner then answers a second attempt with the first one's outcome.
func (n *Node) invoke(ctx context.Context, m *catalog.Method, entityID string, payload []byte, md *cloudstatepb.Metadata, key string) result {
	if _, ok := ctx.Deadline(); !ok {
		// Every call to the user function has a deadline, also when the client set none.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRouteTimeout)
		defer cancel()
	}
	switch m.Service.Kind {
	case catalog.Action:
		// Actions are stateless: served where the request lands.
		return n.unaryAction(ctx, m, payload, md, key)
	case catalog.CRDT:
		// Every node holds a replica: served where the request lands.
		return n.crdt.unary(ctx, m, entityID, payload, md)
	}
	p := broker.Partition([]byte(entityID), n.cfg.Broker.Partitions)
	backoff := 5 * time.Millisecond
	var lastErr error
	for {
		res, neverRan := n.tryOnce(ctx, p, m, entityID, payload, md, key)
		if !mayRetry(res.err, neverRan, key != "") {
			return res
		}
		lastErr = res.err
		n.met.RouterRetry()
		_, changed := n.owners.get(p)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			if errors.Is(lastErr, catalog.ErrOutcomeUnknown) {
				return result{err: lastErr} // it may have run: never report it as safe to retry
			}
			return result{err: fmt.Errorf("%w: partition %d has no reachable owner: %v", catalog.ErrUnavailable, p, lastErr)}
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}

// mayRetry is the router's rule for another attempt after err: a command that surely never ran
// (neverRan) may always be sent again; one whose outcome is unknown only when it carries an
// idempotency key (keyed), since its owner then answers the second attempt with the first one's
// outcome instead of running it again. Anything else is the command's answer.
func mayRetry(err error, neverRan, keyed bool) bool {
	return neverRan || keyed && errors.Is(err, catalog.ErrOutcomeUnknown)
}

// tryOnce makes one routing attempt; neverRan reports that the command surely did not run (not
// the owner, or the peer could not be dialled), so another attempt is always safe.
func (n *Node) tryOnce(ctx context.Context, p int32, m *catalog.Method, entityID string, payload []byte, md *cloudstatepb.Metadata, key string) (result, bool) {
	if o := n.localOwner(p); o != nil {
		n.met.Routed(metrics.RouteLocal)
		res := n.runLocal(ctx, o, m, entityID, payload, md, key)
		return res, errors.Is(res.err, catalog.ErrNotOwner)
	}
	rec, _ := n.owners.get(p)
	if rec == nil || rec.GetNodeId() == n.cfg.NodeID {
		// No owner yet, or the table still names us after we lost p: wait for the group.
		return result{err: fmt.Errorf("%w: partition %d", catalog.ErrNotOwner, p)}, true
	}
	cc, err := n.conns.get(rec.GetAddress())
	if err != nil {
		return result{err: err}, true
	}
	var trailer metadata.MD
	n.met.Routed(metrics.RouteForwarded)
	resp, err := kstatev1.NewNodeClient(cc).Forward(ctx, &kstatev1.ForwardRequest{
		Service:        m.Service.Name,
		Method:         m.Name,
		Payload:        payload,
		Metadata:       md,
		Partition:      p,
		EntityId:       entityID,
		IdempotencyKey: key,
	}, grpc.Trailer(&trailer))
	if err == nil {
		return result{payload: resp.GetPayload(), md: resp.GetMetadata()}, false
	}
	switch classifyForward(err, trailer) {
	case forwardRetry:
		return result{err: fmt.Errorf("%w: %s", catalog.ErrNotOwner, status.Convert(err).Message())}, true
	case forwardUnknown:
		return result{err: fmt.Errorf("%w: forward to node %s: %v", catalog.ErrOutcomeUnknown, rec.GetNodeId(), status.Convert(err).Message())}, false
	}
	if frontdoor.HasReason(err, frontdoor.ReasonOutcomeUnknown) {
		// The owner itself does not know (its commit was indefinite): as unknown as a broken call.
		return result{err: fmt.Errorf("%w (at node %s)", catalog.ErrOutcomeUnknown, rec.GetNodeId())}, false
	}
	return result{err: err}, false
}

// forwardOutcome is what a failed Forward means for the command.
type forwardOutcome int

const (
	// forwardFinal: the owner ran the command (or refused it for good); its status is the answer.
	forwardFinal forwardOutcome = iota
	// forwardRetry: the command never ran — the peer could not be dialled, or it answered that it
	// does not own the partition — so it may be sent to the current owner.
	forwardRetry
	// forwardUnknown: the call broke after it may have reached the owner; the command may or may
	// not have run.
	forwardUnknown
)

// outcomeTrailer is the trailer a node's Forward sets on every answer, so the forwarding node
// can tell a status the peer produced from one its own transport produced: a peer's message may
// contain any text ("connection refused" included).
const outcomeTrailer = "kstate-outcome"

// Values of outcomeTrailer.
const (
	outcomeNotRun = "not-run" // refused before running: not the owner
	outcomeRan    = "final"   // any other answer of the owner
)

// classifyForward is the router's retry rule, a pure function of the Forward's error and the
// trailer the peer sent (empty when the status came from this node's transport).
func classifyForward(err error, trailer metadata.MD) forwardOutcome {
	st := status.Convert(err)
	switch v := trailer.Get(outcomeTrailer); {
	case len(v) > 0 && v[0] == outcomeNotRun:
		return forwardRetry
	case len(v) > 0:
		return forwardFinal
	}
	// No trailer: the peer never answered. Only a failure to dial proves the request never left
	// this node; anything else (reset, EOF, deadline) may have happened after the owner ran it.
	switch st.Code() {
	case codes.Unavailable:
		if dialFailed(st.Message()) {
			return forwardRetry
		}
		return forwardUnknown
	case codes.Canceled, codes.DeadlineExceeded:
		return forwardUnknown
	}
	return forwardFinal
}

// localOwner returns the partition runner if this node holds p.
func (n *Node) localOwner(p int32) *owner {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.local[p]
}

// runLocal submits a command to a local partition and waits for its outcome or the deadline.
func (n *Node) runLocal(ctx context.Context, o *owner, m *catalog.Method, entityID string, payload []byte, md *cloudstatepb.Metadata, key string) result {
	start := time.Now()
	r := &request{ctx: ctx, method: m, entityID: entityID, payload: payload, md: md, key: key, done: make(chan result, 1)}
	n.mu.Lock()
	if n.local[o.p] != o {
		n.mu.Unlock()
		return result{err: catalog.ErrNotOwner}
	}
	err := o.submit(r)
	n.mu.Unlock()
	if err != nil {
		return result{err: err}
	}
	select {
	case res := <-r.done:
		n.observeCommand(m, res.err, start)
		return res
	case <-ctx.Done():
		n.observeCommand(m, ctx.Err(), start)
		return result{err: ctx.Err()}
	}
}

// nodeService serves kstate.v1.Node: commands forwarded by other nodes.
type nodeService struct {
	kstatev1.UnimplementedNodeServer
	n *Node
}

// Forward validates a forwarded command exactly as the client ingress does — another node's
// request is as untrusted as a client's — then runs it on the local partition.
func (s *nodeService) Forward(ctx context.Context, req *kstatev1.ForwardRequest) (*kstatev1.ForwardResponse, error) {
	n := s.n
	m, ok := n.cat.Method("/" + req.GetService() + "/" + req.GetMethod())
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "unknown method %s/%s", req.GetService(), req.GetMethod())
	}
	if k := m.Service.Kind; k != catalog.EventSourced && k != catalog.Value {
		return nil, status.Errorf(codes.InvalidArgument, "method %s is a %s method; only event-sourced and value entity commands are forwarded between nodes", m.FullName, k)
	}
	id, err := frontdoor.ExtractEntityID(m, req.GetPayload(), frontdoor.DefaultMaxEntityIDBytes)
	if err != nil {
		return nil, frontdoor.ToStatus(err)
	}
	if id != req.GetEntityId() {
		return nil, status.Errorf(codes.InvalidArgument, "entity_id %q does not match the entity key %q of the payload", req.GetEntityId(), id)
	}
	if k := req.GetIdempotencyKey(); k != "" {
		if err := checkIdempotencyKey(k); err != nil {
			return nil, frontdoor.ToStatus(err)
		}
	}
	p := broker.Partition([]byte(id), n.cfg.Broker.Partitions)
	if req.GetPartition() != p {
		return nil, status.Errorf(codes.InvalidArgument, "entity %q is in partition %d of %d here, not %d: do all nodes of the app use the same partition count?", id, p, n.cfg.Broker.Partitions, req.GetPartition())
	}
	notOwner := func() error {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(outcomeTrailer, outcomeNotRun))
		return status.Errorf(codes.FailedPrecondition, "%s %d (node %s)", notOwnerMsg, p, n.cfg.NodeID)
	}
	o := n.localOwner(p)
	if o == nil {
		return nil, notOwner()
	}
	res := n.runLocal(ctx, o, m, req.GetEntityId(), req.GetPayload(), req.GetMetadata(), req.GetIdempotencyKey())
	if errors.Is(res.err, catalog.ErrNotOwner) {
		return nil, notOwner()
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs(outcomeTrailer, outcomeRan))
	if res.err != nil {
		return nil, frontdoor.ToStatus(res.err)
	}
	return &kstatev1.ForwardResponse{Payload: res.payload, Metadata: res.md}, nil
}

// complete finishes a command whose events are durable: synchronous side effects are awaited,
// asynchronous ones started, and the reply (or the forward target's reply) sent to the caller.
// The work runs off the entity's goroutine, so the entity can take its next command and a forward
// to the same entity cannot deadlock. Side effects and the forward carry idempotency keys derived
// from r's (fwdKey, when set, is the forward's: a replayed outcome's).
func (n *Node) complete(r *request, ca *cloudstatepb.ClientAction, effects []*cloudstatepb.SideEffect, fwdKey string) {
	if len(effects) == 0 && ca.GetForward() == nil {
		r.finish(n.replyResult(r.method, ca))
		return
	}
	// Bounded: when maxBackground completions run already, the entity waits for a slot (the
	// caller's deadline still applies to its own call).
	select {
	case n.background <- struct{}{}:
	case <-r.ctx.Done():
		r.finish(result{err: r.ctx.Err()})
		return
	}
	n.wg.Add(1)
	go func() {
		defer func() { <-n.background }()
		defer n.wg.Done()
		base := r.dedupBase()
		n.sideEffects(r.ctx, effects, base)
		if f := ca.GetForward(); f != nil {
			if fwdKey == "" {
				fwdKey = forwardKey(base)
			}
			r.finish(n.forward(r.ctx, f, fwdKey))
			return
		}
		r.finish(n.replyResult(r.method, ca))
	}()
}

// replyResult turns a client action (reply, or none) into the caller's result.
func (n *Node) replyResult(m *catalog.Method, ca *cloudstatepb.ClientAction) result {
	rep := ca.GetReply()
	if rep == nil {
		// No reply: the client receives the output type's empty message.
		return result{}
	}
	if want := catalog.TypeURL(m.Output); rep.GetPayload() != nil && !sameType(rep.GetPayload().GetTypeUrl(), want) {
		return result{err: status.Errorf(codes.Internal, "user function replied to %s with %s, want %s", m.FullName, rep.GetPayload().GetTypeUrl(), want)}
	}
	return result{payload: rep.GetPayload().GetValue(), md: rep.GetMetadata()}
}

// forward runs the forward target as a new command with idempotency key key; its reply becomes
// the caller's reply.
func (n *Node) forward(ctx context.Context, f *cloudstatepb.Forward, key string) result {
	payload, target, id, err := n.resolveTarget(ctx, f.GetServiceName(), f.GetCommandName(), f.GetPayload().GetTypeUrl(), f.GetPayload().GetValue())
	if err != nil {
		return result{err: err}
	}
	return n.invoke(ctx, target, id, payload, f.GetMetadata(), key)
}

// sideEffects runs synchronous side effects in order and waits for them; asynchronous ones run
// in the background under the node's lifetime. Each carries a key derived from base.
func (n *Node) sideEffects(ctx context.Context, effects []*cloudstatepb.SideEffect, base string) {
	for i, se := range effects {
		key := effectKey(base, i)
		payload, target, id, err := n.resolveTarget(ctx, se.GetServiceName(), se.GetCommandName(), se.GetPayload().GetTypeUrl(), se.GetPayload().GetValue())
		if err != nil {
			n.log.Warn("side effect dropped", "service", se.GetServiceName(), "command", se.GetCommandName(), "error", err)
			continue
		}
		run := func(ctx context.Context) {
			if res := n.invoke(ctx, target, id, payload, se.GetMetadata(), key); res.err != nil {
				n.log.Warn("side effect failed", "method", target.FullName, "entity", id, "error", res.err)
			}
		}
		if se.GetSynchronous() {
			run(ctx)
			continue
		}
		select {
		case n.background <- struct{}{}:
		default:
			// Asynchronous side effects are fire-and-forget (Cloudstate); under overload they
			// are dropped rather than growing goroutines without bound.
			n.log.Warn("asynchronous side effect dropped: too many side effects in flight", "method", target.FullName, "limit", cap(n.background))
			continue
		}
		n.wg.Add(1)
		go func() {
			defer func() { <-n.background }()
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, defaultRouteTimeout)
			defer cancel()
			run(ctx)
		}()
	}
}

// sideEffectsInBackground runs side effects off the caller's goroutine, bounded like the other
// background work, under the node's lifetime (a CRDT entity's run loop must not wait for them).
func (n *Node) sideEffectsInBackground(effects []*cloudstatepb.SideEffect, base string) {
	select {
	case n.background <- struct{}{}:
	default:
		n.log.Warn("side effects dropped: too many side effects in flight", "count", len(effects), "limit", cap(n.background))
		return
	}
	n.wg.Add(1)
	go func() {
		defer func() { <-n.background }()
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, defaultRouteTimeout)
		defer cancel()
		n.sideEffects(ctx, effects, base)
	}()
}

// resolveTarget finds a forward or side-effect target and its entity id. An unknown target is
// reported to the user function (reportError), as Cloudstate's proxy did.
func (n *Node) resolveTarget(ctx context.Context, svc, cmd, typeURL string, payload []byte) ([]byte, *catalog.Method, string, error) {
	m, ok := n.cat.Method("/" + svc + "/" + cmd)
	if !ok {
		msg := fmt.Sprintf("forward or side effect to unknown method %s/%s", svc, cmd)
		_ = catalog.ReportError(ctx, n.uf, msg)
		return nil, nil, "", status.Error(codes.Internal, msg)
	}
	if want := catalog.TypeURL(m.Input); typeURL != "" && !sameType(typeURL, want) {
		return nil, nil, "", status.Errorf(codes.Internal, "forward or side effect to %s carries %s, want %s", m.FullName, typeURL, want)
	}
	id, err := frontdoor.ExtractEntityID(m, payload, frontdoor.DefaultMaxEntityIDBytes)
	if err != nil {
		// The user function named a target it cannot address (a malformed payload, empty key
		// fields): a protocol error of the function, never a command that reaches a journal.
		return nil, nil, "", status.Errorf(codes.Internal, "forward or side effect to %s: %v", m.FullName, err)
	}
	return payload, m, id, nil
}

// sameType compares type URLs by the message name after the last '/'.
func sameType(got, want string) bool {
	return got == want || got[strings.LastIndexByte(got, '/')+1:] == want[strings.LastIndexByte(want, '/')+1:]
}

// dialFailed reports whether a status this node's gRPC transport produced says the connection
// could not be made (grpc-go: "connection error: desc = \"transport: Error while dialing ...\"";
// with peer TLS also "... authentication handshake failed ..." and, when the peer refused our
// certificate, "... error reading server preface ...": grpc-go uses no connection before the
// server's preface), so the request was never sent.
func dialFailed(msg string) bool {
	if !strings.HasPrefix(msg, "connection error:") {
		return false
	}
	return strings.Contains(msg, "while dialing") || strings.Contains(msg, "authentication handshake failed") || strings.Contains(msg, "error reading server preface")
}
