package processor

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/partition"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// CRDT checkpoints (DESIGN.md §2: `.crdt-state`). The owner of partition p writes, every
// crdtCheckpointEvery, the full state of every CRDT entity of p whose state changed since its last
// checkpoint (every entity of p, the first time after it came to own p) to the compacted
// `<ns>.<pid>.crdt-state` topic, then a checkpoint record (key kstatev1.CrdtCheckpointKey, header
// kstatev1.HeaderCrdtCovers = the next offset of partition p of the delta topic that those states
// include). The covered offset is read before the states, so every state written includes at least
// the deltas below it. A node with nothing stored for p loads the states up to the last
// checkpoint, then reads the deltas from the offset it covers, so the delta topic's retention
// bounds nothing. States and deltas merge idempotently: an old owner still writing, or a delta
// read twice, changes nothing.

// crdtCheckpointEvery is how often a partition owner checkpoints its CRDT entities.
const crdtCheckpointEvery = 30 * time.Second

// bootstrap loads partition p of pid's full-state topic into the replicas and returns the delta
// offset to continue from: the last checkpoint's, or -1 (what the delta topic still has) when
// there is none.
func (h *crdtHost) bootstrap(ctx context.Context, p int32, pid string) (int64, error) {
	topic := h.n.cfg.Broker.CrdtStateTopic(pid)
	covers := int64(-1)
	var reps []partition.CrdtReplica
	_, err := broker.ReadToEnd(ctx, h.n.cfg.Broker, []broker.TopicPartitionFrom{{Topic: topic, Partition: p}}, func(r broker.Record) error {
		if string(r.Key) == kstatev1.CrdtCheckpointKey {
			v, _ := r.HeaderValue(kstatev1.HeaderCrdtCovers)
			if o, err := strconv.ParseInt(string(v), 10, 64); err == nil && o >= 0 {
				covers = o
			} else {
				h.log.Warn("skipping a CRDT checkpoint without a valid covered offset", "topic", topic, "partition", p, "offset", r.Offset)
			}
			return nil
		}
		if len(r.Key) == 0 {
			return nil
		}
		state, err := h.merge(p, crdtRef{pid: pid, id: string(r.Key)}, r.Value)
		if err != nil {
			h.log.Error("skipping a CRDT state that does not decode", "topic", topic, "partition", p, "offset", r.Offset, "error", err)
			return nil
		}
		reps = append(reps, partition.CrdtReplica{PersistenceID: pid, EntityID: string(r.Key), State: state})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("load %s/%d: %w", topic, p, err)
	}
	if err := h.n.store.ApplyCrdt(p, reps, nil); err != nil {
		return 0, err
	}
	if len(reps) > 0 || covers >= 0 {
		h.log.Info("CRDT states loaded from the full-state topic", "topic", topic, "partition", p, "states", len(reps), "deltas_from", covers)
	}
	return covers, nil
}

// checkpoints writes a checkpoint of every partition this node owns, every checkpointEvery,
// until the node stops.
func (h *crdtHost) checkpoints() {
	t := time.NewTicker(h.checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-h.n.ctx.Done():
			return
		case <-t.C:
		}
		for p := int32(0); p < h.n.cfg.Broker.Partitions; p++ {
			if h.n.localOwner(p) == nil {
				h.mu.Lock()
				h.written[p] = false // a later acquire starts with a full checkpoint
				h.mu.Unlock()
				continue
			}
			if err := h.checkpoint(h.n.ctx, p); err != nil && h.n.ctx.Err() == nil {
				h.log.Warn("CRDT checkpoint failed; retried at the next one", "partition", p, "error", err)
			}
		}
	}
}

// checkpoint writes the changed states of partition p and a checkpoint per persistence id.
func (h *crdtHost) checkpoint(ctx context.Context, p int32) error {
	h.mu.Lock()
	full := !h.written[p]
	dirty := h.dirty[p]
	h.dirty[p] = nil
	covers := map[string]int64{}
	for t := range h.topics {
		covers[t] = h.next[t][p]
	}
	h.mu.Unlock()
	restore := func() { // the entities stay dirty for the next checkpoint
		h.mu.Lock()
		if h.dirty[p] == nil {
			h.dirty[p] = map[crdtRef]bool{}
		}
		for ref := range dirty {
			h.dirty[p][ref] = true
		}
		h.mu.Unlock()
	}
	for t, pid := range h.topics {
		var reps []partition.CrdtReplica
		if full {
			var err error
			if reps, err = h.n.store.CrdtReplicas(p, pid); err != nil {
				restore()
				return err
			}
		} else {
			for ref := range dirty {
				if ref.pid != pid {
					continue
				}
				b, ok, err := h.n.store.LoadCrdt(p, ref.pid, ref.id)
				if err != nil {
					restore()
					return err
				}
				if !ok {
					b = nil // deleted: a tombstone lets compaction drop the entity
				}
				reps = append(reps, partition.CrdtReplica{PersistenceID: pid, EntityID: ref.id, State: b})
			}
		}
		if !full && len(reps) == 0 {
			continue
		}
		topic := h.n.cfg.Broker.CrdtStateTopic(pid)
		for _, r := range reps {
			if _, err := h.prod.Produce(ctx, broker.Record{Topic: topic, Partition: p, Key: []byte(r.EntityID), Value: r.State}); err != nil {
				restore()
				return err
			}
		}
		if _, err := h.prod.Produce(ctx, broker.Record{
			Topic: topic, Partition: p, Key: []byte(kstatev1.CrdtCheckpointKey), Value: []byte{},
			Headers: []broker.Header{{Key: kstatev1.HeaderCrdtCovers, Value: []byte(strconv.FormatInt(covers[t], 10))}},
		}); err != nil {
			restore()
			return err
		}
	}
	h.mu.Lock()
	h.written[p] = true
	h.mu.Unlock()
	return nil
}
