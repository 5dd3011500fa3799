package bench

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	errAborted = errors.New("aborted")
	errFenced  = errors.New("fenced")
)

// fakeRefProducer records the batches it commits; each commit waits for a value on release
// (nil: commit, or the error to fail with).
type fakeRefProducer struct {
	mu      sync.Mutex
	batches [][]string
	started chan struct{}
	release chan error
}

func (f *fakeRefProducer) Acquire(context.Context) error { return nil }
func (f *fakeRefProducer) Close()                        {}
func (f *fakeRefProducer) Commit(ctx context.Context, recs []string) error {
	f.started <- struct{}{}
	err := <-f.release
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(recs))
	f.mu.Unlock()
	return err
}

func TestRefPartitionGroupCommit(t *testing.T) {
	prod := &fakeRefProducer{started: make(chan struct{}), release: make(chan error)}
	rp := &refPartition[string]{p: 3, prod: prod, in: make(chan *refCall[string], refQueue)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- rp.run(ctx, func(r string, seq int64) string { return r + "#" + string(rune('0'+seq)) },
			func(err error) bool { return errors.Is(err, errAborted) })
	}()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	add := func(i int, rec string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = rp.add(ctx, rec)
		}()
	}
	add(0, "a")
	<-prod.started // a's transaction is in flight: b, c and d wait for the next one
	add(1, "b")
	add(2, "c")
	add(3, "d")
	for len(rp.in) < 3 {
		time.Sleep(time.Millisecond)
	}
	prod.release <- nil
	<-prod.started
	prod.release <- errAborted // an abort fails its calls; the partition goes on
	wg.Wait()
	if errs[0] != nil {
		t.Fatalf("a: %v", errs[0])
	}
	for _, err := range errs[1:4] {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "commit: aborted") {
			t.Fatalf("call of an aborted transaction: %v, want Unavailable commit: aborted", err)
		}
	}
	add(4, "e")
	<-prod.started
	prod.release <- errFenced // anything else stops the partition
	wg.Wait()
	if status.Code(errs[4]) != codes.Unavailable {
		t.Fatalf("e: %v, want Unavailable", errs[4])
	}
	if err := <-runErr; !errors.Is(err, errFenced) || !strings.Contains(err.Error(), "partition 3") {
		t.Fatalf("run: %v, want partition 3: fenced", err)
	}
	b := slices.Clone(prod.batches[1])
	slices.Sort(b)
	if len(prod.batches) != 3 || !slices.Equal(prod.batches[0], []string{"a#1"}) || len(b) != 3 || prod.batches[2][0] != "e#5" {
		t.Fatalf("batches %v, want [a#1] [b c d with #2..#4] [e#5]", prod.batches)
	}
	for i, r := range b {
		if r[:1] != string(rune('b'+i)) {
			t.Fatalf("second batch %v, want b, c and d", prod.batches[1])
		}
	}
}

func TestRefPartitionFull(t *testing.T) {
	rp := &refPartition[string]{p: 1, in: make(chan *refCall[string], 1)}
	rp.in <- &refCall[string]{done: make(chan error, 1)}
	if err := rp.add(context.Background(), "x"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("add to a full queue: %v, want ResourceExhausted", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rp.add(ctx, "y"); status.Code(err) != codes.Canceled {
		t.Fatalf("add with an ended context and a full queue: %v, want Canceled", err)
	}
}
