package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/internal/logging"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// schemaVersion is the key layout written by this code (see keys.go).
const schemaVersion = "1"

// Store is a node's partition storage: one Pebble database holding, per partition, the entity
// images needed to activate entities without reading Kafka and the Kafka offsets they reflect.
//
// All methods are safe for concurrent use. Apply and DropPartition on the same partition are
// serialised; reads see a consistent view of the last applied batch.
type Store struct {
	db     *pebble.DB
	cache  *pebble.Cache
	logger hclog.Logger
	wo     *pebble.WriteOptions

	// mu guards closed; it is read-locked for the duration of every operation so that Close waits
	// for them.
	mu struct {
		sync.RWMutex
		closed bool
	}
	// metaCacheSize bounds each partition's meta cache; 0 disables it.
	metaCacheSize int
	// writers holds each partition's writer state, created on first use.
	writers struct {
		sync.Mutex
		m map[int32]*writer
	}
}

// writer is the state of one partition's writers: Apply and DropPartition hold mu.
type writer struct {
	mu sync.Mutex
	// metas caches the committed meta of recently written entities, so that a restore does not
	// read every entity's meta back from Pebble on each batch. Guarded by mu; filled only after a
	// batch committed; cleared by DropPartition.
	metas map[entityRef]Meta
	// arena and ops are the last Apply's buffers, reused by the next one. Guarded by mu.
	arena []byte
	ops   []op
}

// maxKeptArena bounds the buffer a partition's writer keeps between Apply calls.
const maxKeptArena = 4 << 20

// keep saves a's buffers for the next Apply unless they grew too large.
func (w *writer) keep(a *applier) {
	if cap(a.arena) <= maxKeptArena {
		w.arena, w.ops = a.arena[:0], a.ops[:0]
	} else {
		w.arena, w.ops = nil, nil
	}
}

// remember caches the committed metas of an Apply, evicting random entries beyond max.
func (w *writer) remember(a *applier, max int) {
	if max <= 0 {
		return
	}
	if w.metas == nil {
		w.metas = make(map[entityRef]Meta, min(max, 1024))
	}
	for _, ref := range a.order {
		w.metas[ref] = a.entities[ref].meta
	}
	for ref := range w.metas { // map iteration starts at a random entry
		if len(w.metas) <= max {
			break
		}
		delete(w.metas, ref)
	}
}

// EventSourcedImage is what an event-sourced entity is activated from: the latest snapshot and
// the events after it.
type EventSourcedImage struct {
	// Snapshot is the latest snapshot, nil if none.
	Snapshot *kstatev1.StoredSnapshot
	// Events are the events after the snapshot, in ascending sequence, without gaps.
	Events []*kstatev1.StoredEvent
	// LastSequence is the highest sequence of the entity (of the last event, or of the snapshot);
	// 0 for an entity that has none.
	LastSequence int64
}

// Open opens (or creates) the store in cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := logging.OrDiscard(cfg.Logger).Named("partition")
	cacheSize := cfg.CacheSize
	if cacheSize == 0 {
		cacheSize = DefaultCacheSize
	}
	memTableSize := cfg.MemTableSize
	if memTableSize == 0 {
		memTableSize = DefaultMemTableSize
	}
	fs := cfg.FS
	if fs == nil {
		fs = vfs.Default
	}
	cache := pebble.NewCache(cacheSize)
	opts := &pebble.Options{
		FS:                 fs,
		Cache:              cache,
		MemTableSize:       memTableSize,
		Logger:             pebbleLogger{l: logger.Named("pebble")},
		EventListener:      eventListener(logger.Named("pebble")),
		FormatMajorVersion: pebble.FormatNewest,
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("partition: open %s: %w", cfg.Dir, err)
	}
	s := &Store{db: db, cache: cache, logger: logger, wo: pebble.NoSync}
	if cfg.Sync {
		s.wo = pebble.Sync
	}
	s.writers.m = make(map[int32]*writer)
	switch {
	case cfg.MetaCacheSize == 0:
		s.metaCacheSize = DefaultMetaCacheSize
	case cfg.MetaCacheSize > 0:
		s.metaCacheSize = cfg.MetaCacheSize
	}
	if err := s.checkSchema(); err != nil {
		_ = db.Close()
		cache.Unref()
		return nil, err
	}
	return s, nil
}

