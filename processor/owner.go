package processor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/partition"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/core"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// request is one command for an entity of a partition this node owns.
type request struct {
	ctx      context.Context
	method   *catalog.Method
	entityID string
	payload  []byte
	md       *cloudstatepb.Metadata
	key      string      // the idempotency key, "" for none (validated)
	done     chan result // buffered(1): whoever finishes the command sends exactly once
	id       core.CmdID  // assigned by the partition loop
	cmdID    string      // the command id its records carry, assigned when its entity takes it
	hash     []byte      // requestHash, computed on first use
}

// dedupBase is what the idempotency keys of r's forwards and side effects derive from: its own
// key, or its unique command id.
func (r *request) dedupBase() string {
	if r.key != "" {
		return r.key
	}
	return "command/" + r.cmdID
}

// result is a command's outcome: the reply payload (bytes of the output message) or an error.
type result struct {
	payload []byte
	md      *cloudstatepb.Metadata
	err     error
}

func (r *request) finish(res result) { r.done <- res }

// write asks the partition to make a command's records durable in a transaction. A write with no
// records is a read: the lease or a barrier transaction proves the node still owns the partition
// (RELIABILITY.md F2).
type write struct {
	recs []broker.Record
	prs  []partition.Record // recs as Pebble records (from admission), applied once committed
	info core.Write         // info.Cmd is the command
	done chan error         // buffered(1)
	span trace.SpanContext  // the command's span (tracing), linked from its commit's
}

// doneNote tells the partition loop that an entity answered its running command; exited means
// the entity's goroutine has stopped (its stream failed).
type doneNote struct {
	cmd    core.CmdID
	exited bool
	e      *entity
}

// txnWork is a transaction for the committer: the core's id and the records of its writes, for
// Kafka and, in the same order, for Pebble.
type txnWork struct {
	id    uint64
	recs  []broker.Record
	prs   []partition.Record
	cmds  int
	links []trace.Link // to the sampled spans of its commands (tracing)
}

type commitOutcome struct {
	id  uint64
	out core.Outcome
	err error
}

// entityKey identifies an active entity within a partition.
type entityKey = core.EntityKey

// owner is the IO shell of one partition this node owns. One goroutine (run) owns the pure core
// (processor/internal/core), which decides everything: dispatch, queues, lease, batching, admission,
// draining, give-up. The shell only moves messages: requests and entity notes in, the core's
// Ready out — start entity goroutines, hand them commands, run transactions on the committer
// goroutine, answer. There are no locks on entity state.
type owner struct {
	n      *Node
	p      int32
	log    hclog.Logger
	prod   *broker.TxnProducer
	in     chan *request
	writes chan *write
	notes  chan doneNote
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // entity goroutines and the committer

	fencedAt time.Time    // when the fence of acquire completed
	meter    restoreMeter // acquisition and restore progress, for the log and the console

	// set by acquire, then used by the committer goroutine only
	maxRecordBytes int
	topicIDs       map[string][16]byte
	retention      map[string]time.Duration // delete.retention.ms of the compacted topics
	stored         partition.Lineage        // the image's lineage found at acquire
	storedOK       bool
	storedCkpt     bool // the image had checkpoints (and was kept)
	lineageAt      time.Time
	sweptAt        time.Time       // when expired idempotency keys were last removed
	deadLetters    []broker.Record // quarantined by the restore, committed by acquire
	stopErr        error           // why run returned, read after done is closed
	done           chan struct{}

	// owned by run
	core     *core.Core
	entities map[entityKey]*entity
	reqs     map[core.CmdID]*request
	pending  map[core.CmdID]*write
	nextID   core.CmdID
}

func newOwner(n *Node, p int32, prod *broker.TxnProducer) *owner {
	ctx, cancel := context.WithCancel(n.ctx)
	return &owner{
		n:        n,
		p:        p,
		log:      n.log.Named("partition").With("partition", p),
		prod:     prod,
		in:       make(chan *request, 4096),
		writes:   make(chan *write, 256),
		notes:    make(chan doneNote, 256),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		entities: make(map[entityKey]*entity),
		reqs:     make(map[core.CmdID]*request),
		pending:  make(map[core.CmdID]*write),
	}
}

