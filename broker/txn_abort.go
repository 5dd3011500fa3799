package broker

import (
	"context"
	"fmt"
)

// Abort writes recs in a transaction of their own and aborts it: no read_committed reader ever
// sees them. kstate's runtime never needs it; operators' tools and isolation tests do (it proves,
// on any broker, that an aborted write stays invisible). Like Commit it needs a prior Acquire,
// and it must not be called while Acquire's transaction is still open.
func (t *TxnProducer) Abort(ctx context.Context, recs []Record) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken != nil {
		return t.broken
	}
	if t.cl == nil {
		return fmt.Errorf("partition %d: abort: %w", t.p, ErrNotAcquired)
	}
	if t.inTxn {
		return fmt.Errorf("partition %d: abort: a transaction is open; commit it first", t.p)
	}
	if err := t.cl.BeginTransaction(); err != nil {
		return t.fail("begin", err, classify(err, ErrIndefinite))
	}
	t.inTxn = true
	if _, err := t.produce(ctx, recs); err != nil {
		return err
	}
	err := t.abort(ctx, "abort", errDeliberateAbort)
	if e, ok := err.(*TxnError); ok && e.Err == errDeliberateAbort {
		return nil
	}
	return err
}

var errDeliberateAbort = fmt.Errorf("deliberate abort")