// checkSchema writes the schema version into a new store and rejects a store of another version.
func (s *Store) checkSchema() error {
	v, closer, err := s.db.Get(schemaKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := s.db.Set(schemaKey, []byte(schemaVersion), pebble.Sync); err != nil {
			return fmt.Errorf("partition: write schema version: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("partition: read schema version: %w", err)
	}
	defer closer.Close()
	if string(v) != schemaVersion {
		return fmt.Errorf("%w: store has schema %q, this build writes %q", ErrIncompatibleSchema, v, schemaVersion)
	}
	return nil
}

// Close closes the store, waiting for operations in flight. Later calls return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return ErrClosed
	}
	s.mu.closed = true
	err := s.db.Close()
	s.cache.Unref()
	if err != nil {
		return fmt.Errorf("partition: close: %w", err)
	}
	return nil
}

// begin read-locks the store for one operation; the caller must call s.mu.RUnlock when it returns nil.
func (s *Store) begin() error {
	s.mu.RLock()
	if s.mu.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// writer returns p's writer state.
func (s *Store) writer(p int32) *writer {
	s.writers.Lock()
	defer s.writers.Unlock()
	w, ok := s.writers.m[p]
	if !ok {
		w = &writer{}
		s.writers.m[p] = w
	}
	return w
}

func checkPartition(p int32) error {
	if p < 0 {
		return fmt.Errorf("%w: %d", ErrInvalidPartition, p)
	}
	return nil
}

// entityRef names one entity of a partition.
type entityRef struct {
	pid, entityID string
}

// entityState is an Apply's working copy of one entity's meta.
type entityState struct {
	meta    Meta
	stored  Meta // as read from the store
	changed bool
}

// Apply applies recs to partition p in order and moves p's checkpoints, in ONE Pebble batch: the
// stored state and the offsets it reflects change together or not at all (RELIABILITY F7). It is
// used by the restore loop (records read read_committed) and by the processor after its own
// transaction committed; it must never see records of an open transaction.
//
// After Apply, the checkpoint of each topic is the largest of its stored checkpoint, offsets[topic]
// and one past the offset of each of its records. offsets may move a checkpoint past offsets that
// returned no record (transaction markers, compaction gaps), but never below the stored checkpoint
// or below a record of recs: either is an *OffsetError, as is a record below its topic's stored
// checkpoint (it was applied already). Records must belong to p.
//
// A record that breaks the entity's sequence (*SequenceError, RELIABILITY F6) or is malformed
// (ErrMalformedRecord) fails the whole call, wrapped in a *RecordError, and nothing is written.
// Apply calls on one partition are serialised; calls on different partitions run in parallel.
func (s *Store) Apply(p int32, recs []Record, offsets map[string]int64) error {
	if err := checkPartition(p); err != nil {
		return err
	}
	if len(recs) == 0 && len(offsets) == 0 {
		return nil
	}
	if err := s.begin(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	w := s.writer(p)
	w.mu.Lock()
	defer w.mu.Unlock()

	a := applier{s: s, w: w, p: p, stored: map[string]int64{}, next: map[string]int64{}, entities: map[entityRef]*entityState{},
		arena: w.arena[:0], ops: w.ops[:0]}
	defer w.keep(&a)
	for i := range recs {
		if err := a.record(&recs[i]); err != nil {
			return fmt.Errorf("partition %d: apply: %w", p, err)
		}
	}
	if err := a.finish(offsets); err != nil {
		return fmt.Errorf("partition %d: apply: %w", p, err)
	}
	b := s.db.NewBatchWithSize(len(a.arena) + 16*len(a.ops) + 64)
	defer b.Close()
	if err := a.writeTo(b); err != nil {
		return fmt.Errorf("partition %d: apply: %w", p, err)
	}
	if err := s.db.Apply(b, s.wo); err != nil {
		return fmt.Errorf("partition %d: apply: commit batch: %w", p, err)
	}
	w.remember(&a, s.metaCacheSize)
	return nil
}

// applier builds one Apply's batch. It collects the mutations first and writes them to the batch
// sorted by key: Pebble inserts a batch into its memtable skiplist in batch order, and ascending
// keys reuse the previous insertion point instead of searching from the top. The sort is stable,
// so mutations of one key keep their order.
type applier struct {
	s *Store
	w *writer
	p int32
	// stored is the stored checkpoint per topic read so far; next the checkpoint after the records.
	stored, next map[string]int64
	entities     map[entityRef]*entityState
	// order lists entities in first-touch order so metas are written deterministically.
	order []entityRef
	// ops are the mutations; their keys and values live in arena.
	ops   []op
	arena []byte
	key   []byte
}

// op is one mutation: arena[k:v] is the key and arena[v:end] the value; del ignores the value.
type op struct {
	k, v, end int
	del       bool
}

// checkpoint returns topic's stored checkpoint (0 when absent), reading it once.
func (a *applier) checkpoint(topic string) (int64, error) {
	if v, ok := a.stored[topic]; ok {
		return v, nil
	}
	v, err := a.s.getOffset(a.p, topic)
	if err != nil {
		return 0, err
	}
	a.stored[topic] = v
	a.next[topic] = v
	return v, nil
}

func (a *applier) record(rec *Record) error {
	recErr := func(err error) error {
		return &RecordError{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Err: err}
	}
	if rec.Partition != a.p {
		return recErr(fmt.Errorf("%w: record of partition %d applied to %d", ErrInvalidPartition, rec.Partition, a.p))
	}
	if rec.Topic == "" {
		return recErr(fmt.Errorf("%w: no topic", ErrMalformedRecord))
	}
	if rec.Offset < 0 {
		return recErr(fmt.Errorf("%w: negative offset", ErrMalformedRecord))
	}
	if _, err := a.checkpoint(rec.Topic); err != nil {
		return err
	}
	if next := a.next[rec.Topic]; rec.Offset < next {
		return recErr(&OffsetError{Topic: rec.Topic, Partition: a.p, Checkpoint: next, Offset: rec.Offset})
	}
	a.next[rec.Topic] = rec.Offset + 1

	var es *entityState
	meta := Meta{}
	if rec.Kind == Events || rec.Kind == Snapshots {
		var err error
		if es, err = a.entity(rec.PersistenceID, string(rec.Key)); err != nil {
			return err
		}
		meta = es.meta
	}
	eff, err := Step(meta, rec)
	if err != nil {
		return recErr(err)
	}
	if eff.Ignored != "" {
		return nil
	}
	return a.effect(rec.PersistenceID, es, eff)
}

// entity returns the working meta of an entity, reading it on first use. An empty key is left
// for Step to reject.
func (a *applier) entity(pid, entityID string) (*entityState, error) {
	ref := entityRef{pid: pid, entityID: entityID}
	if es, ok := a.entities[ref]; ok {
		return es, nil
	}
	es := &entityState{}
	if m, ok := a.w.metas[ref]; ok {
		es.meta, es.stored = m, m
	} else if entityID != "" {
		a.key = appendMetaKey(a.key[:0], a.p, pid, entityID)
		m, err := a.s.getMeta(a.key)
		if err != nil {
			return nil, err
		}
		es.meta, es.stored = m, m
	}
	a.entities[ref] = es
	a.order = append(a.order, ref)
	return es, nil
}

// effect adds eff's mutations.
func (a *applier) effect(pid string, es *entityState, eff Effect) error {
	switch {
	case eff.Event != nil:
		k := len(a.arena)
		a.arena = appendEventKey(a.arena, a.p, pid, eff.EntityID, eff.Event.Sequence)
		if err := a.set(k, eff.Event); err != nil {
			return err
		}
	case eff.Snapshot != nil:
		k := len(a.arena)
		a.arena = appendSnapshotKey(a.arena, a.p, pid, eff.EntityID)
		if err := a.set(k, eff.Snapshot); err != nil {
			return err
		}
		for seq := eff.DeleteEvents.After + 1; seq <= eff.DeleteEvents.Through; seq++ {
			k := len(a.arena)
			a.arena = appendEventKey(a.arena, a.p, pid, eff.EntityID, seq)
			a.ops = append(a.ops, op{k: k, v: len(a.arena), end: len(a.arena), del: true})
		}
	case eff.Value != nil:
		k := len(a.arena)
		a.arena = appendValueKey(a.arena, a.p, pid, eff.EntityID)
		return a.set(k, eff.Value)
	case eff.DeleteValue:
		k := len(a.arena)
		a.arena = appendValueKey(a.arena, a.p, pid, eff.EntityID)
		a.ops = append(a.ops, op{k: k, v: len(a.arena), end: len(a.arena), del: true})
		return nil
	case eff.Idempotency != nil:
		ir := eff.Idempotency
		k := len(a.arena)
		a.arena = appendIdemKey(a.arena, a.p, ir.GetPersistenceId(), eff.EntityID, ir.GetKey())
		v := len(a.arena)
		a.arena = append(a.arena, eff.RawIdempotency...)
		a.ops = append(a.ops, op{k: k, v: v, end: len(a.arena)})
		k = len(a.arena)
		a.arena = appendExpiryKey(a.arena, a.p, ir.GetExpiresAt().AsTime().UnixNano(), ir.GetPersistenceId(), eff.EntityID, ir.GetKey())
		a.ops = append(a.ops, op{k: k, v: len(a.arena), end: len(a.arena)})
		return nil
	}
	if es != nil && es.meta != eff.Meta {
		es.meta = eff.Meta
		es.changed = true
	}
	return nil
}

// set adds a Set of m under the key that starts at arena[k:] and ends at the arena's end.
func (a *applier) set(k int, m proto.Message) error {
	v := len(a.arena)
	var err error
	a.arena, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(a.arena, m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	a.ops = append(a.ops, op{k: k, v: v, end: len(a.arena)})
	return nil
}

// finish adds the changed metas and checkpoints.
func (a *applier) finish(offsets map[string]int64) error {
	for _, ref := range a.order {
		es := a.entities[ref]
		if !es.changed || es.meta == es.stored {
			continue
		}
		k := len(a.arena)
		a.arena = appendMetaKey(a.arena, a.p, ref.pid, ref.entityID)
		if err := a.set(k, &kstatev1.EntityMeta{LastSequence: es.meta.LastSequence, SnapshotSequence: es.meta.SnapshotSequence}); err != nil {
			return err
		}
	}
	for topic, off := range offsets {
		if topic == "" {
			return fmt.Errorf("%w: checkpoint for an empty topic name", ErrMalformedRecord)
		}
		if _, err := a.checkpoint(topic); err != nil {
			return err
		}
		if next := a.next[topic]; off < next {
			return &OffsetError{Topic: topic, Partition: a.p, Checkpoint: next, Offset: off}
		}
		a.next[topic] = off
	}
	for topic, next := range a.next {
		if next == a.stored[topic] {
			continue
		}
		k := len(a.arena)
		a.arena = append(a.arena, offsetKey(a.p, topic)...)
		v := len(a.arena)
		a.arena = binary.BigEndian.AppendUint64(a.arena, uint64(next))
		a.ops = append(a.ops, op{k: k, v: v, end: len(a.arena)})
	}
	return nil
}

// writeTo writes the mutations to b in key order.
func (a *applier) writeTo(b *pebble.Batch) error {
	arena := a.arena
	slices.SortStableFunc(a.ops, func(x, y op) int {
		return bytes.Compare(arena[x.k:x.v], arena[y.k:y.v])
	})
	for _, o := range a.ops {
		var err error
		if o.del {
			err = b.Delete(arena[o.k:o.v], nil)
		} else {
			err = b.Set(arena[o.k:o.v], arena[o.v:o.end], nil)
		}
		if err != nil {
			return fmt.Errorf("batch: %w", err)
		}
	}
	return nil
}

// getOffset reads topic's checkpoint in p; 0 when absent.
func (s *Store) getOffset(p int32, topic string) (int64, error) {
	v, closer, err := s.db.Get(offsetKey(p, topic))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint of %s: %w", topic, err)
	}
	defer closer.Close()
	return decodeOffset(topic, v)
}

func decodeOffset(topic string, v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: checkpoint of %s has %d bytes", ErrCorrupt, topic, len(v))
	}
	off := int64(binary.BigEndian.Uint64(v))
	if off < 0 {
		return 0, fmt.Errorf("%w: checkpoint of %s is negative", ErrCorrupt, topic)
	}
	return off, nil
}

// getMeta reads the EntityMeta under key; the zero Meta when absent.
func (s *Store) getMeta(key []byte) (Meta, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return Meta{}, nil
	}
	if err != nil {
		return Meta{}, fmt.Errorf("read entity meta: %w", err)
	}
	defer closer.Close()
	var m kstatev1.EntityMeta
	if err := proto.Unmarshal(v, &m); err != nil {
		return Meta{}, fmt.Errorf("%w: entity meta: %v", ErrCorrupt, err)
	}
	return Meta{LastSequence: m.GetLastSequence(), SnapshotSequence: m.GetSnapshotSequence()}, nil
}