// submit hands a request to the partition without blocking. The node calls it with its registry
// lock held, so a partition being removed never receives a request it will not answer.
func (o *owner) submit(r *request) error {
	select {
	case o.in <- r:
		return nil
	default:
		return fmt.Errorf("partition %d has %d commands waiting: %w", o.p, cap(o.in), catalog.ErrOverloaded)
	}
}

// acquire fences the previous owner, publishes this node as the owner, and restores the
// partition's records into Pebble up to the end offsets taken after the fence.
func (o *owner) acquire(ctx context.Context) error {
	start := time.Now()
	rec, err := o.ownerRecord(false)
	if err != nil {
		return err
	}
	if err := o.prod.Acquire(ctx, rec); err != nil {
		return fmt.Errorf("partition %d: fence: %w", o.p, err)
	}
	// An old owner may still answer reads from its lease until ReadLease after this instant; the
	// core answers nothing before that has run out.
	o.fencedAt = time.Now()
	// Publish ownership now rather than after the restore: the transaction must not stay open for
	// as long as a restore may take (it would time out and fence us), and commands routed here
	// early simply wait in o.in until the restore is done.
	// The record produced inside Acquire predates the producer id it obtained; publish it again
	// with the fencing producer id and epoch filled in.
	rec, err = o.ownerRecord(false)
	if err != nil {
		return err
	}
	if _, err := o.prod.Commit(ctx, []broker.Record{rec}); err != nil {
		return fmt.Errorf("partition %d: publish ownership: %w", o.p, err)
	}
	if err := o.checkLineage(ctx); err != nil {
		return fmt.Errorf("partition %d: %w", o.p, err)
	}
	restoreStart := time.Now()
	n, err := o.restore(ctx)
	if errors.Is(err, broker.ErrOffsetOutOfRange) {
		// Our checkpoint is outside the topic's log (the topic was recreated or truncated):
		// forget the partition's local state and rebuild it from the start.
		o.log.Warn("checkpoint outside the log; rebuilding the partition from the start", "error", err)
		if err := o.dropImage(); err != nil {
			return fmt.Errorf("partition %d: %w", o.p, err)
		}
		n, err = o.restore(ctx)
	}
	if why := o.staleAt(time.Now()); err == nil && why != "" {
		// The restore itself took so long that a delete written just after the image's last
		// update may have been compacted away before the restore reached it: start over.
		o.log.Warn("restore continued an image that aged past delete.retention.ms meanwhile; restoring from the start", "reason", why)
		if err := o.dropImage(); err != nil {
			return fmt.Errorf("partition %d: %w", o.p, err)
		}
		n, err = o.restore(ctx)
	}
	if err != nil {
		return fmt.Errorf("partition %d: restore: %w", o.p, err)
	}
	if len(o.deadLetters) > 0 {
		if _, err := o.prod.Commit(ctx, o.deadLetters); err != nil {
			return fmt.Errorf("partition %d: write %d quarantined records to %s: %w", o.p, len(o.deadLetters), o.n.cfg.Broker.DeadLettersTopic(), err)
		}
		o.deadLetters = nil
	}
	// The image is in step with the log as of the restore's start.
	if err := o.setLineage(restoreStart); err != nil {
		return fmt.Errorf("partition %d: %w", o.p, err)
	}
	if err := o.sweepIdempotency(time.Now()); err != nil {
		return fmt.Errorf("partition %d: %w", o.p, err)
	}
	o.partMetrics().Restored(time.Since(start))
	o.meter.served(time.Now())
	o.log.Info("partition acquired", "restored_records", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// checkLineage discards the partition's stored image when it may not be continued from its
// checkpoints — a topic was recreated, or the image is older than a compacted topic's
// delete.retention.ms, so deletes may have been compacted away (partition.Continuable) — and
// learns the topics' record size limit.
func (o *owner) checkLineage(ctx context.Context) error {
	names := make([]string, 0, len(o.n.topics))
	for t := range o.n.topics {
		names = append(names, t)
	}
	metas, err := o.n.adm.TopicMetas(ctx, names)
	if err != nil {
		return err
	}
	ids := make(map[string][16]byte, len(metas))
	retention := make(map[string]time.Duration)
	o.maxRecordBytes = o.n.cfg.MaxRecordBytes
	for t, m := range metas {
		ids[t] = m.ID
		if m.Compacted {
			retention[t] = m.DeleteRetention
		}
		o.maxRecordBytes = min(o.maxRecordBytes, m.MaxMessageBytes-recordOverhead)
	}
	o.topicIDs, o.retention = ids, retention
	offs, err := o.n.store.Offsets(o.p)
	if err != nil {
		return err
	}
	stored, ok, err := o.n.store.Lineage(o.p)
	if err != nil {
		return err
	}
	o.stored, o.storedOK, o.storedCkpt = stored, ok, len(offs) > 0
	if why := o.staleAt(time.Now()); why != "" {
		o.log.Warn("discarding the partition's stored image; restoring it from the start", "reason", why)
		return o.dropImage()
	}
	return nil
}

// dropImage forgets the partition's stored image, so the next restore reads it from the start.
func (o *owner) dropImage() error {
	if err := o.n.store.DropPartition(o.p); err != nil {
		return fmt.Errorf("drop stale state: %w", err)
	}
	o.storedCkpt = false // nothing left whose age could matter
	return nil
}

// staleAt says why the stored image found by checkLineage may not be continued at now, or "".
func (o *owner) staleAt(now time.Time) string {
	return partition.Continuable(o.stored, o.storedOK, o.storedCkpt, o.topicIDs, o.retention, now)
}

// setLineage records that the partition's image was in step with the log at followed.
func (o *owner) setLineage(followed time.Time) error {
	o.lineageAt = followed
	return o.n.store.SetLineage(o.p, partition.Lineage{TopicIDs: o.topicIDs, Followed: followed})
}

// restore reads every entity topic of the partition read_committed from Pebble's checkpoints up to
// the end offsets captured now (after the fence), applying records to Pebble in batches.
func (o *owner) restore(ctx context.Context) (int, error) {
	offs, err := o.n.store.Offsets(o.p)
	if err != nil {
		return 0, err
	}
	var parts []broker.TopicPartitionFrom
	for topic := range o.n.topics {
		parts = append(parts, broker.TopicPartitionFrom{Topic: topic, Partition: o.p, From: offs[topic]})
	}
	const batchSize = 4096
	batch := make([]partition.Record, 0, batchSize)
	next := make(map[string]int64)
	total := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		for {
			err := o.n.store.Apply(o.p, batch, next)
			bad, ok := o.badRecord(batch, err)
			if !ok {
				total += len(batch)
				batch = batch[:0]
				next = make(map[string]int64)
				return err
			}
			// A record restore rejects (another producer's, an older version's, a split-brain
			// duplicate) is quarantined, never a wedge: skipped, logged, counted, and copied to the
			// dead-letter topic; the checkpoint moves past it.
			o.quarantine(batch[bad], err)
			batch = append(batch[:bad], batch[bad+1:]...)
			if len(batch) == 0 {
				err := o.n.store.Apply(o.p, nil, next)
				next = make(map[string]int64)
				return err
			}
		}
	}
	o.meter.begin(time.Now())
	progress := func(done, todo int64) {
		o.partMetrics().RestoreProgress(done, todo)
		if v, logNow := o.meter.update(time.Now(), done, todo); logNow {
			o.log.Info("restoring partition", restoreLogArgs(v)...)
		}
	}
	ends, err := broker.ReadToEndProgress(ctx, o.n.cfg.Broker, parts, progress, func(r broker.Record) error {
		pr, ok := o.n.toPartitionRecord(r)
		if ok {
			batch = append(batch, pr)
		}
		next[r.Topic] = r.Offset + 1
		if len(batch) >= batchSize {
			return flush()
		}
		return nil
	})
	if err != nil {
		return total, err
	}
	if err := flush(); err != nil {
		return total, err
	}
	// Record the final positions too: transaction markers and compaction leave offsets with no
	// record, and the next restore should not read them again.
	return total, o.n.store.Apply(o.p, nil, ends)
}

// badRecord finds the record of batch that err (from Store.Apply) rejects as malformed or out of
// sequence; ok is false for any other outcome (success, or a storage failure).
func (o *owner) badRecord(batch []partition.Record, err error) (int, bool) {
	var re *partition.RecordError
	if !errors.As(err, &re) || !(errors.Is(err, partition.ErrMalformedRecord) || errors.Is(err, partition.ErrSequence)) {
		return 0, false
	}
	for i := range batch {
		if batch[i].Topic == re.Topic && batch[i].Offset == re.Offset {
			return i, true
		}
	}
	return 0, false
}

// quarantine logs a record restore rejected and keeps a copy for the dead-letter topic, with the
// reason and the record's origin in headers; acquire commits them once the restore is done.
func (o *owner) quarantine(r partition.Record, why error) {
	o.n.quarantined.Add(1)
	o.partMetrics().Quarantined()
	o.log.Error("quarantined a record restore rejects; it is skipped and copied to the dead-letter topic",
		"topic", r.Topic, "offset", r.Offset, "key", string(r.Key), "reason", why,
		"dead_letter_topic", o.n.cfg.Broker.DeadLettersTopic())
	hs := make([]broker.Header, 0, len(r.Headers)+4)
	for _, h := range r.Headers {
		hs = append(hs, broker.Header{Key: h.Key, Value: h.Value})
	}
	hs = append(hs,
		broker.Header{Key: kstatev1.HeaderDeadLetterTopic, Value: []byte(r.Topic)},
		broker.Header{Key: kstatev1.HeaderDeadLetterPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		broker.Header{Key: kstatev1.HeaderDeadLetterOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		broker.Header{Key: kstatev1.HeaderDeadLetterReason, Value: []byte(why.Error())})
	o.deadLetters = append(o.deadLetters, broker.Record{
		Topic:     o.n.cfg.Broker.DeadLettersTopic(),
		Partition: o.p,
		Key:       r.Key,
		Value:     r.Value,
		Headers:   hs,
	})
}

func (o *owner) ownerRecord(released bool) (broker.Record, error) {
	pid, epoch := o.prod.Epoch()
	v, err := proto.Marshal(&kstatev1.OwnerRecord{
		Partition:     o.p,
		NodeId:        o.n.cfg.NodeID,
		Address:       o.n.cfg.AdvertiseAddr,
		ProducerId:    pid,
		ProducerEpoch: int32(epoch),
		AcquiredAt:    timestamppb.Now(),
		Released:      released,
	})
	if err != nil {
		return broker.Record{}, err
	}
	return broker.Record{
		Topic: o.n.cfg.Broker.OwnersTopic(),
		Key:   []byte(strconv.Itoa(int(o.p))),
		Value: v,
	}, nil
}

// run is the partition's goroutine. It returns when the partition is stopped or must be given up
// (fenced, indefinite commit, storage failure); stopErr tells which.
func (o *owner) run() {
	defer close(o.done)
	commitReq := make(chan txnWork)
	commitDone := make(chan commitOutcome, 1)
	// One long-lived committer goroutine per partition (not one per transaction: a fresh
	// goroutine would grow its stack through the Kafka client and Pebble every time).
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for t := range commitReq {
			start := time.Now()
			span := o.n.tr.StartCommit(o.p, t.cmds, len(t.recs), t.links)
			out, err := o.commit(t.recs, t.prs)
			span.EndCommit(outcomeLabel(out), err)
			o.partMetrics().TxnFinished(outcomeLabel(out), time.Since(start))
			commitDone <- commitOutcome{id: t.id, out: out, err: err}
		}
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	stopping := o.ctx.Done()
	var armed time.Time // when the timer fires; zero when it is not armed

	o.core = core.New(o.n.coreConfig(o.maxRecordBytes))
	o.core.Restored(time.Now(), o.fencedAt)
	for {
		rd := o.core.Ready()
		o.apply(rd, commitReq)
		if rd.Stopped {
			o.stopErr = rd.GiveUp
			if o.stopErr == nil {
				o.stopErr = catalog.ErrNotOwner
			} else {
				o.log.Warn("giving up partition", "error", o.stopErr)
			}
			break
		}
		if !rd.NextTick.IsZero() && !rd.NextTick.Equal(armed) {
			timer.Reset(time.Until(rd.NextTick))
			armed = rd.NextTick
		}
		select {
		case <-stopping:
			stopping = nil
			o.core.Stop()
		case r := <-o.in:
			o.command(r)
		case w := <-o.writes:
			o.write(w)
		case d := <-o.notes:
			o.entityDone(d)
		case c := <-commitDone:
			o.core.Committed(time.Now(), c.id, c.out, c.err)
		case <-timer.C:
			armed = time.Time{}
			o.core.Tick(time.Now())
		}
	}
	close(commitReq)
	o.cancel()
	o.drain()
}

// drain stops every entity and keeps answering (through the stopped core, which refuses
// everything) until the last entity goroutine and the committer have exited.
func (o *owner) drain() {
	for k, e := range o.entities {
		delete(o.entities, k)
		close(e.in)
	}
	exited := make(chan struct{})
	go func() {
		o.wg.Wait()
		close(exited)
	}()
	for {
		select {
		case r := <-o.in:
			o.command(r)
		case w := <-o.writes:
			o.write(w)
		case d := <-o.notes:
			o.entityDone(d)
		case <-exited:
			o.apply(o.core.Ready(), nil)
			return
		}
		o.apply(o.core.Ready(), nil)
	}
}

func (o *owner) command(r *request) {
	o.nextID++
	r.id = o.nextID
	o.reqs[r.id] = r
	dl, _ := r.ctx.Deadline()
	o.core.Command(time.Now(), core.Command{
		ID:          r.id,
		Entity:      entityKey{Service: r.method.Service.Name, ID: r.entityID},
		Deadline:    dl,
		Passivation: r.method.Service.Passivation,
	})
}

func (o *owner) entityDone(d doneNote) {
	if d.exited && o.entities[d.e.key] == d.e {
		delete(o.entities, d.e.key)
		close(d.e.in) // its goroutine has returned
	}
	o.core.Done(time.Now(), d.cmd, d.exited)
}

func (o *owner) write(w *write) {
	o.pending[w.info.Cmd] = w
	o.core.Write(time.Now(), w.info)
}

// apply carries out a Ready. commitReq is nil once the committer is gone (the core starts no
// transaction after it stopped).
func (o *owner) apply(rd core.Ready, commitReq chan<- txnWork) {
	for _, k := range rd.Passivate {
		if e, ok := o.entities[k]; ok {
			delete(o.entities, k)
			close(e.in) // it closes its stream and exits
			o.n.met.Passivated(k.Service)
		}
	}
	for _, d := range rd.Dispatch {
		r := o.reqs[d.Cmd]
		delete(o.reqs, d.Cmd)
		e := o.entities[d.Entity]
		if d.Activate || e == nil {
			if e != nil {
				close(e.in)
			}
			e = o.newEntity(d.Entity, r.method.Service)
			o.entities[d.Entity] = e
			o.wg.Add(1)
			o.n.met.EntityStarted(d.Entity.Service)
			go func() {
				defer o.wg.Done()
				defer o.n.met.EntityStopped(e.key.Service)
				e.run()
			}()
		}
		e.in <- r // never blocks: the core runs one command at a time per entity
	}
	for _, a := range rd.Answers {
		if r, ok := o.reqs[a.Cmd]; ok {
			delete(o.reqs, a.Cmd)
			r.finish(result{err: fromCore(a.Err)})
		}
	}
	for _, w := range rd.Written {
		if pw, ok := o.pending[w.Cmd]; ok {
			delete(o.pending, w.Cmd)
			pw.done <- fromCore(w.Err)
		}
	}
	if rd.Txn != nil {
		t := txnWork{id: rd.Txn.ID, cmds: len(rd.Txn.Cmds)}
		for _, id := range rd.Txn.Cmds {
			t.recs = append(t.recs, o.pending[id].recs...)
			t.prs = append(t.prs, o.pending[id].prs...)
			t.links = o.n.tr.Link(t.links, o.pending[id].span)
		}
		o.partMetrics().TxnStarted(len(rd.Txn.Cmds), len(t.recs))
		commitReq <- t // the committer is idle: the core runs one transaction at a time
	}
}

// persist hands a command's records to the partition and waits until the core answers: durable,
// covered by the lease, or refused. The records are validated as restore validates them and
// sized first, so nothing invalid or oversize reaches a transaction.
func (o *owner) persist(r *request, recs []broker.Record) error {
	o.n.traceRecords(r.ctx, recs)
	info, prs := o.n.admit(recs)
	info.Cmd = r.id
	w := &write{recs: recs, prs: prs, info: info, done: make(chan error, 1), span: o.n.tr.SpanContext(r.ctx)}
	select {
	case o.writes <- w:
	case <-o.ctx.Done():
		return catalog.ErrNotOwner
	}
	// Wait for the outcome even if the caller gave up: the entity must know whether its events
	// are durable before it takes another command. The partition answers every write it took.
	return <-w.done
}

// commit runs one transaction holding recs, then applies prs — the same records, converted at
// admission — to Pebble with the offsets the transaction gave them (one Pebble batch, F7). It
// runs on the committer goroutine.
func (o *owner) commit(recs []broker.Record, prs []partition.Record) (core.Outcome, error) {
	if len(recs) == 0 {
		// Only reads: re-publishing our ownership record proves the fence still holds.
		rec, err := o.ownerRecord(false)
		if err != nil {
			return core.Indefinite, err
		}
		recs = []broker.Record{rec}
	}
	// Not cancelled with the partition: a revocation waits for the transaction in flight so its
	// outcome is known (a cancelled commit would be indefinite, and its commands unanswerable).
	// The transaction timeout still bounds it; a paused node finds it expired.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(o.ctx), o.n.cfg.Broker.TransactionTimeout)
	defer cancel()
	sent := time.Now()
	committed, err := o.prod.Commit(ctx, recs)
	switch {
	case err == nil:
	case errors.Is(err, broker.ErrAborted):
		return core.Aborted, err
	case errors.Is(err, broker.ErrFenced):
		return core.Fenced, err
	default: // ErrIndefinite, ErrNotAcquired, anything unexpected: the outcome is not known
		return core.Indefinite, err
	}
	if len(prs) > 0 && len(prs) != len(committed) {
		// Cannot happen: the core puts only admitted writes, all of whose records converted, in a
		// transaction. Reload rather than apply offsets to the wrong records.
		return core.StorageFailed, fmt.Errorf("%w: %d records committed, %d to apply", errStorage, len(committed), len(prs))
	}
	next := make(map[string]int64)
	for i := range prs { // committed[i] is recs[i], whose Pebble form is prs[i]
		prs[i].Offset = committed[i].Offset
		next[prs[i].Topic] = max(next[prs[i].Topic], prs[i].Offset+1)
	}
	if len(prs) > 0 {
		if err := o.n.store.Apply(o.p, prs, next); err != nil {
			return core.StorageFailed, fmt.Errorf("%w: %v", errStorage, err)
		}
	}
	if sent.Sub(o.sweptAt) > idempotencySweepEvery {
		if err := o.sweepIdempotency(sent); err != nil {
			return core.StorageFailed, fmt.Errorf("%w: %v", errStorage, err)
		}
	}
	if sent.Sub(o.lineageAt) > lineageRefresh {
		if err := o.setLineage(sent); err != nil {
			return core.StorageFailed, fmt.Errorf("%w: %v", errStorage, err)
		}
	}
	return core.Committed, nil
}

// fromCore turns the core's answer into the runtime's error, which ToStatus maps to the client's
// code (docs/event-sourced.md has the table).
func fromCore(err error) error {
	switch {
	case err == nil, errors.Is(err, core.ErrNotOwner), errors.Is(err, core.ErrOverloaded):
		return err
	case errors.Is(err, core.ErrExpired):
		return fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
	case errors.Is(err, core.ErrRecordTooLarge):
		return fmt.Errorf("%w: %v", catalog.ErrInvalidArgument, err)
	case errors.Is(err, core.ErrInvalidRecord):
		return status.Errorf(codes.Internal, "user function protocol error: its reply would write a record restore rejects: %v", err)
	case errors.Is(err, core.ErrFenced):
		// The coordinator aborted the transaction when the new owner fenced us: nothing of it
		// is durable, and the new owner may run it.
		return fmt.Errorf("%w: %v", catalog.ErrNotOwner, err)
	case errors.Is(err, core.ErrAborted):
		return fmt.Errorf("%w: %v", catalog.ErrUnavailable, err)
	case errors.Is(err, core.ErrOutcomeUnknown):
		return fmt.Errorf("%w: %v", catalog.ErrOutcomeUnknown, err)
	}
	return err
}

// coreConfig is the partition core's policy from the node's configuration.
func (n *Node) coreConfig(maxRecordBytes int) core.Config {
	lease := n.cfg.ReadLease
	if lease < 0 {
		lease = 0 // no lease: every read proves ownership with a barrier
	}
	return core.Config{
		ReadLease:         lease,
		LeaseMargin:       n.cfg.LeaseMargin,
		CommitLinger:      n.cfg.CommitLinger,
		MaxBatchRecords:   n.cfg.MaxBatchRecords,
		MaxRecordBytes:    maxRecordBytes,
		MaxActiveEntities: n.cfg.MaxActiveEntities,
		EntityQueue:       n.cfg.EntityQueue,
	}
}

// lineageRefresh is how often an owner records that its image follows the log (see
// partition.Lineage); the longer, the sooner a node that lost the partition discards its image.
const lineageRefresh = 10 * time.Second

// recordOverhead is what Kafka adds to a record's key, value and headers in a batch of one
// (batch header, record framing, header framing), rounded up.
const recordOverhead = 128

// admit validates a write's records exactly as restore will (partition.Validate) and sizes them,
// so the core can refuse what must never become durable. It also returns the records in their
// Pebble form, which the commit applies once Kafka has given them offsets.
func (n *Node) admit(recs []broker.Record) (core.Write, []partition.Record) {
	w := core.Write{Records: len(recs)}
	prs := make([]partition.Record, 0, len(recs))
	for _, r := range recs {
		size := recordOverhead + len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			size += len(h.Key) + len(h.Value) + 8
		}
		w.Bytes += size
		w.Largest = max(w.Largest, size)
		if w.Invalid != nil {
			continue
		}
		pr, ok := n.toPartitionRecord(r)
		if !ok {
			w.Invalid = fmt.Errorf("record for topic %s, which the partition does not restore", r.Topic)
			continue
		}
		if err := partition.Validate(&pr); err != nil {
			w.Invalid = err
			continue
		}
		prs = append(prs, pr)
	}
	return w, prs
}
