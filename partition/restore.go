package partition

import (
	"fmt"
	"sort"
)

// TopicProgress is the restore position of one topic of a partition.
type TopicProgress struct {
	Topic string
	// Position is the next offset to read.
	Position int64
	// End is the end offset captured after fencing: read_committed, this is the last stable
	// offset, so every committed record below it is visible.
	End int64
}

// Done reports whether every record below End has been read.
func (t TopicProgress) Done() bool { return t.Position >= t.End }

// RestoreProgress is the pure state machine of a partition restore (DESIGN §3 step 2): per topic,
// the target end offset and the position reached. It never assumes that the next record is at
// offset+1 — control markers, aborted transactions and compaction leave gaps (RELIABILITY F5) —
// so a topic is done only when its position reaches its end, whether by records or by an explicit
// AdvanceTo from the consumer's fetch position. A RestoreProgress is owned by one goroutine.
type RestoreProgress struct {
	topics map[string]*TopicProgress
}

// NewRestoreProgress starts a restore. ends holds, for every topic to restore, the end offset
// captured after fencing. positions holds the stored checkpoints (Store.Offsets); a topic absent
// from positions starts at 0. Checkpoints of topics absent from ends are ignored. A checkpoint
// past its topic's end is a *CheckpointAheadError: the stored state reflects records the broker no
// longer has (a truncated or recreated topic) and must be dropped before restoring.
func NewRestoreProgress(positions, ends map[string]int64) (*RestoreProgress, error) {
	r := &RestoreProgress{topics: make(map[string]*TopicProgress, len(ends))}
	for topic, end := range ends {
		if end < 0 {
			return nil, fmt.Errorf("partition: restore: negative end offset %d for %s", end, topic)
		}
		pos := positions[topic]
		if pos < 0 {
			return nil, fmt.Errorf("partition: restore: negative position %d for %s", pos, topic)
		}
		if pos > end {
			return nil, &CheckpointAheadError{Topic: topic, Checkpoint: pos, End: end}
		}
		r.topics[topic] = &TopicProgress{Topic: topic, Position: pos, End: end}
	}
	return r, nil
}

func (r *RestoreProgress) topic(topic string) (*TopicProgress, error) {
	t, ok := r.topics[topic]
	if !ok {
		return nil, fmt.Errorf("partition: restore: topic %q is not being restored", topic)
	}
	return t, nil
}

// Observe records that a record at offset was read from topic: the position becomes offset+1 —
// the next offset to read, which is not a claim that a record exists there. An offset below the
// position is a redelivery and an *OffsetError.
func (r *RestoreProgress) Observe(topic string, offset int64) error {
	t, err := r.topic(topic)
	if err != nil {
		return err
	}
	if offset < t.Position {
		return &OffsetError{Topic: topic, Checkpoint: t.Position, Offset: offset}
	}
	t.Position = offset + 1
	return nil
}

// AdvanceTo moves topic's position to next when next is ahead of it; use it when the consumer
// reports a fetch position past records it did not return (transaction markers, aborted data,
// compacted gaps). A lower next is ignored.
func (r *RestoreProgress) AdvanceTo(topic string, next int64) error {
	t, err := r.topic(topic)
	if err != nil {
		return err
	}
	if next > t.Position {
		t.Position = next
	}
	return nil
}

// Done reports whether every topic's position has reached its end offset.
func (r *RestoreProgress) Done() bool {
	for _, t := range r.topics {
		if !t.Done() {
			return false
		}
	}
	return true
}

// Topics returns every topic's progress, sorted by topic.
func (r *RestoreProgress) Topics() []TopicProgress {
	out := make([]TopicProgress, 0, len(r.topics))
	for _, t := range r.topics {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

// Pending returns the progress of the topics not done yet, sorted by topic.
func (r *RestoreProgress) Pending() []TopicProgress {
	all := r.Topics()
	out := all[:0]
	for _, t := range all {
		if !t.Done() {
			out = append(out, t)
		}
	}
	return out
}

// Remaining returns the number of offsets left to read over all topics, an upper bound on the
// records left (gaps make it an overestimate).
func (r *RestoreProgress) Remaining() int64 {
	var n int64
	for _, t := range r.topics {
		if !t.Done() {
			n += t.End - t.Position
		}
	}
	return n
}

// Positions returns a copy of every topic's position, ready to pass to Store.Apply as the new
// checkpoints together with the records read so far.
func (r *RestoreProgress) Positions() map[string]int64 {
	out := make(map[string]int64, len(r.topics))
	for name, t := range r.topics {
		out[name] = t.Position
	}
	return out
}