// Offsets returns, per topic, the next offset to read for partition p. A topic without a
// checkpoint is absent, which means "read from the start"; nothing is invented.
func (s *Store) Offsets(p int32) (map[string]int64, error) {
	if err := checkPartition(p); err != nil {
		return nil, err
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	lower, upper := offsetBounds(p)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("partition %d: offsets: %w", p, err)
	}
	out := map[string]int64{}
	for valid := it.First(); valid; valid = it.Next() {
		topic := string(it.Key()[len(lower):])
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("partition %d: offsets: %w", p, err)
		}
		off, err := decodeOffset(topic, v)
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("partition %d: offsets: %w", p, err)
		}
		out[topic] = off
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("partition %d: offsets: %w", p, err)
	}
	return out, nil
}

// LoadEventSourced returns the stored image of an event-sourced entity: its snapshot and the
// events after it. An entity with nothing stored has an empty image. The image is checked on the
// way out: events must run without gaps from the snapshot to LastSequence (RELIABILITY F6), else
// the error wraps ErrCorrupt.
func (s *Store) LoadEventSourced(p int32, pid, entityID string) (EventSourcedImage, error) {
	var img EventSourcedImage
	if err := checkPartition(p); err != nil {
		return img, err
	}
	if err := s.begin(); err != nil {
		return img, err
	}
	defer s.mu.RUnlock()
	wrap := func(err error) error {
		return fmt.Errorf("partition %d: load %s/%q: %w", p, pid, entityID, err)
	}
	lower, upper := entityBounds(p, pid, entityID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return img, wrap(err)
	}
	meta, haveMeta, err := readImage(it, len(lower), &img)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return EventSourcedImage{}, wrap(err)
	}
	if err := checkImage(meta, haveMeta, &img); err != nil {
		return EventSourcedImage{}, wrap(err)
	}
	img.LastSequence = meta.LastSequence
	return img, nil
}

