package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrOffsetOutOfRange is wrapped when a read of a topic that is not compacted-only starts
// before the partition's log start offset (records removed by retention or DeleteRecords), or
// when a read starts after the partition's end.
var ErrOffsetOutOfRange = errors.New("offset out of range")

// TopicPartitionFrom names one partition to read and the offset to start at. A negative From
// starts at the partition's log start offset.
type TopicPartitionFrom struct {
	Topic     string
	Partition int32
	From      int64
}

// Fetch sizes of the restore path: large, since a restore wants throughput.
const (
	readMaxBytes          = 32 << 20
	readPartitionMaxBytes = 8 << 20
	readMaxWait           = 500 * time.Millisecond
)

// ReadToEnd reads each of parts read_committed from its From offset up to the partition's end
// as it was when ReadToEnd started, calling fn for every committed record in offset order per
// partition (partitions are interleaved). It is the restore path (RELIABILITY.md F1, F5):
//
//   - The end of each partition is its last stable offset (ListOffsets, read_committed), taken
//     once at the start; records committed later are not delivered.
//   - The read is done when the fetch position of every partition is at or past that end. The
//     position advances over control markers, aborted records and compaction gaps the way a
//     consumer's does (by each batch's last offset), never by "last record offset + 1".
//   - Aborted records are never delivered.
//
// Each topic may appear once in parts. It returns, per topic, the offset to resume from (the
// captured end). A missing topic or partition is an error wrapping ErrTopicNotFound; a From
// after the end is an error wrapping ErrOffsetOutOfRange. A From (or a position during the
// read) below the log start offset continues at the log start when the topic's cleanup.policy is
// compact only, since compaction removes only superseded records; for any other topic records
// would be missing, so it is an error wrapping ErrOffsetOutOfRange (pass a negative From to
// read what is left). An error from fn stops the read and is returned as is.
func ReadToEnd(ctx context.Context, cfg Config, parts []TopicPartitionFrom, fn func(Record) error) (map[string]int64, error) {
	return ReadToEndProgress(ctx, cfg, parts, nil, fn)
}

// ReadProgress is told how far a read is: done of total offsets passed, summed over the read's
// partitions. Offsets rather than records, because only offsets are known before the read:
// total is the distance from each partition's start to its captured end, which also counts
// transaction markers, aborted records and compaction gaps; done moves over those too, and
// equals total when the read completes.
type ReadProgress func(done, total int64)

// ReadToEndProgress is ReadToEnd, calling progress (when not nil) on the caller's goroutine once
// the ends are known, after the records of every fetch round were handed to fn, and at the end.
func ReadToEndProgress(ctx context.Context, cfg Config, parts []TopicPartitionFrom, progress ReadProgress, fn func(Record) error) (map[string]int64, error) {
	if progress == nil {
		progress = func(int64, int64) {}
	}
	next, err := readToEnd(ctx, cfg, parts, progress, fn)
	var fe fnError
	if errors.As(err, &fe) {
		return nil, fe.err // the caller's own error, untouched
	}
	return next, cfg.hint(err)
}

// fnError carries an error returned by ReadToEnd's fn past the connection hint.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

