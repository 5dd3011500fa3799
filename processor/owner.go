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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/partition"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// request is one command for an entity of a partition this node owns.
type request struct {
	ctx      context.Context
	method   *Method
	entityID string
	payload  []byte
	md       *cloudstatepb.Metadata
	done     chan result // buffered(1): whoever finishes the command sends exactly once
}

// result is a command's outcome: the reply payload (bytes of the output message) or an error.
type result struct {
	payload []byte
	md      *cloudstatepb.Metadata
	err     error
}

func (r *request) finish(res result) { r.done <- res }

// write asks the partition to make records durable in its next transaction. A write with no
// records is a barrier: it proves the node still owns the partition (RELIABILITY.md F2).
type write struct {
	recs []broker.Record
	done chan error // buffered(1)
}

// idleNote tells the partition loop that an entity has been idle for its passivation timeout
// after taking `taken` commands.
type idleNote struct {
	e     *entity
	taken uint64
}

type commitOutcome struct {
	writes []*write
	err    error
}

// entityKey identifies an active entity within a partition.
type entityKey struct {
	service  string
	entityID string
}

// owner runs one partition this node owns: one goroutine (run) owns the entity table and the
// commit pipeline; entity goroutines talk to it through channels; one committer goroutine at a time
// runs the partition's Kafka transaction. There are no locks on entity state.
type owner struct {
	n      *Node
	p      int32
	log    hclog.Logger
	prod   *broker.TxnProducer
	in     chan *request
	writes chan *write
	idle   chan idleNote
	exited chan *entity
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // entity goroutines and the committer

	lastCommit atomic.Int64 // unix nanos of the last successful commit (read lease)
	stopErr    error        // why run returned, read after done is closed
	done       chan struct{}

	// owned by run
	entities map[entityKey]*entity
	sent     map[*entity]uint64
	seq      uint64
}

func newOwner(n *Node, p int32, prod *broker.TxnProducer) *owner {
	ctx, cancel := context.WithCancel(n.ctx)
	o := &owner{
		n:        n,
		p:        p,
		log:      n.log.Named("partition").With("partition", p),
		prod:     prod,
		in:       make(chan *request, 4096),
		writes:   make(chan *write, 1024),
		idle:     make(chan idleNote, 64),
		exited:   make(chan *entity, 64),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		entities: make(map[entityKey]*entity),
		sent:     make(map[*entity]uint64),
	}
	o.lastCommit.Store(time.Now().UnixNano())
	return o
}

