package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/crdtlog"
	"github.com/kstatehq/kstate/partition"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/frontdoor"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// CRDT entities (DESIGN.md §4, docs/crdt-entities.md). Every node holds a replica of every CRDT
// entity of the app and serves a CRDT command where it lands: no routing to a partition owner.
// A command's change is merged into the local replica at once, and its replication delta is
// produced to the entity type's `.crdt` topic (partition = the entity's partition); every node
// follows every partition of the `.crdt` topics, merges what it reads into its replica in Pebble
// and pushes the change to the entity's stream when the entity is active here.
//
// A replica has two states: durable, the merge of the deltas read back from Kafka (what Pebble
// holds, with the offsets it reflects), and live, durable plus this node's own changes not yet
// read back. A node that dies loses only changes that never reached Kafka (LOCAL consistency
// replies before that; MAJORITY and ALL after the delta is durable).

// crdtRef names a CRDT entity: its persistence id and entity id.
type crdtRef struct{ pid, id string }

// crdtReplica is this node's replica of one CRDT entity. mu guards every field.
type crdtReplica struct {
	mu      sync.Mutex
	durable crdtlog.CRDT // nil: no state yet
	live    crdtlog.CRDT
	deleted bool        // the entity was deleted (read back or done here)
	inst    *crdtEntity // the active instance on this node, nil if none
}

// crdtHost runs the node's CRDT entities and their replication.
type crdtHost struct {
	n    *Node
	log  hclog.Logger
	prod *broker.Producer
	seq  atomic.Int64 // origin sequence of this node's deltas

	// checkpointEvery is how often a partition owner writes the full states of the entities
	// that changed to the .crdt-state topics, then a checkpoint.
	checkpointEvery time.Duration

	mu       sync.Mutex
	replicas map[crdtRef]*crdtReplica // loaded: active entities and those changed recently
	// dirty are, per partition, the entities whose durable state changed since this node last
	// wrote a checkpoint of the partition; next is the follower's position (delta topic →
	// partition → next offset merged); written are the partitions this node checkpointed since
	// it came to own them (until then it writes every entity of the partition).
	dirty    map[int32]map[crdtRef]bool
	next     map[string]map[int32]int64
	written  map[int32]bool
	topics   map[string]string // CRDT delta topic → persistence id
	services map[string]*catalog.Service
}

func newCrdtHost(n *Node) (*crdtHost, error) {
	h := &crdtHost{n: n, log: n.log.Named("crdt"), replicas: map[crdtRef]*crdtReplica{}, topics: map[string]string{}, services: map[string]*catalog.Service{},
		checkpointEvery: crdtCheckpointEvery, dirty: map[int32]map[crdtRef]bool{}, next: map[string]map[int32]int64{}, written: map[int32]bool{}}
	for _, s := range n.cat.Services() {
		if s.Kind == catalog.CRDT {
			h.topics[n.cfg.Broker.CrdtTopic(s.PersistenceID)] = s.PersistenceID
			h.services[s.PersistenceID] = s
		}
	}
	if len(h.topics) == 0 {
		return h, nil
	}
	prod, err := broker.NewProducer(n.cfg.Broker)
	if err != nil {
		return nil, err
	}
	h.prod = prod
	return h, nil
}

func (h *crdtHost) close() {
	if h.prod != nil {
		h.prod.Close()
	}
}