// readImage reads the meta, snapshot and events of one entity; keys start with a prefix of
// prefixLen bytes followed by the sub-key kind. Keys sort as meta, snapshot, events by sequence.
func readImage(it *pebble.Iterator, prefixLen int, img *EventSourcedImage) (Meta, bool, error) {
	var meta Meta
	haveMeta := false
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) <= prefixLen {
			return meta, haveMeta, fmt.Errorf("%w: short entity key %x", ErrCorrupt, k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return meta, haveMeta, err
		}
		switch sub := k[prefixLen]; sub {
		case subMeta:
			var m kstatev1.EntityMeta
			if err := proto.Unmarshal(v, &m); err != nil {
				return meta, haveMeta, fmt.Errorf("%w: entity meta: %v", ErrCorrupt, err)
			}
			meta = Meta{LastSequence: m.GetLastSequence(), SnapshotSequence: m.GetSnapshotSequence()}
			haveMeta = true
			if n := meta.LastSequence - meta.SnapshotSequence; n > 0 {
				img.Events = make([]*kstatev1.StoredEvent, 0, min(n, 4096))
			}
		case subSnapshot:
			snap := &kstatev1.StoredSnapshot{}
			if err := proto.Unmarshal(v, snap); err != nil {
				return meta, haveMeta, fmt.Errorf("%w: snapshot: %v", ErrCorrupt, err)
			}
			img.Snapshot = snap
		case subEvent:
			if len(k) != prefixLen+9 {
				return meta, haveMeta, fmt.Errorf("%w: event key %x", ErrCorrupt, k)
			}
			ev := &kstatev1.StoredEvent{}
			if err := proto.Unmarshal(v, ev); err != nil {
				return meta, haveMeta, fmt.Errorf("%w: event: %v", ErrCorrupt, err)
			}
			if seq := int64(binary.BigEndian.Uint64(k[prefixLen+1:])); seq != ev.GetSequence() {
				return meta, haveMeta, fmt.Errorf("%w: event under sequence %d holds sequence %d", ErrCorrupt, seq, ev.GetSequence())
			}
			img.Events = append(img.Events, ev)
		default:
			return meta, haveMeta, fmt.Errorf("%w: unknown entity key kind 0x%02x", ErrCorrupt, sub)
		}
	}
	return meta, haveMeta, it.Error()
}