// submit hands a request to the partition without blocking. The node calls it with its registry
// lock held, so a partition being removed never receives a request it will not answer.
func (o *owner) submit(r *request) error {
	select {
	case o.in <- r:
		return nil
	default:
		return fmt.Errorf("partition %d has %d commands waiting: %w", o.p, cap(o.in), ErrOverloaded)
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
	n, err := o.restore(ctx)
	if errors.Is(err, broker.ErrOffsetOutOfRange) {
		// Our checkpoint is outside the topic's log (the topic was recreated or truncated):
		// forget the partition's local state and rebuild it from the start.
		o.log.Warn("checkpoint outside the log; rebuilding the partition from the start", "error", err)
		if err := o.n.store.DropPartition(o.p); err != nil {
			return fmt.Errorf("partition %d: drop stale state: %w", o.p, err)
		}
		n, err = o.restore(ctx)
	}
	if err != nil {
		return fmt.Errorf("partition %d: restore: %w", o.p, err)
	}
	o.lastCommit.Store(time.Now().UnixNano())
	o.log.Info("partition acquired", "restored_records", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
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
		err := o.n.store.Apply(o.p, batch, next)
		total += len(batch)
		batch = batch[:0]
		next = make(map[string]int64)
		return err
	}
	ends, err := broker.ReadToEnd(ctx, o.n.cfg.Broker, parts, func(r broker.Record) error {
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
	var (
		pending    []*write
		pendingN   int
		committing bool
		commitDone = make(chan commitOutcome, 1)
		commitReq  = make(chan []*write)
		linger     *time.Timer
		lingerC    <-chan time.Time
	)
	startCommit := func() {
		if committing || len(pending) == 0 {
			return
		}
		// Take whole writes up to the batch cap (a single larger write still goes alone).
		n, recs := 0, 0
		for n < len(pending) && (n == 0 || recs+len(pending[n].recs) <= o.n.cfg.MaxBatchRecords) {
			recs += len(pending[n].recs)
			n++
		}
		batch := pending[:n:n]
		pending = append([]*write(nil), pending[n:]...)
		pendingN -= recs
		committing = true
		commitReq <- batch // the committer is idle: committing was false
	}
	// One long-lived committer goroutine per partition (not one per transaction: a fresh
	// goroutine would grow its stack through the Kafka client and Pebble every time).
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for batch := range commitReq {
			commitDone <- commitOutcome{writes: batch, err: o.commit(batch)}
		}
	}()
	defer func() {
		o.cancel()
		// Whatever is in flight learns its real outcome; whatever is not yet in a transaction is
		// answered ErrNotOwner (it was never committed, so the caller may retry elsewhere).
		if committing {
			out := <-commitDone
			for _, w := range out.writes {
				w.done <- out.err
			}
		}
		close(commitReq)
		for _, w := range pending {
			w.done <- ErrNotOwner
		}
		for k, e := range o.entities {
			delete(o.entities, k)
			close(e.in)
		}
		// Entity goroutines may still be finishing a command: keep answering their writes and
		// any late requests until every one of them has exited.
		quit := make(chan struct{})
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				select {
				case w := <-o.writes:
					w.done <- ErrNotOwner
				case r := <-o.in:
					r.finish(result{err: ErrNotOwner})
				case <-o.idle:
				case <-o.exited:
				case <-quit:
					return
				}
			}
		}()
		o.wg.Wait()
		close(quit)
		<-drained
		for {
			select {
			case w := <-o.writes:
				w.done <- ErrNotOwner
			case r := <-o.in:
				r.finish(result{err: ErrNotOwner})
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-o.ctx.Done():
			o.stopErr = ErrNotOwner
			return
		case r := <-o.in:
			o.dispatch(r)
		case w := <-o.writes:
			pending = append(pending, w)
			pendingN += len(w.recs)
			if committing {
				break
			}
			if o.n.cfg.CommitLinger > 0 && pendingN < o.n.cfg.MaxBatchRecords {
				if lingerC == nil {
					linger = time.NewTimer(o.n.cfg.CommitLinger)
					lingerC = linger.C
				}
				break
			}
			startCommit()
		case <-lingerC:
			lingerC = nil
			startCommit()
		case out := <-commitDone:
			committing = false
			for _, w := range out.writes {
				w.done <- out.err
			}
			if out.err != nil && (errors.Is(out.err, broker.ErrFenced) || errors.Is(out.err, broker.ErrIndefinite) || errors.Is(out.err, errStorage)) {
				o.stopErr = out.err
				o.log.Warn("giving up partition", "error", out.err)
				return
			}
			if lingerC == nil {
				startCommit()
			}
		case note := <-o.idle:
			e := note.e
			if cur, ok := o.entities[e.key]; ok && cur == e && o.sent[e] == note.taken {
				delete(o.entities, e.key)
				delete(o.sent, e)
				close(e.in) // the entity passivates: it closes its stream and exits
			}
		case e := <-o.exited:
			if cur, ok := o.entities[e.key]; ok && cur == e {
				delete(o.entities, e.key)
				delete(o.sent, e)
				close(e.in)
				// Commands queued behind a crashed entity go to a fresh activation.
				for r := range e.in {
					o.dispatch(r)
				}
			}
		}
	}
}

// dispatch routes a request to its entity, activating it if needed.
func (o *owner) dispatch(r *request) {
	k := entityKey{service: r.method.Service.Name, entityID: r.entityID}
	e, ok := o.entities[k]
	if !ok {
		e = o.newEntity(k, r.method.Service)
		o.entities[k] = e
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			e.run()
		}()
	}
	select {
	case e.in <- r:
		o.sent[e]++
	default:
		r.finish(result{err: fmt.Errorf("entity %s/%s has %d commands waiting: %w", k.service, k.entityID, cap(e.in), ErrOverloaded)})
	}
}

// persist hands records to the commit pipeline and waits until they are committed (or not).
// An empty recs is a barrier that proves ownership when the read lease has run out.
func (o *owner) persist(recs []broker.Record) error {
	if len(recs) == 0 && time.Since(time.Unix(0, o.lastCommit.Load())) < o.n.cfg.ReadLease {
		return nil
	}
	w := &write{recs: recs, done: make(chan error, 1)}
	select {
	case o.writes <- w:
	case <-o.ctx.Done():
		return ErrNotOwner
	}
	// Wait for the outcome even if the caller gave up: the entity must know whether its events
	// are durable before it takes another command. The partition answers every write it took.
	return <-w.done
}

// commit runs one transaction holding every record of the batch, then applies the committed
// records to Pebble with the offsets they reached (one Pebble batch, F7).
func (o *owner) commit(batch []*write) error {
	var recs []broker.Record
	for _, w := range batch {
		recs = append(recs, w.recs...)
	}
	if len(recs) == 0 {
		// Only barriers: re-publishing our ownership record proves the fence still holds.
		rec, err := o.ownerRecord(false)
		if err != nil {
			return err
		}
		recs = []broker.Record{rec}
	}
	// Not cancelled with the partition: a revocation waits for the transaction in flight so its
	// outcome is known (a cancelled commit would be indefinite, and its commands unanswerable).
	// The transaction timeout still bounds it; a paused node finds it expired.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(o.ctx), o.n.cfg.Broker.TransactionTimeout)
	defer cancel()
	committed, err := o.prod.Commit(ctx, recs)
	if err != nil {
		return err
	}
	o.lastCommit.Store(time.Now().UnixNano())
	var prs []partition.Record
	next := make(map[string]int64)
	for _, r := range committed {
		if pr, ok := o.n.toPartitionRecord(r); ok {
			prs = append(prs, pr)
			if r.Offset+1 > next[r.Topic] {
				next[r.Topic] = r.Offset + 1
			}
		}
	}
	if len(prs) > 0 {
		if err := o.n.store.Apply(o.p, prs, next); err != nil {
			return fmt.Errorf("%w: %v", errStorage, err)
		}
	}
	return nil
}
