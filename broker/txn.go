package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Outcomes of a failed transaction (RELIABILITY.md F1, F3). Every error TxnProducer returns
// for a transaction wraps exactly one of them, plus the cause.
var (
	// ErrFenced: another producer took over the partition (PRODUCER_FENCED,
	// INVALID_PRODUCER_EPOCH, an unknown producer id mapping) or we may not write it any more
	// (transactional-id or cluster authorization). The caller must drop the partition and its
	// images; the producer is unusable until Acquire succeeds again.
	ErrFenced = errors.New("producer fenced")
	// ErrIndefinite: the outcome of the transaction is unknown (timeout, cancelled context,
	// transport error, coordinator moved during EndTxn). The caller must not retry blindly:
	// Close (or Acquire again, which fences our own old epoch), reload the entities the
	// transaction touched and answer UNAVAILABLE.
	ErrIndefinite = errors.New("transaction outcome unknown")
	// ErrAborted: the transaction was aborted and nothing of it is or will become visible; the
	// producer is usable and the caller may retry in a new transaction.
	ErrAborted = errors.New("transaction aborted")
	// ErrNotAcquired: Commit was called before a successful Acquire, or after a fenced or
	// indefinite outcome that Acquire has not yet repaired.
	ErrNotAcquired = errors.New("transactional producer not acquired")
)

// Header keys Acquire adds to the ownership record.
const (
	HeaderProducerID    = "kstate.producer.id"
	HeaderProducerEpoch = "kstate.producer.epoch"
)

// TxnError is a failed transaction step of partition Partition's producer. It wraps its
// outcome (ErrFenced, ErrIndefinite or ErrAborted) and the cause, so errors.Is works on both.
type TxnError struct {
	Partition int32
	Op        string // "acquire", "begin", "produce", "commit", "abort"
	Outcome   error  // ErrFenced, ErrIndefinite or ErrAborted
	Err       error  // the cause
}

// Error describes the outcome and the cause.
func (e *TxnError) Error() string {
	return fmt.Sprintf("partition %d: %s: %v: %v", e.Partition, e.Op, e.Outcome, e.Err)
}

// Unwrap returns the outcome and the cause.
func (e *TxnError) Unwrap() []error { return []error{e.Outcome, e.Err} }

// TxnProducer is the transactional producer of one owned partition, transactional.id
// cfg.TransactionalID(p). Its methods are safe to call from several goroutines but run one at a
// time; the partition's owner goroutine is expected to be the only caller.
type TxnProducer struct {
	cfg Config
	p   int32
	log hclog.Logger

	mu     sync.Mutex
	cl     *kgo.Client
	inTxn  bool
	broken error // set on a fenced or indefinite outcome; cleared by Acquire
	id     int64
	epoch  int16
}

// NewTxnProducer returns the producer of partition p. It does not contact Kafka; Acquire does.
func NewTxnProducer(cfg Config, p int32) (*TxnProducer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if p < 0 {
		return nil, fmt.Errorf("transactional producer: partition %d is negative", p)
	}
	return &TxnProducer{
		cfg: cfg, p: p, id: -1, epoch: -1,
		log: cfg.Logger.Named("txn").With("partition", p),
	}, nil
}

// Acquire fences every earlier holder of the partition and opens a transaction holding owner,
// the ownership record. It (re)creates the underlying client and runs InitProducerID, which
// bumps the producer epoch of the transactional id: every older producer of the partition (a
// zombie owner, or this producer's own previous epoch after ErrIndefinite) is fenced, and its
// open transaction is aborted by the coordinator. It then begins a transaction and produces
// owner into it, adding the headers HeaderProducerID and HeaderProducerEpoch, and leaves the
// transaction open: the caller restores the partition and calls Commit (with nil or more
// records) to publish ownership.
//
// Acquire may be called again at any time to start over; errors wrap ErrFenced when the
// transactional id may not be used (authorization), otherwise the cause.
func (t *TxnProducer) Acquire(ctx context.Context, owner Record) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cl != nil {
		t.cl.Close()
		t.cl = nil
	}
	t.inTxn, t.broken, t.id, t.epoch = false, nil, -1, -1

	cl, err := t.cfg.newClientAs(roleTxn,
		kgo.TransactionalID(t.cfg.TransactionalID(t.p)),
		kgo.TransactionTimeout(t.cfg.TransactionTimeout),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		return err
	}
	// kgo initializes the producer id lazily on the first produce; ProducerID forces the
	// InitProducerID round trip (and with it the fence) now.
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		cl.Close()
		return t.txnErr("acquire", t.cfg.hint(err), classify(err, ErrIndefinite))
	}
	t.cl, t.id, t.epoch = cl, id, epoch
	t.log.Debug("fenced previous producers", "producer_id", id, "epoch", epoch)

	if err := cl.BeginTransaction(); err != nil {
		return t.fail("begin", err, classify(err, ErrIndefinite))
	}
	t.inTxn = true
	owner.Headers = append(append([]Header(nil), owner.Headers...),
		Header{Key: HeaderProducerID, Value: []byte(strconv.FormatInt(id, 10))},
		Header{Key: HeaderProducerEpoch, Value: []byte(strconv.Itoa(int(epoch)))})
	if _, err := t.produce(ctx, []Record{owner}); err != nil {
		return err
	}
	return nil
}

