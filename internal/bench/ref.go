package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/internal/logging"
)

// refMaxBatch caps the records of one transaction of the bare reference, as kstate's
// MaxBatchRecords default does.
const refMaxBatch = 2000

// refQueue is the number of calls that may wait for a partition's next transaction.
const refQueue = 4096

// RefProducer is one partition's fenced transactional producer, as the bare reference uses it.
// R is the producer's record type.
type RefProducer[R any] interface {
	// Acquire fences the partition's earlier producers and publishes its ownership, as a kstate
	// node does when it acquires a partition.
	Acquire(ctx context.Context) error
	// Commit produces recs in one transaction and commits it.
	Commit(ctx context.Context, recs []R) error
	// Close releases the producer.
	Close()
}

// RefConfig is the bare reference that ServeRef runs: the floor `kstate bench --mode bare`
// measures kstate's overhead against. cmd/kstate fills it in from kstate's broker package and
// the shopping cart's generated stubs.
type RefConfig[R any] struct {
	// Partitions is the number of partitions of the events topic, each with its own producer.
	Partitions int32
	// Listen is the gRPC address.
	Listen string
	// Topic is the events topic, for the log.
	Topic string
	// Logger receives the serving line; nil discards it.
	Logger hclog.Logger
	// NewProducer creates partition p's producer.
	NewProducer func(p int32) (RefProducer[R], error)
	// Sequence returns r carrying seq, its partition's sequence number (1, 2, … in commit
	// order), as kstate's records carry it.
	Sequence func(r R, seq int64) R
	// Aborted reports whether a commit error only aborted the transaction: its calls fail and
	// the partition goes on. Any other error (fenced, outcome unknown) stops the server.
	Aborted func(err error) bool
	// Register registers the gRPC services on srv. Their handlers pass each call's record, for
	// partition p, to add, which returns once the record's transaction committed, with a gRPC
	// status error otherwise (ResourceExhausted when too many calls wait, Unavailable when the
	// commit failed, or the context's error).
	Register func(srv *grpc.Server, add func(ctx context.Context, p int32, r R) error)
}

// refPartition is one partition's producer and the queue of calls waiting for a transaction.
type refPartition[R any] struct {
	p    int32
	prod RefProducer[R]
	in   chan *refCall[R]
	seq  int64 // owned by run
}

// refCall is one call waiting for its record to commit.
type refCall[R any] struct {
	rec  R
	done chan error // buffered(1)
}

// ServeRef runs the bare reference: it creates every partition's producer and acquires every
// partition at once (fencing earlier producers), serves gRPC on cfg.Listen until ctx ends, and
// stops. Each partition group-commits: the calls that arrive while its transaction is in flight
// go into the next one (up to refMaxBatch records), and each call is answered after its
// transaction committed. There is no entity state, no user function and no Pebble.
func ServeRef[R any](ctx context.Context, cfg RefConfig[R]) error {
	log := logging.OrDiscard(cfg.Logger)
	var parts []*refPartition[R]
	defer func() {
		for _, rp := range parts {
			rp.prod.Close()
		}
	}()
	for p := range cfg.Partitions {
		prod, err := cfg.NewProducer(p)
		if err != nil {
			return err
		}
		parts = append(parts, &refPartition[R]{p: p, prod: prod, in: make(chan *refCall[R], refQueue)})
	}
	// Acquire every partition at once, as a node's partition supervisors do.
	acqErrs := make([]error, len(parts))
	var acq sync.WaitGroup
	for i, rp := range parts {
		acq.Add(1)
		go func() {
			defer acq.Done()
			acqErrs[i] = rp.prod.Acquire(ctx)
		}()
	}
	acq.Wait()
	if err := errors.Join(acqErrs...); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := grpc.NewServer()
	cfg.Register(srv, func(ctx context.Context, p int32, r R) error { return parts[p].add(ctx, r) })
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	failed := make(chan error, len(parts))
	for _, rp := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rp.run(runCtx, cfg.Sequence, cfg.Aborted); err != nil {
				failed <- err
			}
		}()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("bare reference serving", "addr", lis.Addr().String(), "topic", cfg.Topic, "partitions", cfg.Partitions)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-failed:
	case runErr = <-served:
	}
	hs.Shutdown()
	srv.GracefulStop()
	stop()
	wg.Wait()
	return runErr
}

// add queues rec for the partition's next transaction and waits until it committed.
func (rp *refPartition[R]) add(ctx context.Context, rec R) error {
	call := &refCall[R]{rec: rec, done: make(chan error, 1)}
	select {
	case rp.in <- call:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	default:
		return status.Errorf(codes.ResourceExhausted, "partition %d has %d calls waiting", rp.p, cap(rp.in))
	}
	select {
	case err := <-call.done:
		if err != nil {
			return status.Errorf(codes.Unavailable, "commit: %v", err)
		}
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// run is the partition's group-commit loop: it takes every call waiting (up to refMaxBatch)
// into one transaction, commits, answers them, and repeats. Calls arriving during a commit wait
// for the next one. It returns when ctx ends (answering what is queued) or on a commit error
// that is not an abort (the producer is fenced or its outcome unknown).
func (rp *refPartition[R]) run(ctx context.Context, sequence func(R, int64) R, aborted func(error) bool) error {
	defer func() {
		for {
			select {
			case c := <-rp.in:
				c.done <- errors.New("server stopping")
			default:
				return
			}
		}
	}()
	batch := make([]*refCall[R], 0, 64)
	recs := make([]R, 0, 64)
	for {
		batch, recs = batch[:0], recs[:0]
		select {
		case c := <-rp.in:
			batch = append(batch, c)
		case <-ctx.Done():
			return nil
		}
	drain:
		for len(batch) < refMaxBatch {
			select {
			case c := <-rp.in:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		for _, c := range batch {
			rp.seq++
			c.rec = sequence(c.rec, rp.seq)
			recs = append(recs, c.rec)
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := rp.prod.Commit(tctx, recs)
		cancel()
		for _, c := range batch {
			c.done <- err
		}
		if err != nil && !aborted(err) {
			return fmt.Errorf("partition %d: %w", rp.p, err)
		}
	}
}
