package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// ownerView follows the owners topic: partition → owning node id.
type ownerView struct {
	mu    sync.Mutex
	owner map[int32]string
}

// apply takes an owners-topic record's value into the view; an undecodable one is ignored.
func (v *ownerView) apply(value []byte) {
	var rec kstatev1.OwnerRecord
	if proto.Unmarshal(value, &rec) != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if rec.GetReleased() {
		delete(v.owner, rec.GetPartition())
		return
	}
	v.owner[rec.GetPartition()] = rec.GetNodeId()
}

// ownedBy returns the partitions node owns.
func (v *ownerView) ownedBy(node string) []int32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []int32
	for p, n := range v.owner {
		if n == node {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// balanced reports whether every partition is owned by one of nodes and each node owns one.
func (v *ownerView) balanced(partitions int32, nodes []string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	count := map[string]int{}
	for p := range partitions {
		n, ok := v.owner[p]
		if !ok || !slices.Contains(nodes, n) {
			return false
		}
		count[n]++
	}
	return len(count) == len(nodes)
}

// recovery tracks, in one round, the first success after the kill for each partition of the
// killed node.
type recovery struct {
	mu      sync.Mutex
	killed  time.Time
	pending map[int32]bool
	samples []time.Duration
	lastOK  map[int32]time.Time
	done    chan struct{}
}

// ok records a successful command for partition p that started at start and ended at end.
func (r *recovery) ok(p int32, start, end time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastOK[p] = end
	if r.pending[p] && !start.Before(r.killed) {
		delete(r.pending, p)
		r.samples = append(r.samples, end.Sub(r.killed))
		if len(r.pending) == 0 {
			close(r.done)
		}
	}
}

// arm starts a round: parts lost their owner at killed.
func (r *recovery) arm(parts []int32, killed time.Time) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.killed, r.pending, r.done = killed, map[int32]bool{}, make(chan struct{})
	for _, p := range parts {
		r.pending[p] = true
	}
	if len(parts) == 0 {
		close(r.done)
	}
	return r.done
}

// disarm ends a round and returns the partitions that did not recover.
func (r *recovery) disarm() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.pending)
	r.pending = map[int32]bool{}
	return n
}

// fresh reports whether every partition had a success within the last d.
func (r *recovery) fresh(partitions int32, d time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range partitions {
		if time.Since(r.lastOK[p]) > d {
			return false
		}
	}
	return true
}

