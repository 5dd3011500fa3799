package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Op is one operation of a workload, such as one gRPC call. worker is the calling worker
// (0..Concurrency-1) and seq a counter shared by all workers, so seq % entities spreads the
// operations evenly over the entities and no two operations in flight share an entity while
// Concurrency is below the entity count. ctx carries the operation's deadline.
type Op func(ctx context.Context, worker int, seq uint64) error

// LoadConfig is a closed-loop load: Concurrency workers each run Op back to back for Warmup
// (not measured), then for Duration (measured).
type LoadConfig struct {
	// Concurrency is the number of operations in flight. Default 64.
	Concurrency int
	// Warmup runs the load unmeasured first; zero skips it.
	Warmup time.Duration
	// Duration is the measured window. Default 20s.
	Duration time.Duration
	// MaxOps ends the measured window early after this many successful operations; 0: no limit.
	MaxOps uint64
	// OpTimeout is each operation's deadline. Default 10s.
	OpTimeout time.Duration
	// Op is the operation. Required.
	Op Op
	// Classify names an error for the error counts; default Code.
	Classify func(error) string
	// OnStart and OnStop, if set, run as the measured window opens and closes (to sample the
	// CPU time of the processes under test). They run on the controlling goroutine.
	OnStart, OnStop func()
}

// DefaultLoadConfig returns a LoadConfig with every default set except Op.
func DefaultLoadConfig() LoadConfig {
	return LoadConfig{Concurrency: 64, Warmup: 3 * time.Second, Duration: 20 * time.Second, OpTimeout: 10 * time.Second}
}

// Validate reports the first problem with c.
func (c LoadConfig) Validate() error {
	switch {
	case c.Op == nil:
		return errors.New("bench: LoadConfig.Op is nil")
	case c.Concurrency < 1:
		return fmt.Errorf("bench: concurrency %d: want at least 1", c.Concurrency)
	case c.Duration <= 0:
		return fmt.Errorf("bench: duration %v: want more than 0", c.Duration)
	case c.Warmup < 0:
		return fmt.Errorf("bench: warmup %v is negative", c.Warmup)
	case c.OpTimeout <= 0:
		return fmt.Errorf("bench: operation timeout %v: want more than 0", c.OpTimeout)
	}
	return nil
}

// LoadResult is what a load run measured inside its window. Operations that complete during the
// warmup or after the window closes are not counted.
type LoadResult struct {
	// Ops is the number of successful operations.
	Ops uint64
	// Errors counts failed operations by Classify's name.
	Errors map[string]uint64
	// WarmupErrors counts failures during the warmup, which are not part of the measure.
	WarmupErrors map[string]uint64
	// Elapsed is the length of the window (shorter than Duration when MaxOps ended it).
	Elapsed time.Duration
	// Latency holds the latency of every successful operation.
	Latency *Histogram
}

// Throughput is successful operations per second.
func (r LoadResult) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// ErrorCount is the number of failed operations in the window.
func (r LoadResult) ErrorCount() uint64 {
	var n uint64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// phases of a run.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseDone
)

type worker struct {
	hist   *Histogram
	errs   map[string]uint64
	warmup map[string]uint64
	ok     uint64
}

// RunLoad runs the load of cfg and returns what it measured. It returns early, with ctx's
// error, when ctx ends.
func RunLoad(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = DefaultLoadConfig().OpTimeout
	}
	if err := cfg.Validate(); err != nil {
		return LoadResult{}, err
	}
	classify := cfg.Classify
	if classify == nil {
		classify = Code
	}
	var (
		phase   atomic.Int32
		seq     atomic.Uint64
		success atomic.Uint64 // successes in the window, for MaxOps
		full    = make(chan struct{})
		once    sync.Once
		wg      sync.WaitGroup
	)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		w := &worker{hist: NewHistogram(), errs: map[string]uint64{}, warmup: map[string]uint64{}}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil && phase.Load() != phaseDone {
				s := seq.Add(1) - 1
				// An operation belongs to the phase it started in: one that began in the warmup
				// and ends in the window is not measured (nor is its error).
				ph := phase.Load()
				opCtx, cancel := context.WithTimeout(runCtx, cfg.OpTimeout)
				start := time.Now()
				err := cfg.Op(opCtx, i, s)
				d := time.Since(start)
				cancel()
				if phase.Load() == phaseDone {
					ph = phaseDone // the window closed while it ran: not counted
				}
				switch ph {
				case phaseWarmup:
					if err != nil && runCtx.Err() == nil {
						w.warmup[classify(err)]++
					}
				case phaseMeasure:
					if err != nil {
						if runCtx.Err() == nil {
							w.errs[classify(err)]++
						}
						continue
					}
					w.hist.Record(d)
					w.ok++
					if cfg.MaxOps > 0 && success.Add(1) >= cfg.MaxOps {
						once.Do(func() { close(full) })
					}
				}
			}
		}()
	}
	var (
		t0, t1 time.Time
		err    error
	)
	if wait(ctx, cfg.Warmup, nil) {
		if cfg.OnStart != nil {
			cfg.OnStart()
		}
		t0 = time.Now()
		phase.Store(phaseMeasure)
		if !wait(ctx, cfg.Duration, full) {
			err = ctx.Err()
		}
		phase.Store(phaseDone)
		t1 = time.Now()
		if cfg.OnStop != nil {
			cfg.OnStop()
		}
	} else {
		err = ctx.Err()
	}
	phase.Store(phaseDone)
	stop() // operations still in flight are not counted; cancel them
	wg.Wait()
	res := LoadResult{Errors: map[string]uint64{}, WarmupErrors: map[string]uint64{}, Elapsed: t1.Sub(t0), Latency: NewHistogram()}
	for _, w := range workers {
		res.Latency.Merge(w.hist)
		res.Ops += w.ok
		for k, v := range w.errs {
			res.Errors[k] += v
		}
		for k, v := range w.warmup {
			res.WarmupErrors[k] += v
		}
	}
	return res, err
}

// wait sleeps for d, or until early is closed; it reports false if ctx ended first.
func wait(ctx context.Context, d time.Duration, early <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-early:
		return true
	case <-ctx.Done():
		return false
	}
}
