package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer produces records outside transactions: idempotent, acknowledged by all in-sync
// replicas, to the partition each record names. CRDT deltas travel this way (DESIGN.md §4): a
// delta is durable once Produce returns, and merging it twice changes nothing.
type Producer struct {
	cl *kgo.Client
}

// NewProducer returns a producer for cfg's cluster.
func NewProducer(cfg Config) (*Producer, error) {
	cl, err := cfg.withDefaults().newClientAs(roleProducer,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return nil, err
	}
	return &Producer{cl: cl}, nil
}

// Produce sends r and waits until it is durable; the record returned carries its offset.
func (p *Producer) Produce(ctx context.Context, r Record) (Record, error) {
	res := p.cl.ProduceSync(ctx, toKgo(r))
	kr, err := res.First()
	if err != nil {
		return Record{}, fmt.Errorf("produce to %s/%d: %w", r.Topic, r.Partition, err)
	}
	return fromKgo(kr), nil
}

// Close flushes nothing further and closes the client.
func (p *Producer) Close() { p.cl.Close() }

// FollowPartitions reads the given partitions (topic → partition → first offset; a negative
// offset is the start of the log) read_committed and calls fn for every record, until ctx is done
// (then it returns ctx.Err()) or a fetch fails. Records of one partition arrive in offset order.
// Unlike Follow it joins no group and reads exactly the partitions named: every node follows
// every partition of the CRDT topics.
func FollowPartitions(ctx context.Context, cfg Config, from map[string]map[int32]int64, fn func(Record)) error {
	offsets := make(map[string]map[int32]kgo.Offset, len(from))
	for t, ps := range from {
		offsets[t] = make(map[int32]kgo.Offset, len(ps))
		for p, o := range ps {
			if o < 0 {
				offsets[t][p] = kgo.NewOffset().AtStart()
			} else {
				offsets[t][p] = kgo.NewOffset().At(o)
			}
		}
	}
	cfg = cfg.withDefaults()
	cl, err := cfg.newClientAs(roleFollow,
		kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("follow %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return cfg.hint(ferr)
		}
		fs.EachRecord(func(kr *kgo.Record) { fn(fromKgo(kr)) })
	}
}
