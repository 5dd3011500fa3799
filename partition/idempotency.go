package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// LoadIdempotency returns the remembered outcome of the command with idempotency key key of an
// entity, and false when there is none. An entry past its expiry is still returned (until
// ExpireIdempotency removes it): whether it still deduplicates is the caller's policy.
func (s *Store) LoadIdempotency(p int32, pid, entityID, key string) (*kstatev1.IdempotencyRecord, bool, error) {
	if err := checkPartition(p); err != nil {
		return nil, false, err
	}
	if err := s.begin(); err != nil {
		return nil, false, err
	}
	defer s.mu.RUnlock()
	v, closer, err := s.db.Get(appendIdemKey(nil, p, pid, entityID, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("partition %d: load idempotency key of %s/%q: %w", p, pid, entityID, err)
	}
	defer closer.Close()
	ir := &kstatev1.IdempotencyRecord{}
	if err := proto.Unmarshal(v, ir); err != nil {
		return nil, false, fmt.Errorf("partition %d: load idempotency key of %s/%q: %w: %v", p, pid, entityID, ErrCorrupt, err)
	}
	return ir, true, nil
}

// ExpireIdempotency removes up to limit remembered outcomes of p whose expiry is at or before
// now, oldest first, and returns how many expiry entries it consumed. An entry that a later
// record with the same key replaced (and so expires later) is kept. It is serialised with Apply.
func (s *Store) ExpireIdempotency(p int32, now time.Time, limit int) (int, error) {
	if err := checkPartition(p); err != nil {
		return 0, err
	}
	if err := s.begin(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	w := s.writer(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	prefix := append(appendPartition(nil, p), tagExpiry)
	// Every entry expiring at or before now: below the first key of the next nanosecond.
	upper := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(max(now.UnixNano(), 0))+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return 0, fmt.Errorf("partition %d: expire idempotency keys: %w", p, err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	n := 0
	for valid := it.First(); valid && n < limit; valid = it.Next() {
		k := it.Key()
		if len(k) < len(prefix)+8 {
			_ = it.Close()
			return 0, fmt.Errorf("partition %d: %w: short expiry key %x", p, ErrCorrupt, k)
		}
		n++
		suffix := k[len(prefix)+8:]
		idem := append(append(appendPartition(nil, p), tagIdem), suffix...)
		if err := s.deleteIfExpired(b, idem, now); err != nil {
			_ = it.Close()
			return 0, fmt.Errorf("partition %d: expire idempotency keys: %w", p, err)
		}
		if err := b.Delete(k, nil); err != nil {
			_ = it.Close()
			return 0, err
		}
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("partition %d: expire idempotency keys: %w", p, err)
	}
	if n == 0 {
		return 0, nil
	}
	if err := s.db.Apply(b, s.wo); err != nil {
		return 0, fmt.Errorf("partition %d: expire idempotency keys: %w", p, err)
	}
	return n, nil
}

// deleteIfExpired adds the deletion of the outcome under key to b unless a later record with the
// same key replaced it with one that expires after now.
func (s *Store) deleteIfExpired(b *pebble.Batch, key []byte, now time.Time) error {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	ir := &kstatev1.IdempotencyRecord{}
	uerr := proto.Unmarshal(v, ir)
	_ = closer.Close()
	if uerr == nil && ir.GetExpiresAt().AsTime().After(now) {
		return nil
	}
	return b.Delete(key, nil)
}

// IdempotencyFootprint counts p's remembered outcomes and the bytes of their Pebble entries (keys
// and values, the expiry index included), before Pebble's compression.
func (s *Store) IdempotencyFootprint(p int32) (entries int, bytes int64, err error) {
	if err := checkPartition(p); err != nil {
		return 0, 0, err
	}
	if err := s.begin(); err != nil {
		return 0, 0, err
	}
	defer s.mu.RUnlock()
	lower := append(appendPartition(nil, p), tagIdem)
	upper := append(appendPartition(nil, p), tagExpiry+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, 0, err
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return 0, 0, err
		}
		if it.Key()[4] == tagIdem {
			entries++
		}
		bytes += int64(len(it.Key()) + len(v))
	}
	return entries, bytes, it.Close()
}

// IdempotencyKeys returns the keys of the outcomes remembered for one entity, expired ones
// included, or complete false when it has more than limit (then only the first limit are
// returned). An active entity loads them once so that a command with a new key needs no lookup.
func (s *Store) IdempotencyKeys(p int32, pid, entityID string, limit int) (keys []string, complete bool, err error) {
	if err := checkPartition(p); err != nil {
		return nil, false, err
	}
	if err := s.begin(); err != nil {
		return nil, false, err
	}
	defer s.mu.RUnlock()
	lower := append(appendPartition(nil, p), tagIdem)
	lower = appendEscaped(appendEscaped(lower, pid), entityID)
	// The prefix ends with the terminator 0x00 0x01; 0x00 0x02 bounds exactly its extensions.
	upper := append([]byte(nil), lower...)
	upper[len(upper)-1]++
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, false, err
	}
	for valid := it.First(); valid; valid = it.Next() {
		if len(keys) == limit {
			return keys, false, it.Close()
		}
		key, _, err := decodeEscaped(it.Key()[len(lower):])
		if err != nil {
			_ = it.Close()
			return nil, false, fmt.Errorf("partition %d: %w", p, err)
		}
		keys = append(keys, key)
	}
	return keys, true, it.Close()
}