// checkImage asserts the image invariant of Meta.
func checkImage(meta Meta, haveMeta bool, img *EventSourcedImage) error {
	if !haveMeta {
		if img.Snapshot != nil || len(img.Events) > 0 {
			return fmt.Errorf("%w: snapshot or events without entity meta", ErrCorrupt)
		}
		return nil
	}
	if meta.LastSequence < meta.SnapshotSequence {
		return fmt.Errorf("%w: last sequence %d below snapshot sequence %d", ErrCorrupt, meta.LastSequence, meta.SnapshotSequence)
	}
	switch {
	case meta.SnapshotSequence == 0 && img.Snapshot != nil:
		return fmt.Errorf("%w: snapshot %d not recorded in entity meta", ErrCorrupt, img.Snapshot.GetSequence())
	case meta.SnapshotSequence > 0 && img.Snapshot == nil:
		return fmt.Errorf("%w: snapshot %d missing", ErrCorrupt, meta.SnapshotSequence)
	case img.Snapshot != nil && img.Snapshot.GetSequence() != meta.SnapshotSequence:
		return fmt.Errorf("%w: snapshot %d, entity meta says %d", ErrCorrupt, img.Snapshot.GetSequence(), meta.SnapshotSequence)
	}
	want := meta.SnapshotSequence + 1
	for _, ev := range img.Events {
		if ev.GetSequence() != want {
			return fmt.Errorf("%w: %v", ErrCorrupt, &SequenceError{Want: want, Got: ev.GetSequence()})
		}
		want++
	}
	if want-1 != meta.LastSequence {
		return fmt.Errorf("%w: events end at %d, entity meta says %d", ErrCorrupt, want-1, meta.LastSequence)
	}
	return nil
}

