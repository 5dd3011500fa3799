package partition

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// CRDT replicas. Every node keeps a replica of every CRDT entity of the app, built from the CRDT
// delta topics it follows (all of their partitions, whoever owns them), so they live beside the
// partition's images but are not part of them: DropPartition keeps them. Each replica holds
// exactly the merge of the deltas read up to the stored offsets; this package stores the
// encoded state as it is given (crdtlog's encoding) and never interprets it.

// CrdtReplica is one entity's encoded replica state; a nil State deletes the replica.
type CrdtReplica struct {
	PersistenceID string
	EntityID      string
	State         []byte
}

func appendCrdtKey(dst []byte, p int32, pid, entityID string) []byte {
	dst = appendPartition(dst, p)
	dst = append(dst, tagCrdt)
	dst = appendEscaped(dst, pid)
	return appendEscaped(dst, entityID)
}

func crdtOffsetKey(p int32, topic string) []byte {
	k := appendPartition(nil, p)
	k = append(k, tagCrdtOff)
	return append(k, topic...)
}

// LoadCrdt returns an entity's encoded replica, and false when there is none.
func (s *Store) LoadCrdt(p int32, pid, entityID string) ([]byte, bool, error) {
	if err := checkPartition(p); err != nil {
		return nil, false, err
	}
	if err := s.begin(); err != nil {
		return nil, false, err
	}
	defer s.mu.RUnlock()
	v, closer, err := s.db.Get(appendCrdtKey(nil, p, pid, entityID))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("partition %d: load CRDT %s/%q: %w", p, pid, entityID, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// ApplyCrdt stores replicas of partition p and the next offsets of the delta topics they
// reflect (topic → next offset of its partition p), in one batch.
func (s *Store) ApplyCrdt(p int32, reps []CrdtReplica, next map[string]int64) error {
	if err := checkPartition(p); err != nil {
		return err
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	b := s.db.NewBatch()
	defer b.Close()
	for _, r := range reps {
		k := appendCrdtKey(nil, p, r.PersistenceID, r.EntityID)
		var err error
		if r.State == nil {
			err = b.Delete(k, nil)
		} else {
			err = b.Set(k, r.State, nil)
		}
		if err != nil {
			return err
		}
	}
	for topic, off := range next {
		if err := b.Set(crdtOffsetKey(p, topic), binary.BigEndian.AppendUint64(nil, uint64(off)), nil); err != nil {
			return err
		}
	}
	if err := s.db.Apply(b, s.wo); err != nil {
		return fmt.Errorf("partition %d: apply CRDT replicas: %w", p, err)
	}
	return nil
}

// CrdtOffsets returns the next offset of every CRDT delta topic partition the replicas reflect:
// topic → partition → offset.
func (s *Store) CrdtOffsets() (map[string]map[int32]int64, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	it, err := s.db.NewIter(&pebble.IterOptions{UpperBound: []byte{0x80}})
	if err != nil {
		return nil, err
	}
	out := map[string]map[int32]int64{}
	for valid := it.First(); valid; {
		k := it.Key()
		if len(k) < 5 {
			_ = it.Close()
			return nil, fmt.Errorf("%w: short key %x", ErrCorrupt, k)
		}
		p := int32(binary.BigEndian.Uint32(k))
		switch {
		case k[4] < tagCrdtOff:
			valid = it.SeekGE(append(appendPartition(nil, p), tagCrdtOff))
			continue
		case k[4] > tagCrdtOff:
			if p == 1<<31-1 {
				valid = false
				continue
			}
			_, next := partitionBounds(p)
			valid = it.SeekGE(next)
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil || len(v) != 8 {
			_ = it.Close()
			return nil, fmt.Errorf("%w: CRDT offset %x", ErrCorrupt, k)
		}
		topic := string(k[5:])
		if out[topic] == nil {
			out[topic] = map[int32]int64{}
		}
		out[topic][p] = int64(binary.BigEndian.Uint64(v))
		valid = it.Next()
	}
	return out, it.Close()
}

// CrdtReplicas returns every stored replica of persistence id pid in partition p.
func (s *Store) CrdtReplicas(p int32, pid string) ([]CrdtReplica, error) {
	if err := checkPartition(p); err != nil {
		return nil, err
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	lower := appendEscaped(append(appendPartition(nil, p), tagCrdt), pid)
	upper := append([]byte(nil), lower...)
	upper[len(upper)-1]++ // the terminator 0x00 0x01 → 0x00 0x02 bounds exactly its extensions
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	var out []CrdtReplica
	for valid := it.First(); valid; valid = it.Next() {
		id, _, err := decodeEscaped(it.Key()[len(lower):])
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("partition %d: %w", p, err)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		out = append(out, CrdtReplica{PersistenceID: pid, EntityID: id, State: append([]byte(nil), v...)})
	}
	return out, it.Close()
}