func readToEnd(ctx context.Context, cfg Config, parts []TopicPartitionFrom, progress ReadProgress, fn func(Record) error) (map[string]int64, error) {
	next := make(map[string]int64, len(parts))
	if len(parts) == 0 {
		return next, nil
	}
	seen := make(map[string]bool, len(parts))
	var topics []string
	for _, tp := range parts {
		if seen[tp.Topic] {
			return nil, fmt.Errorf("read to end: topic %q is listed twice; read one partition per topic", tp.Topic)
		}
		seen[tp.Topic] = true
		topics = append(topics, tp.Topic)
	}
	cfg = cfg.withDefaults()
	cl, err := cfg.newClientAs(roleRestore)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	r := &reader{cl: cl, adm: adm, topics: topics}
	if err := r.refreshMetadata(ctx); err != nil {
		return nil, fmt.Errorf("read to end: %w", err)
	}
	for _, tp := range parts {
		td := r.meta[tp.Topic]
		if _, ok := td.Partitions[tp.Partition]; !ok {
			return nil, fmt.Errorf("read to end: topic %q has %d partitions, no partition %d: %w", tp.Topic, len(td.Partitions), tp.Partition, ErrTopicNotFound)
		}
	}
	ends, err := listOffsets(ctx, func(ctx context.Context) (kadm.ListedOffsets, error) {
		return adm.ListCommittedOffsets(ctx, topics...)
	})
	if err != nil {
		return nil, fmt.Errorf("read to end: last stable offsets: %w", err)
	}
	starts, err := listOffsets(ctx, func(ctx context.Context) (kadm.ListedOffsets, error) {
		return adm.ListStartOffsets(ctx, topics...)
	})
	if err != nil {
		return nil, fmt.Errorf("read to end: log start offsets: %w", err)
	}
	for _, tp := range parts {
		end, _ := ends.Lookup(tp.Topic, tp.Partition)
		start, _ := starts.Lookup(tp.Topic, tp.Partition)
		from := tp.From
		if from < 0 {
			from = start.Offset
		}
		if from < start.Offset && r.compactOnly(ctx, tp.Topic) {
			from = start.Offset
		}
		if from < start.Offset || from > end.Offset {
			return nil, fmt.Errorf("read to end: %s/%d: start offset %d is outside the log [%d, %d]: %w",
				tp.Topic, tp.Partition, tp.From, start.Offset, end.Offset, ErrOffsetOutOfRange)
		}
		next[tp.Topic] = end.Offset
		if from < end.Offset {
			r.parts = append(r.parts, &readPart{topic: tp.Topic, partition: tp.Partition, from: from, pos: from, end: end.Offset})
			r.total += end.Offset - from
		}
	}
	progress(0, r.total)
	if len(r.parts) == 0 {
		return next, nil
	}

	// One fetcher goroutine, owned here, runs ahead of fn by up to cap(batches) fetch rounds.
	fctx, cancel := context.WithCancel(ctx)
	batches := make(chan readRound, 2)
	var fetchErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(batches)
		fetchErr = r.run(fctx, batches)
	}()
	var fnErr error
	for batch := range batches {
		if fnErr != nil {
			continue // drain until the fetcher stops
		}
		for _, rec := range batch.recs {
			if err := fn(rec); err != nil {
				fnErr = err
				cancel()
				break
			}
		}
		if fnErr == nil {
			progress(batch.done, r.total)
		}
	}
	wg.Wait()
	cancel()
	if fnErr != nil {
		return nil, fnError{fnErr}
	}
	if fetchErr != nil {
		return nil, fmt.Errorf("read to end: %w", fetchErr)
	}
	return next, nil
}