// runFailover runs three nodes with --session-timeout, background load and one probe per
// partition through the nodes that stay up, kills one node per round with SIGKILL, and measures
// for each partition the killed node owned the time from the kill to the first command that
// started after the kill and succeeded.
func (h *harness) runFailover(ctx context.Context) (FailoverResult, error) {
	const nodes = 3
	res := FailoverResult{Broker: h.brokerLabel(), Nodes: nodes, SessionTimeout: h.cfg.SessionTimeout, Rounds: h.cfg.FailoverRounds, Errors: map[string]uint64{}}
	s, err := h.newSUT(ctx, "failover")
	if err != nil {
		return res, err
	}
	defer s.close()
	names := make([]string, nodes)
	addrs := make([]string, nodes)
	procs := make([]*child, nodes)
	args := make([][]string, nodes)
	for i := range nodes {
		names[i] = "n" + strconv.Itoa(i)
		if addrs[i], err = freeLoopback(); err != nil {
			return res, err
		}
		args[i] = s.nodeArgs(names[i], addrs[i], "--example", "shoppingcart", "--session-timeout", h.cfg.SessionTimeout.String())
		if procs[i], err = s.startServer(names[i], "", args[i]...); err != nil {
			return res, err
		}
	}
	for i := range nodes {
		if err := s.waitDial(ctx, procs[i], addrs[i]); err != nil {
			return res, err
		}
	}
	// Follow the owners topic, as the nodes' routers do.
	view := &ownerView{owner: map[int32]string{}}
	fctx, stopFollow := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer func() {
		stopFollow()
		bg.Wait()
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		if err := h.k.FollowOwners(fctx, s.kafka(), view.apply); err != nil && fctx.Err() == nil {
			h.logf("failover: following the owners topic: %v", err)
		}
	}()
	ws := make([]*workload, nodes)
	for i := range nodes {
		if ws[i], err = h.newWorkload("failover", addrs[i], 1); err != nil {
			return res, err
		}
		defer ws[i].close()
	}
	if err := s.waitReady(ctx, ws[0]); err != nil {
		return res, err
	}
	// Clients use the nodes that stay up: excluded is the node about to be killed (-1: none).
	var excluded atomic.Int32
	excluded.Store(-1)
	via := func(k int) *workload {
		i := k % nodes
		if int32(i) == excluded.Load() {
			i = (i + 1) % nodes
		}
		return ws[i]
	}
	rec := &recovery{lastOK: map[int32]time.Time{}, pending: map[int32]bool{}, done: make(chan struct{})}
	var (
		errMu   sync.Mutex
		samples = map[string]string{} // the first error of each kind, for the progress output
		// phase names the part of a round an error happened in.
		phase atomic.Value
		count = func(err error) {
			code := Code(err) + " (" + phase.Load().(string) + ")"
			errMu.Lock()
			res.Errors[code]++
			if _, ok := samples[code]; !ok {
				samples[code] = err.Error()
			}
			errMu.Unlock()
		}
	)
	phase.Store("steady")
	// One probe per partition, back to back with a short deadline, and the background load.
	for p := range h.cfg.Partitions {
		id := entityOf(h.k.Partition, fmt.Sprintf("probe-%d", p), p, h.cfg.Partitions)
		bg.Add(1)
		go func() {
			defer bg.Done()
			for k := int(p); fctx.Err() == nil; k++ {
				cctx, cancel := context.WithTimeout(fctx, 2*time.Second)
				start := time.Now()
				err := via(k).call(cctx, id)
				end := time.Now()
				cancel()
				if err == nil {
					rec.ok(p, start, end)
				} else if fctx.Err() == nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	ids := entityIDs("f", h.cfg.Entities)
	var loadSeq atomic.Uint64
	for wk := range h.cfg.Concurrency {
		bg.Add(1)
		go func() {
			defer bg.Done()
			for fctx.Err() == nil {
				i := loadSeq.Add(1)
				cctx, cancel := context.WithTimeout(fctx, h.cfg.OpTimeout)
				err := via(wk).call(cctx, ids[i%uint64(len(ids))])
				cancel()
				if err != nil && fctx.Err() == nil {
					count(err)
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	for round := range h.cfg.FailoverRounds {
		live := slices.Clone(names)
		if err := Poll(ctx, 3*time.Minute, func() (bool, error) {
			return view.balanced(h.cfg.Partitions, live) && rec.fresh(h.cfg.Partitions, time.Second), s.check()
		}); err != nil {
			return res, fmt.Errorf("round %d: waiting for every node to own partitions and every partition to serve: %w", round+1, err)
		}
		phase.Store("steady")
		victim := round % nodes
		phase.Store("victim excluded")
		excluded.Store(int32(victim))
		time.Sleep(500 * time.Millisecond) // commands already sent through the victim finish
		parts := view.ownedBy(names[victim])
		killed := time.Now()
		phase.Store("failover")
		procs[victim].kill()
		s.forget(procs[victim])
		done := rec.arm(parts, killed)
		h.logf("failover: round %d: killed %s (owned partitions %v)", round+1, names[victim], parts)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		lost := rec.disarm()
		res.Unrecovered += lost
		rec.mu.Lock()
		res.Samples = slices.Clone(rec.samples)
		rec.mu.Unlock()
		h.logf("failover: round %d: %d partitions serve again, %d did not within 60s; recovery times so far: %v",
			round+1, len(parts)-lost, lost, res.Samples)
		// Bring the victim back (same id, data and address) for the next round.
		phase.Store("victim restarting")
		c, err := s.startServer(names[victim], "", args[victim]...)
		if err != nil {
			return res, err
		}
		procs[victim] = c
		if err := s.waitDial(ctx, c, addrs[victim]); err != nil {
			return res, err
		}
		excluded.Store(-1)
		phase.Store("victim rejoining")
	}
	stopFollow()
	bg.Wait()
	for code, msg := range samples {
		h.logf("failover: load errors %s (%d), first: %s", code, res.Errors[code], msg)
	}
	res.Summarize()
	h.logf("failover: p50 %s, p99 %s, max %s over %d partitions", FormatDuration(res.P50), FormatDuration(res.P99),
		FormatDuration(res.Max), len(res.Samples))
	return res, nil
}
