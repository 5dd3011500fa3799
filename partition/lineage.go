package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Lineage says what a partition's stored image was built from, so a node that regains a partition
// can tell whether its image may still be continued from its checkpoints (RELIABILITY F7, issue:
// deleted value entities came back):
//
//   - TopicIDs is the incarnation (Kafka topic id) of every topic the image was read from. A topic
//     deleted and created again under the same name has a new id, and offsets of the old one mean
//     nothing in it.
//   - Followed is a time at which the image was known to be in step with the log. Compaction may
//     remove a tombstone delete.retention.ms after it was written; a tombstone written after
//     Followed can only be gone once Followed+delete.retention.ms has passed, so an image whose
//     Followed is younger than that has missed no delete.
type Lineage struct {
	TopicIDs map[string][16]byte
	Followed time.Time
}

// lineageVersion is the first byte of an encoded Lineage.
const lineageVersion = 1

func lineageKey(p int32) []byte {
	return append(appendPartition(nil, p), tagLineage)
}

func (l Lineage) encode() []byte {
	topics := make([]string, 0, len(l.TopicIDs))
	for t := range l.TopicIDs {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	b := []byte{lineageVersion}
	b = binary.BigEndian.AppendUint64(b, uint64(l.Followed.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(len(topics)))
	for _, t := range topics {
		id := l.TopicIDs[t]
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
		b = append(b, id[:]...)
	}
	return b
}

func decodeLineage(b []byte) (Lineage, error) {
	bad := func(what string) (Lineage, error) {
		return Lineage{}, fmt.Errorf("%w: lineage: %s", ErrCorrupt, what)
	}
	if len(b) < 9 || b[0] != lineageVersion {
		return bad("unknown version or short")
	}
	l := Lineage{Followed: time.UnixMilli(int64(binary.BigEndian.Uint64(b[1:9]))), TopicIDs: map[string][16]byte{}}
	b = b[9:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > 1<<16 {
		return bad("topic count")
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		tl, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < tl+16 {
			return bad("topic entry")
		}
		b = b[k:]
		t := string(b[:tl])
		var id [16]byte
		copy(id[:], b[tl:tl+16])
		l.TopicIDs[t] = id
		b = b[tl+16:]
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return l, nil
}

// Lineage returns p's stored lineage; ok is false when none is stored (a new partition, or one
// written before lineages existed).
func (s *Store) Lineage(p int32) (l Lineage, ok bool, err error) {
	if err := checkPartition(p); err != nil {
		return Lineage{}, false, err
	}
	if err := s.begin(); err != nil {
		return Lineage{}, false, err
	}
	defer s.mu.RUnlock()
	v, closer, err := s.db.Get(lineageKey(p))
	if errors.Is(err, pebble.ErrNotFound) {
		return Lineage{}, false, nil
	}
	if err != nil {
		return Lineage{}, false, fmt.Errorf("partition %d: read lineage: %w", p, err)
	}
	defer closer.Close()
	l, err = decodeLineage(v)
	if err != nil {
		return Lineage{}, false, fmt.Errorf("partition %d: %w", p, err)
	}
	return l, true, nil
}

// SetLineage stores p's lineage. Call it only with a Followed at which the image really was in
// step with the log (earlier is always safe).
func (s *Store) SetLineage(p int32, l Lineage) error {
	if err := checkPartition(p); err != nil {
		return err
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	w := s.writer(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := s.db.Set(lineageKey(p), l.encode(), s.wo); err != nil {
		return fmt.Errorf("partition %d: write lineage: %w", p, err)
	}
	return nil
}

// Continuable decides whether an image with the stored lineage (ok false: none) may be continued
// from its checkpoints, given the topics' current ids and, per compacted topic, its
// delete.retention.ms; now is the current time. It returns "" when it may, else why not.
// Topics the image never read (new ones) are fine: their checkpoints are absent.
func Continuable(stored Lineage, ok bool, hasCheckpoints bool, ids map[string][16]byte, deleteRetention map[string]time.Duration, now time.Time) string {
	if !hasCheckpoints {
		return ""
	}
	if !ok {
		return "the image has no lineage (written by an older version)"
	}
	for t, id := range ids {
		if old, seen := stored.TopicIDs[t]; seen && old != id {
			return fmt.Sprintf("topic %s was deleted and created again (new topic id)", t)
		}
	}
	for t, dr := range deleteRetention {
		if _, seen := stored.TopicIDs[t]; !seen {
			continue
		}
		// A margin for clock differences between this node and the brokers.
		margin := min(dr/10, time.Minute)
		if age := now.Sub(stored.Followed); age > dr-margin {
			return fmt.Sprintf("the image last followed the log %v ago, longer than %s's delete.retention.ms (%v): compaction may have removed deletes it never saw", age.Round(time.Second), t, dr)
		}
	}
	return ""
}
