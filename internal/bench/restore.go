package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// acquiredLine matches a node's "partition acquired" log line (hclog text format).
var acquiredLine = regexp.MustCompile(`partition acquired:.*?\bpartition=(\d+)\b.*?\brestored_records=(\d+)\b.*?\btook=(\S+)`)

// acquisition is one "partition acquired" log line.
type acquisition struct {
	partition int32
	records   int64
	took      time.Duration
}

// parseAcquired returns the "partition acquired" lines of a node's log, the latest per partition.
func parseAcquired(log []byte) (map[int32]acquisition, error) {
	out := make(map[int32]acquisition)
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := acquiredLine.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		p, err1 := strconv.ParseInt(string(m[1]), 10, 32)
		recs, err2 := strconv.ParseInt(string(m[2]), 10, 64)
		took, err3 := time.ParseDuration(string(m[3]))
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("log line %q: %w", sc.Text(), err)
		}
		out[int32(p)] = acquisition{partition: int32(p), records: recs, took: took}
	}
	return out, sc.Err()
}

// runRestore writes --restore-commands commands through node A, stops it, and times node B (an
// empty Pebble) acquiring every partition: each acquisition fences, publishes ownership and
// reads the partition's events and snapshots into Pebble.
func (h *harness) runRestore(ctx context.Context) (RestoreResult, error) {
	res := RestoreResult{Broker: h.brokerLabel(), Partitions: int(h.cfg.Partitions)}
	s, err := h.newSUT(ctx, "restore")
	if err != nil {
		return res, err
	}
	defer s.close()
	if err := s.startSystem(ctx, "restore", ""); err != nil {
		return res, err
	}
	a := s.servers[0]
	w, err := h.newWorkload("restore", s.addr, h.cfg.Concurrency)
	if err != nil {
		return res, err
	}
	defer w.close()
	if err := s.waitReady(ctx, w); err != nil {
		return res, err
	}
	ids := entityIDs("r", h.cfg.Entities)
	h.logf("restore: writing %d commands (at most %v)", h.cfg.RestoreCommands, 3*h.cfg.Duration)
	lr, err := RunLoad(ctx, LoadConfig{
		Concurrency: h.cfg.Concurrency, Duration: 3 * h.cfg.Duration, MaxOps: uint64(h.cfg.RestoreCommands), OpTimeout: h.cfg.OpTimeout,
		Op: func(ctx context.Context, _ int, seq uint64) error { return w.call(ctx, ids[seq%uint64(len(ids))]) },
	})
	if err != nil {
		return res, err
	}
	h.logf("restore: %d commands written at %s/s; stopping the node", lr.Ops, FormatRate(lr.Throughput()))
	w.close()
	if err := a.stop(10 * time.Second); err != nil {
		// It left the group before hanging, so its partitions are free; go on.
		h.logf("restore: %v", err)
	}
	s.forget(a)
	start := time.Now()
	b, _, err := s.startNode("fresh", "", "--example", "shoppingcart")
	if err != nil {
		return res, err
	}
	var acq map[int32]acquisition
	err = Poll(ctx, 5*time.Minute, func() (bool, error) {
		if !b.alive() {
			return false, fmt.Errorf("fresh node exited (%v):\n%s", b.err, b.tail(20))
		}
		log, err := os.ReadFile(b.logPath)
		if err != nil {
			return false, err
		}
		if acq, err = parseAcquired(log); err != nil {
			return false, err
		}
		return len(acq) == int(h.cfg.Partitions), nil
	})
	if err != nil {
		return res, fmt.Errorf("fresh node acquiring %d partitions: %w", h.cfg.Partitions, err)
	}
	res.Wall = time.Since(start)
	rates := make([]float64, 0, len(acq))
	for _, a := range acq {
		res.Records += a.records
		res.Slowest = max(res.Slowest, a.took)
		if a.took > 0 {
			rates = append(rates, float64(a.records)/a.took.Seconds())
		}
	}
	if res.Slowest > 0 {
		res.PerSecond = float64(res.Records) / res.Slowest.Seconds()
	}
	if len(rates) > 0 {
		slices.Sort(rates)
		res.PartitionPerSecond = rates[(len(rates)-1)/2]
	}
	h.logf("restore: %d records in %d partitions, slowest partition %v: %s records/s", res.Records, len(acq),
		res.Slowest, FormatRate(res.PerSecond))
	return res, nil
}