// listOffsets runs list until no partition has a retriable error.
func listOffsets(ctx context.Context, list func(context.Context) (kadm.ListedOffsets, error)) (kadm.ListedOffsets, error) {
	backoff := 20 * time.Millisecond
	for {
		lo, err := list(ctx)
		if err == nil {
			err = lo.Error()
		}
		if err == nil {
			return lo, nil
		}
		if !kerr.IsRetriable(err) && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

type readPart struct {
	topic          string
	partition      int32
	from, pos, end int64
}

// readRound is one fetch round's records and the offsets passed once they are handled.
type readRound struct {
	recs []Record
	done int64
}

// reader fetches a fixed set of partitions up to fixed ends with hand-built Fetch requests,
// because only the fetch response tells the true next position (batch last offsets).
type reader struct {
	cl     *kgo.Client
	adm    *kadm.Client
	topics []string
	meta   kadm.TopicDetails
	parts  []*readPart
	total  int64 // offsets from the parts' starts to their ends

	mu      sync.Mutex      // guards compact: fetches of several leaders ask concurrently
	compact map[string]bool // topic → cleanup.policy is compact only; loaded on demand
}

// compactOnly reports whether topic's cleanup.policy is "compact" alone. It asks the broker the
// first time (DescribeConfigs), and answers false when it cannot tell, which keeps the caller
// strict.
func (r *reader) compactOnly(ctx context.Context, topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.compact[topic]; ok {
		return v
	}
	if r.compact == nil {
		r.compact = make(map[string]bool)
	}
	rcs, err := r.adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return false
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		return false
	}
	v := normPolicy(configValue(rc, "cleanup.policy", "delete")) == "compact"
	r.compact[topic] = v
	return v
}

func (r *reader) refreshMetadata(ctx context.Context) error {
	backoff := 20 * time.Millisecond
	for {
		m, err := r.adm.Metadata(ctx, r.topics...)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		var retry error
		for _, t := range r.topics {
			td, ok := m.Topics[t]
			switch {
			case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
				return fmt.Errorf("topic %q: %w", t, ErrTopicNotFound)
			case td.Err != nil && !kerr.IsRetriable(td.Err):
				return fmt.Errorf("metadata of topic %q: %w", t, td.Err)
			case td.Err != nil:
				retry = td.Err
			}
			for _, p := range td.Partitions {
				if p.Leader < 0 || p.Err != nil {
					retry = fmt.Errorf("topic %q partition %d has no leader: %v", t, p.Partition, p.Err)
				}
			}
		}
		if retry == nil {
			r.meta = m.Topics
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("metadata: %w (last error: %v)", ctx.Err(), retry)
		case <-time.After(backoff):
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

// run fetches rounds until every partition reaches its end, sending each round's records.
func (r *reader) run(ctx context.Context, out chan<- readRound) error {
	backoff := 10 * time.Millisecond
	decompressor := kgo.DefaultDecompressor()
	for {
		byLeader := make(map[int32][]*readPart)
		for _, p := range r.parts {
			if p.pos < p.end {
				leader := r.meta[p.topic].Partitions[p.partition].Leader
				byLeader[leader] = append(byLeader[leader], p)
			}
		}
		if len(byLeader) == 0 {
			return nil
		}
		type result struct {
			recs     []Record
			progress bool
			stale    bool
			err      error
		}
		results := make(chan result, len(byLeader))
		for leader, ps := range byLeader {
			go func() {
				recs, progress, stale, err := r.fetch(ctx, leader, ps, decompressor)
				results <- result{recs, progress, stale, err}
			}()
		}
		var (
			recs     []Record
			progress bool
			stale    bool
			firstErr error
		)
		for range byLeader {
			res := <-results
			recs = append(recs, res.recs...)
			progress = progress || res.progress
			stale = stale || res.stale
			if res.err != nil && firstErr == nil {
				firstErr = res.err
			}
		}
		if firstErr != nil {
			return firstErr
		}
		if len(recs) > 0 || progress {
			select {
			case out <- readRound{recs: recs, done: r.done()}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if stale {
			if err := r.refreshMetadata(ctx); err != nil {
				return err
			}
		}
		if progress {
			backoff = 10 * time.Millisecond
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if backoff < 500*time.Millisecond {
			backoff *= 2
		}
	}
}

// done is how many offsets the parts' positions have passed.
func (r *reader) done() int64 {
	var d int64
	for _, p := range r.parts {
		d += min(p.pos, p.end) - p.from
	}
	return d
}

// fetch issues one Fetch to leader for ps and advances their positions. stale reports a
// partition error that a metadata refresh should fix (leadership moved, topic still loading).
func (r *reader) fetch(ctx context.Context, leader int32, ps []*readPart, dec kgo.Decompressor) (recs []Record, progress, stale bool, err error) {
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(readMaxWait.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = readMaxBytes
	req.IsolationLevel = 1
	req.SessionID = 0
	req.SessionEpoch = -1
	byTopic := make(map[string][]*readPart)
	for _, p := range ps {
		byTopic[p.topic] = append(byTopic[p.topic], p)
	}
	names := make([]string, 0, len(byTopic))
	for t := range byTopic {
		names = append(names, t)
	}
	sort.Strings(names)
	idToName := make(map[[16]byte]string, len(names))
	find := make(map[string]map[int32]*readPart, len(names))
	for _, t := range names {
		td := r.meta[t]
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = t
		rt.TopicID = td.ID
		idToName[td.ID] = t
		find[t] = make(map[int32]*readPart)
		for _, p := range byTopic[t] {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition = p.partition
			rp.FetchOffset = p.pos
			rp.CurrentLeaderEpoch = td.Partitions[p.partition].LeaderEpoch
			rp.LogStartOffset = -1
			rp.PartitionMaxBytes = readPartitionMaxBytes
			rt.Partitions = append(rt.Partitions, rp)
			find[t][p.partition] = p
		}
		req.Topics = append(req.Topics, rt)
	}
	kresp, err := r.cl.Broker(int(leader)).Request(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, false, ctx.Err()
		}
		// The broker may be gone: refresh metadata and retry.
		return nil, false, true, nil
	}
	resp := kresp.(*kmsg.FetchResponse)
	if e := kerr.ErrorForCode(resp.ErrorCode); e != nil {
		if kerr.IsRetriable(e) {
			return nil, false, true, nil
		}
		return nil, false, false, fmt.Errorf("fetch from broker %d: %w", leader, e)
	}
	for i := range resp.Topics {
		rt := &resp.Topics[i]
		name := rt.Topic
		if name == "" {
			name = idToName[rt.TopicID]
		}
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			p := find[name][rp.Partition]
			if p == nil {
				continue
			}
			if e := kerr.ErrorForCode(rp.ErrorCode); e != nil {
				switch {
				case errors.Is(e, kerr.OffsetOutOfRange) && rp.LogStartOffset > p.pos && r.compactOnly(ctx, p.topic):
					// Compaction moved the log start past us mid-read (kfake does); nothing
					// below it is needed.
					p.pos = min(rp.LogStartOffset, p.end)
					progress = true
					continue
				case errors.Is(e, kerr.OffsetOutOfRange):
					return nil, false, false, fmt.Errorf("%s/%d: fetch at %d (log start %d, high watermark %d): %w",
						p.topic, p.partition, p.pos, rp.LogStartOffset, rp.HighWatermark, ErrOffsetOutOfRange)
				case kerr.IsRetriable(e) || errors.Is(e, kerr.UnknownTopicID):
					stale = true
					continue
				default:
					return nil, false, false, fmt.Errorf("%s/%d: fetch: %w", p.topic, p.partition, e)
				}
			}
			fp, nextOffset := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				Offset:         p.pos,
				IsolationLevel: kgo.ReadCommitted(),
				Topic:          p.topic,
				Partition:      p.partition,
			}, rp, dec, nil)
			if fp.Err != nil {
				return nil, false, false, fmt.Errorf("%s/%d: decode fetch at %d: %w", p.topic, p.partition, p.pos, fp.Err)
			}
			for _, kr := range fp.Records {
				if kr.Offset >= p.pos && kr.Offset < p.end {
					recs = append(recs, fromKgo(kr))
				}
			}
			if nextOffset > p.pos {
				p.pos = nextOffset
				progress = true
			}
		}
	}
	return recs, progress, stale, nil
}

// Follow reads topic read_committed from the start of every partition and calls fn for each
// record, until ctx is done (then it returns ctx.Err()) or a non-retriable error occurs. It is
// how a node keeps the owners map. fn runs on Follow's goroutine; records of one partition
// arrive in offset order. A missing topic is an error wrapping ErrTopicNotFound.
func Follow(ctx context.Context, cfg Config, topic string, fn func(Record)) error {
	return cfg.hint(follow(ctx, cfg, topic, fn))
}

func follow(ctx context.Context, cfg Config, topic string, fn func(Record)) error {
	cfg = cfg.withDefaults()
	cl, err := cfg.newClientAs(roleOwners,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(time.Second),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	r := &reader{cl: cl, adm: kadm.NewClient(cl), topics: []string{topic}}
	if err := r.refreshMetadata(ctx); err != nil {
		return fmt.Errorf("follow %s: %w", topic, err)
	}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("follow %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(kr *kgo.Record) { fn(fromKgo(kr)) })
	}
}