// start reads every partition of the delta topics from the replicas' offsets up to their ends
// (so a node that restarts serves what it had, and a new node what the app has), then follows
// them in the background until the node stops.
func (h *crdtHost) start(ctx context.Context) error {
	if len(h.topics) == 0 {
		return nil
	}
	offs, err := h.n.store.CrdtOffsets()
	if err != nil {
		return err
	}
	from := map[string]map[int32]int64{}
	for t := range h.topics {
		from[t] = map[int32]int64{}
	}
	start := time.Now()
	for p := int32(0); p < h.n.cfg.Broker.Partitions; p++ {
		// ReadToEnd takes one partition per topic: read partition p of every delta topic.
		var parts []broker.TopicPartitionFrom
		for t, pid := range h.topics {
			o, known := offs[t][p]
			if !known {
				// Nothing of this partition stored yet: start from the last checkpoint of the
				// full-state topic rather than from the start of the delta topic.
				var err error
				if o, err = h.bootstrap(ctx, p, pid); err != nil {
					return fmt.Errorf("CRDT replicas: %w", err)
				}
			}
			parts = append(parts, broker.TopicPartitionFrom{Topic: t, Partition: p, From: o})
			from[t][p] = o
		}
		var batch []broker.Record
		read := func() (map[string]int64, error) {
			return broker.ReadToEnd(ctx, h.n.cfg.Broker, parts, func(r broker.Record) error {
				batch = append(batch, r)
				if len(batch) >= 4096 {
					err := h.apply(batch)
					batch = batch[:0]
					return err
				}
				return nil
			})
		}
		ends, err := read()
		if errors.Is(err, broker.ErrOffsetOutOfRange) {
			// The deltas after the replicas' position are past the topic's retention (no owner
			// wrote a checkpoint for that long): take what the topic still has.
			h.log.Warn("CRDT deltas after the replicas' position are gone (retention); reading what is left", "partition", p, "error", err)
			for i := range parts {
				parts[i].From = -1
			}
			batch = batch[:0]
			ends, err = read()
		}
		if err != nil {
			return fmt.Errorf("CRDT replicas: %w", err)
		}
		if err := h.apply(batch); err != nil {
			return err
		}
		for t, e := range ends {
			if _, ok := from[t]; ok && e > from[t][p] {
				from[t][p] = e
			}
		}
	}
	h.log.Info("CRDT replicas caught up", "took", time.Since(start).Round(time.Millisecond))
	h.mu.Lock()
	for t, ps := range from {
		h.next[t] = map[int32]int64{}
		for p, o := range ps {
			h.next[t][p] = o
		}
	}
	h.mu.Unlock()
	h.n.wg.Add(3)
	go func() {
		defer h.n.wg.Done()
		h.follow(from)
	}()
	go func() {
		defer h.n.wg.Done()
		h.checkpoints()
	}()
	go func() {
		defer h.n.wg.Done()
		h.sweepVoters()
	}()
	return nil
}

