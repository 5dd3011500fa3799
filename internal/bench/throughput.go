package bench

import (
	"context"
	"fmt"
	"os"
	"time"
)

// runThroughput measures one closed-loop mode: bare, es, es-remote, value, action, http, seq.
func (h *harness) runThroughput(ctx context.Context, mode string) (Result, error) {
	res := Result{Mode: mode, Broker: h.brokerLabel(), Concurrency: h.cfg.Concurrency, Entities: h.cfg.Entities}
	if mode == "seq" {
		res.Concurrency, res.Entities = 1, h.cfg.SeqEntities
	}
	s, err := h.newSUT(ctx, mode)
	if err != nil {
		return res, err
	}
	defer s.close()
	if err := s.startSystem(ctx, mode, ""); err != nil {
		return res, err
	}
	w, err := h.newWorkload(mode, s.addr, res.Concurrency)
	if err != nil {
		return res, err
	}
	defer w.close()
	if err := s.waitReady(ctx, w); err != nil {
		return res, err
	}
	ids := entityIDs("c", res.Entities)
	var (
		server, brk, self [2]ProcSample
		sampleErr         error
	)
	sample := func(i int) {
		var err error
		if server[i], err = Procs(s.serverPIDs()...); err != nil {
			sampleErr = err
		}
		if brk[i], err = Procs(s.brokerPID()); err != nil {
			sampleErr = err
		}
		if self[i], err = ReadProc(os.Getpid()); err != nil {
			sampleErr = err
		}
	}
	h.logf("%s: %d in flight over %d entities: %v warmup, %v measured", mode, res.Concurrency, res.Entities, h.cfg.Warmup, h.cfg.Duration)
	lr, err := RunLoad(ctx, LoadConfig{
		Concurrency: res.Concurrency,
		Warmup:      h.cfg.Warmup,
		Duration:    h.cfg.Duration,
		OpTimeout:   h.cfg.OpTimeout,
		Op: func(ctx context.Context, _ int, seq uint64) error {
			return w.call(ctx, ids[seq%uint64(len(ids))])
		},
		OnStart: func() { sample(0) },
		OnStop:  func() { sample(1) },
	})
	if err != nil {
		return res, err
	}
	if err := s.check(); err != nil {
		return res, err
	}
	if sampleErr != nil {
		return res, sampleErr
	}
	end, err := Procs(s.serverPIDs()...)
	if err != nil {
		return res, err
	}
	res.Commands, res.Seconds, res.PerSecond = lr.Ops, lr.Elapsed.Seconds(), lr.Throughput()
	res.P50, res.P99, res.P999 = lr.Latency.Quantile(0.5), lr.Latency.Quantile(0.99), lr.Latency.Quantile(0.999)
	res.Errors, res.WarmupErrors = lr.Errors, lr.WarmupErrors
	res.ServerRSS = end.RSS
	if lr.Ops > 0 {
		per := func(a [2]ProcSample) time.Duration { return (a[1].CPU - a[0].CPU) / time.Duration(lr.Ops) }
		res.ServerCPU, res.ClientCPU = per(server), per(self)
		if s.brokerPID() != 0 {
			res.BrokerCPU = per(brk)
		}
	}
	if pid := s.brokerPID(); pid != 0 {
		if b, err := ReadProc(pid); err == nil {
			res.BrokerRSS = b.RSS
		}
	}
	if s.sink != nil {
		res.Spans = s.sink.spans.Load()
		h.logf("%s: the node exported %d spans in %d OTLP requests so far (sampling %s)", mode, res.Spans, s.sink.requests.Load(), TraceSampleRatio)
	}
	// CRDT deltas are produced outside transactions: there are none to count.
	if mode != "crdt" {
		if res.RecordsPerTxn, err = s.recordsPerTxn(ctx, mode); err != nil {
			h.logf("%s: counting transactions: %v", mode, err)
		}
	}
	h.logf("%s: %s commands/s, p50 %s, p99 %s, server CPU %s/command, errors: %s", mode, FormatRate(res.PerSecond),
		FormatDuration(res.P50), FormatDuration(res.P99), FormatDuration(res.ServerCPU), FormatErrors(res.Errors))
	return res, nil
}

// JournalCount is what Kstate.CountJournal reads of a journal topic.
type JournalCount struct {
	// Topic is the journal topic.
	Topic string
	// Records are the records of every partition, read read_committed.
	Records int64
	// Offsets are the offsets the partitions span: the sum of (end − start offset).
	Offsets int64
}

// recordsPerTxn reads the mode's journal (the cart's events, or the value cart's state) and
// returns records per transaction: in each partition every committed transaction that wrote to
// it left one commit marker, which takes an offset but is no record.
func (s *sut) recordsPerTxn(ctx context.Context, mode string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	jc, err := s.h.k.CountJournal(ctx, s.kafka(), mode)
	if err != nil {
		return 0, err
	}
	markers := jc.Offsets - jc.Records
	if markers <= 0 {
		return 0, fmt.Errorf("%s: %d records and no transaction markers", jc.Topic, jc.Records)
	}
	return float64(jc.Records) / float64(markers), nil
}