// LoadValue returns the stored value of a value entity, and false when it has none.
func (s *Store) LoadValue(p int32, pid, entityID string) (*kstatev1.StoredValue, bool, error) {
	if err := checkPartition(p); err != nil {
		return nil, false, err
	}
	if err := s.begin(); err != nil {
		return nil, false, err
	}
	defer s.mu.RUnlock()
	v, closer, err := s.db.Get(appendValueKey(nil, p, pid, entityID))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("partition %d: load value %s/%q: %w", p, pid, entityID, err)
	}
	defer closer.Close()
	sv := &kstatev1.StoredValue{}
	if err := proto.Unmarshal(v, sv); err != nil {
		return nil, false, fmt.Errorf("partition %d: load value %s/%q: %w: %v", p, pid, entityID, ErrCorrupt, err)
	}
	return sv, true, nil
}

// DropPartition deletes everything stored for p — images, checkpoints and remembered outcomes,
// not the CRDT replicas — in one range deletion. Use it when a restore must start over or the node gives up p's state.
func (s *Store) DropPartition(p int32) error {
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
	// Forget the cached metas first: if the deletion fails, whether it reached the store is
	// unknown, and the cache must not outlive what it mirrors.
	w.metas = nil
	// Everything but the CRDT replicas (keys from tagCrdt on), which follow the delta topics,
	// not the partition's ownership (see crdt.go).
	lower, _ := partitionBounds(p)
	upper := append(appendPartition(nil, p), tagCrdt)
	if err := s.db.DeleteRange(lower, upper, s.wo); err != nil {
		return fmt.Errorf("partition %d: drop: %w", p, err)
	}
	s.logger.Debug("partition dropped", "partition", p)
	return nil
}

// Partitions returns, ascending, the partitions that have anything stored.
func (s *Store) Partitions() ([]int32, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	it, err := s.db.NewIter(&pebble.IterOptions{UpperBound: []byte{0x80}})
	if err != nil {
		return nil, fmt.Errorf("partition: list partitions: %w", err)
	}
	var out []int32
	for valid := it.First(); valid; {
		k := it.Key()
		if len(k) < 4 {
			_ = it.Close()
			return nil, fmt.Errorf("%w: short key %x", ErrCorrupt, k)
		}
		p := int32(binary.BigEndian.Uint32(k))
		out = append(out, p)
		if p == 1<<31-1 {
			break
		}
		_, next := partitionBounds(p)
		valid = it.SeekGE(next)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("partition: list partitions: %w", err)
	}
	return out, nil
}

var _ io.Closer = (*Store)(nil)