// follow keeps the replicas in step with the delta topics, restarting after a failure.
func (h *crdtHost) follow(from map[string]map[int32]int64) {
	backoff := 100 * time.Millisecond
	for {
		err := broker.FollowPartitions(h.n.ctx, h.n.cfg.Broker, from, func(r broker.Record) {
			if err := h.apply([]broker.Record{r}); err != nil {
				h.log.Error("applying a CRDT delta failed", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "error", err)
			}
			from[r.Topic][r.Partition] = r.Offset + 1
		})
		if h.n.ctx.Err() != nil {
			return
		}
		h.log.Warn("CRDT delta follower failed; restarting", "error", err, "after", backoff)
		if !sleepCtx(h.n.ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// apply merges delta records read from Kafka into the replicas and stores them with the offsets
// they reach, one Pebble batch per partition. A record that does not decode is skipped (and
// logged): it can never become a state.
func (h *crdtHost) apply(recs []broker.Record) error {
	type partBatch struct {
		reps []partition.CrdtReplica
		next map[string]int64
	}
	byPart := map[int32]*partBatch{}
	for _, r := range recs {
		pb := byPart[r.Partition]
		if pb == nil {
			pb = &partBatch{next: map[string]int64{}}
			byPart[r.Partition] = pb
		}
		pb.next[r.Topic] = r.Offset + 1
		pid, ok := h.topics[r.Topic]
		if !ok || len(r.Key) == 0 {
			continue
		}
		ref := crdtRef{pid: pid, id: string(r.Key)}
		state, err := h.merge(r.Partition, ref, r.Value)
		if err != nil {
			h.log.Error("skipping a CRDT delta that does not decode or merge", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "entity", ref.id, "error", err)
			continue
		}
		pb.reps = append(pb.reps, partition.CrdtReplica{PersistenceID: pid, EntityID: ref.id, State: state})
		h.mu.Lock()
		if h.dirty[r.Partition] == nil {
			h.dirty[r.Partition] = map[crdtRef]bool{}
		}
		h.dirty[r.Partition][ref] = true
		h.mu.Unlock()
	}
	for p, pb := range byPart {
		if err := h.n.store.ApplyCrdt(p, pb.reps, pb.next); err != nil {
			return err
		}
		h.mu.Lock()
		for t, o := range pb.next {
			if h.next[t] == nil {
				h.next[t] = map[int32]int64{}
			}
			h.next[t][p] = max(h.next[t][p], o)
		}
		h.mu.Unlock()
	}
	return nil
}

// merge folds one delta record value (nil: the entity was deleted) into ref's replica and returns
// the durable state to store (nil: deleted).
func (h *crdtHost) merge(p int32, ref crdtRef, value []byte) ([]byte, error) {
	rep, err := h.replica(p, ref)
	if err != nil {
		return nil, err
	}
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if value == nil {
		rep.durable, rep.live, rep.deleted = nil, nil, true
		if rep.inst != nil {
			rep.inst.notify()
		}
		return nil, nil
	}
	d, err := crdtlog.Decode(value)
	if err != nil {
		return nil, err
	}
	if rep.durable == nil {
		rep.durable = crdtlog.New(d.Kind())
	}
	if err := rep.durable.Merge(d); err != nil {
		return nil, err
	}
	if rep.live == nil {
		rep.live = rep.durable.Clone()
	} else if err := rep.live.Merge(d); err != nil {
		return nil, err
	}
	rep.deleted = false
	if rep.inst != nil {
		rep.inst.notify()
	}
	return crdtlog.Encode(rep.durable)
}

// replica returns ref's replica, loading it from Pebble when it is not in memory.
func (h *crdtHost) replica(p int32, ref crdtRef) (*crdtReplica, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rep, ok := h.replicas[ref]; ok {
		return rep, nil
	}
	rep := &crdtReplica{}
	b, ok, err := h.n.store.LoadCrdt(p, ref.pid, ref.id)
	if err != nil {
		return nil, err
	}
	if ok {
		c, err := crdtlog.Decode(b)
		if err != nil {
			return nil, fmt.Errorf("stored CRDT %s/%s: %w", ref.pid, ref.id, err)
		}
		rep.durable, rep.live = c, c.Clone()
	}
	h.replicas[ref] = rep
	return rep, nil
}

// release forgets ref's replica from memory when no instance uses it (Pebble keeps the durable
// state; the live changes not yet read back are in flight to Kafka and come back through the
// follower).
func (h *crdtHost) release(ref crdtRef, rep *crdtReplica) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.inst == nil && h.replicas[ref] == rep {
		delete(h.replicas, ref)
	}
}

// publish produces a replication delta (nil: a delete) of ref and returns when it is durable.
func (h *crdtHost) publish(ctx context.Context, p int32, ref crdtRef, service string, delta crdtlog.CRDT) error {
	var value []byte
	if delta != nil {
		b, err := crdtlog.Encode(delta)
		if err != nil {
			return err
		}
		value = b
	}
	_, err := h.prod.Produce(ctx, broker.Record{
		Topic:     h.n.cfg.Broker.CrdtTopic(ref.pid),
		Partition: p,
		Key:       []byte(ref.id),
		Value:     value,
		Headers: []broker.Header{
			{Key: kstatev1.HeaderOriginNode, Value: []byte(h.n.cfg.NodeID)},
			{Key: kstatev1.HeaderOriginSeq, Value: []byte(strconv.FormatInt(h.seq.Add(1), 10))},
			{Key: kstatev1.HeaderEntityType, Value: []byte(service)},
		},
	})
	return err
}

// crdtCall is one client call of a CRDT entity method.
type crdtCall struct {
	r      *request
	id     int64 // the command id on the entity's stream, assigned by run
	stream bool
	// msgs carries a streamed call's replies to the call's goroutine; closed at the end of
	// the stream (end is then its error, nil for OK).
	msgs      chan []byte
	end       error
	closed    bool // msgs is closed (set by the entity's run loop only)
	cancelled bool // the client cancelled; the user function was told
}

// crdtEntity is a CRDT entity active on this node: one goroutine (run) owns its protocol stream
// to the user function and its calls in flight, which — unlike event-sourced and value entities —
// may be many at once, and streamed.
type crdtEntity struct {
	h       *crdtHost
	svc     *catalog.Service
	ref     crdtRef
	p       int32
	rep     *crdtReplica
	log     hclog.Logger
	calls   chan *crdtCall
	cancels chan *crdtCall
	changed chan struct{} // buffered(1): the replica changed from Kafka
	done    chan struct{}
}

func (e *crdtEntity) notify() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// entity returns the active instance of ref, starting it when there is none.
func (h *crdtHost) entity(svc *catalog.Service, id string) (*crdtEntity, error) {
	p := broker.Partition([]byte(id), h.n.cfg.Broker.Partitions)
	ref := crdtRef{pid: svc.PersistenceID, id: id}
	rep, err := h.replica(p, ref)
	if err != nil {
		return nil, err
	}
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if e := rep.inst; e != nil {
		select {
		case <-e.done:
		default:
			return e, nil
		}
	}
	e := &crdtEntity{
		h: h, svc: svc, ref: ref, p: p, rep: rep,
		log:     h.log.With("service", svc.Name, "entity", id),
		calls:   make(chan *crdtCall, 64),
		cancels: make(chan *crdtCall, 64),
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	rep.inst = e
	h.n.wg.Add(1)
	go func() {
		defer h.n.wg.Done()
		e.run()
	}()
	return e, nil
}

// crdtStream is the user function's side of Crdt.handle as an entity sees it.
type crdtStream = protoStream[crdtpb.CrdtStreamIn, crdtpb.CrdtStreamOut]

// call runs one call on the active instance of its entity (started if needed).
func (h *crdtHost) call(ctx context.Context, m *catalog.Method, id string, payload []byte, md *cloudstatepb.Metadata, stream bool) (*crdtCall, *crdtEntity, error) {
	c := &crdtCall{
		r:      &request{ctx: ctx, method: m, entityID: id, payload: payload, md: md, done: make(chan result, 1)},
		stream: stream,
		msgs:   make(chan []byte, 256),
	}
	for attempt := 0; attempt < 2; attempt++ {
		e, err := h.entity(m.Service, id)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: CRDT %s/%s: %v", catalog.ErrUnavailable, m.Service.Name, id, err)
		}
		select {
		case e.calls <- c:
			return c, e, nil
		case <-e.done: // it just passivated: start a new one
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	return nil, nil, fmt.Errorf("%w: CRDT %s/%s could not be activated", catalog.ErrUnavailable, m.Service.Name, id)
}

// unary runs a unary CRDT command.
func (h *crdtHost) unary(ctx context.Context, m *catalog.Method, id string, payload []byte, md *cloudstatepb.Metadata) result {
	c, _, err := h.call(ctx, m, id, payload, md, false)
	if err != nil {
		return result{err: err}
	}
	select {
	case res := <-c.r.done:
		return res
	case <-ctx.Done():
		return result{err: ctx.Err()}
	}
}

// streamed runs a server-streaming CRDT command: every reply the entity streams is sent to the
// client until the entity ends the stream or the client cancels it (then the user function is
// told, and may change the state in its cancel handler).
func (h *crdtHost) streamed(ctx context.Context, m *catalog.Method, s frontdoor.CommandStream) error {
	payload, err := s.Recv()
	if err != nil {
		return err
	}
	c, e, err := h.call(ctx, m, s.EntityID(), payload, s.Metadata(), true)
	if err != nil {
		return err
	}
	for {
		select {
		case msg, ok := <-c.msgs:
			if !ok {
				return c.end
			}
			if err := s.Send(msg); err != nil {
				e.cancel(c)
				return err
			}
		case res := <-c.r.done:
			// Answered without a stream (a failure, or a reply that is not streamed).
			if res.err != nil {
				return res.err
			}
			if res.payload != nil || !errors.Is(res.err, catalog.ErrNoReply) {
				if err := s.Send(res.payload); err != nil {
					return err
				}
			}
			return nil
		case <-ctx.Done():
			e.cancel(c)
			return ctx.Err()
		}
	}
}

func (e *crdtEntity) cancel(c *crdtCall) {
	select {
	case e.cancels <- c:
	case <-e.done:
	}
}

// voterSweepEvery is how often a node checks the Vote entities it holds for voters that left.
const voterSweepEvery = time.Second

// sweepVoters removes, from every Vote replica this node holds in memory, the votes of nodes that
// are no longer members of the app's group — left, or dead past the group's session timeout — and
// replicates the removals, so a presence entity shows a killed node's users offline within the
// session timeout plus a second. Every node may remove the same vote: merging it twice changes
// nothing. A replica loaded later is swept when it is next in memory.
func (h *crdtHost) sweepVoters() {
	t := time.NewTicker(voterSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-h.n.ctx.Done():
			return
		case <-t.C:
		}
		type voteRep struct {
			ref crdtRef
			rep *crdtReplica
		}
		var votes []voteRep
		h.mu.Lock()
		for ref, rep := range h.replicas {
			rep.mu.Lock()
			if _, ok := rep.live.(*crdtlog.Vote); ok {
				votes = append(votes, voteRep{ref, rep})
			}
			rep.mu.Unlock()
		}
		h.mu.Unlock()
		if len(votes) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(h.n.ctx, voterSweepEvery)
		nodes, err := h.n.adm.GroupNodes(ctx)
		cancel()
		if err != nil || len(nodes) == 0 {
			continue // never remove anyone on an error or an empty answer
		}
		live := map[string]bool{h.n.cfg.NodeID: true}
		for _, id := range nodes {
			live[id] = true
		}
		for _, v := range votes {
			h.removeVoters(v.ref, v.rep, live)
		}
	}
}

func (h *crdtHost) removeVoters(ref crdtRef, rep *crdtReplica, live map[string]bool) {
	rep.mu.Lock()
	vote, ok := rep.live.(*crdtlog.Vote)
	var deltas []*crdtlog.Vote
	if ok {
		for _, node := range vote.Voters() {
			if !live[node] {
				if d := vote.Remove(node); d != nil {
					deltas = append(deltas, d)
				}
			}
		}
		vote.ResetDelta()
	}
	inst := rep.inst
	rep.mu.Unlock()
	if len(deltas) == 0 {
		return
	}
	if inst != nil {
		inst.notify() // its user function learns the new counts
	}
	p := broker.Partition([]byte(ref.id), h.n.cfg.Broker.Partitions)
	svc := h.services[ref.pid]
	for _, d := range deltas {
		ctx, cancel := context.WithTimeout(h.n.ctx, 10*time.Second)
		if err := h.publish(ctx, p, ref, svc.Name, d); err != nil {
			h.log.Warn("could not replicate the removal of a departed node's vote", "entity", ref.id, "error", err)
		}
		cancel()
	}
	h.log.Info("removed the votes of nodes that left the app", "service", svc.Name, "entity", ref.id, "votes", len(deltas))
}