// Commit writes recs in one transaction: the one Acquire left open, or a new one. It produces
// every record (to its Topic and Partition, as given), flushes, and commits. It returns the
// records with their offsets and timestamps once the commit is acknowledged, which is the
// moment they become visible to read_committed readers.
//
// On failure the error is a *TxnError wrapping ErrFenced (drop the partition), ErrIndefinite
// (outcome unknown: close or re-acquire, reload) or ErrAborted (nothing visible; retry allowed).
// An aborted transaction takes everything in it along, including the ownership record of a
// preceding Acquire: publish ownership with Commit(ctx, nil) before committing other records.
func (t *TxnProducer) Commit(ctx context.Context, recs []Record) ([]Record, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken != nil {
		return nil, t.broken
	}
	if t.cl == nil {
		return nil, fmt.Errorf("partition %d: commit: %w", t.p, ErrNotAcquired)
	}
	if !t.inTxn {
		if err := t.cl.BeginTransaction(); err != nil {
			return nil, t.fail("begin", err, classify(err, ErrIndefinite))
		}
		t.inTxn = true
	}
	out, err := t.produce(ctx, recs)
	if err != nil {
		return nil, err
	}
	if err := t.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		switch {
		case isFenced(err):
			return nil, t.fail("commit", err, ErrFenced)
		case errors.Is(err, kerr.TransactionAbortable), errors.Is(err, kerr.OperationNotAttempted):
			// The broker refused the commit, or kgo did not attempt it: nothing committed.
			return nil, t.abort(ctx, "commit", err)
		default:
			return nil, t.fail("commit", err, ErrIndefinite)
		}
	}
	t.inTxn = false
	return out, nil
}

// produce sends recs into the open transaction and waits for all of them. On any failure it
// aborts the transaction (or marks the producer broken) and returns the *TxnError.
func (t *TxnProducer) produce(ctx context.Context, recs []Record) ([]Record, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	out := make([]Record, len(recs))
	var (
		mu       sync.Mutex
		firstErr error
	)
	for i, r := range recs {
		out[i] = r
		t.cl.Produce(ctx, toKgo(r), func(kr *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil || isFenced(err) && !isFenced(firstErr) {
					firstErr = fmt.Errorf("record %d to %s/%d: %w", i, kr.Topic, kr.Partition, err)
				}
				return
			}
			out[i].Offset, out[i].Timestamp, out[i].Partition = kr.Offset, kr.Timestamp, kr.Partition
		})
	}
	if err := t.cl.Flush(ctx); err != nil {
		// Some records may still be in flight: the producer state is unknown.
		return nil, t.fail("produce", err, ErrIndefinite)
	}
	mu.Lock()
	err := firstErr
	mu.Unlock()
	if err == nil {
		return out, nil
	}
	if isFenced(err) {
		return nil, t.fail("produce", err, ErrFenced)
	}
	if ctx.Err() != nil {
		return nil, t.fail("produce", err, ErrIndefinite)
	}
	return nil, t.abort(ctx, "produce", err)
}

// abort ends the open transaction with an abort after step op failed with cause. It returns
// ErrAborted when the abort is confirmed, otherwise marks the producer broken.
func (t *TxnProducer) abort(ctx context.Context, op string, cause error) error {
	if err := t.cl.AbortBufferedRecords(ctx); err != nil {
		return t.fail(op, errors.Join(cause, fmt.Errorf("abort buffered records: %w", err)), ErrIndefinite)
	}
	if err := t.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return t.fail(op, errors.Join(cause, fmt.Errorf("abort: %w", err)), classify(err, ErrIndefinite))
	}
	t.inTxn = false
	t.log.Debug("transaction aborted", "op", op, "cause", cause)
	return t.txnErr(op, cause, ErrAborted)
}

// fail records a fenced or indefinite outcome; Commit refuses to continue until Acquire.
func (t *TxnProducer) fail(op string, err, outcome error) error {
	e := t.txnErr(op, err, outcome)
	if outcome != ErrAborted {
		t.broken = e
		t.log.Warn("transactional producer needs re-acquiring", "op", op, "outcome", outcome, "error", err)
	}
	return e
}

func (t *TxnProducer) txnErr(op string, err, outcome error) error {
	return &TxnError{Partition: t.p, Op: op, Outcome: outcome, Err: err}
}

// Epoch returns the producer id and epoch obtained by the last successful Acquire (-1, -1
// before). Brokers with transaction version 2 bump the epoch at every commit; the value here
// is the one that fenced the previous owner, the one recorded in the ownership record.
func (t *TxnProducer) Epoch() (producerID int64, epoch int16) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.id, t.epoch
}

// Close aborts an open transaction (so it does not hold back the LSO until the transaction
// timeout), bounded by the config's RequestTimeout, and releases the client.
func (t *TxnProducer) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cl == nil {
		return
	}
	if t.inTxn && t.broken == nil {
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.RequestTimeout)
		if err := t.cl.AbortBufferedRecords(ctx); err == nil {
			if err := t.cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
				t.log.Debug("abort on close failed; the transaction times out on the broker", "error", err)
			}
		}
		cancel()
	}
	t.cl.Close()
	t.cl, t.inTxn = nil, false
}

// isFenced reports errors after which this producer may never write the partition again.
func isFenced(err error) bool {
	for _, e := range []error{
		kerr.ProducerFenced,
		kerr.InvalidProducerEpoch,
		kerr.InvalidProducerIDMapping,
		kerr.TransactionalIDAuthorizationFailed,
		kerr.ClusterAuthorizationFailed,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// classify returns ErrFenced for fencing errors, otherwise def.
func classify(err, def error) error {
	if isFenced(err) {
		return ErrFenced
	}
	return def
}
