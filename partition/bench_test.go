package partition

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkApplyEvents measures restore throughput into Pebble on disk: batches of 500 event
// records (100-byte payloads) of 1,000 entities, with the checkpoint in each batch, no sync.
// Target: ≥ 200k records/s on a 2-core machine.
func BenchmarkApplyEvents(b *testing.B) {
	const entities, batch = 1000, 500
	pad := bytes.Repeat([]byte{'x'}, 100-len("e000-ev-1"))
	recs := make([]Record, b.N)
	seq := make([]int64, entities)
	for i := range recs {
		e := i % entities
		seq[e]++
		recs[i] = eventRec(0, fmt.Sprintf("e%03d", e), seq[e], int64(i))
		recs[i].Value = append(recs[i].Value, pad...)
	}
	s, err := Open(Config{Dir: b.TempDir()})
	mustNoErr(b, err)
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for len(recs) > 0 {
		n := min(batch, len(recs))
		mustNoErr(b, s.Apply(0, recs[:n], map[string]int64{eventsTopic: recs[n-1].Offset + 1}))
		recs = recs[n:]
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkLoadEventSourced measures entity activation: a random entity of 10,000, each with a
// snapshot and 10 events after it, read from flushed sstables on disk.
func BenchmarkLoadEventSourced(b *testing.B) {
	const entities, events, snapAt = 10000, 60, 50
	s, err := Open(Config{Dir: b.TempDir()})
	mustNoErr(b, err)
	defer s.Close()
	var recs []Record
	var off, snapOff int64
	pad := bytes.Repeat([]byte{'x'}, 90)
	for e := range entities {
		id := fmt.Sprintf("e%05d", e)
		for seq := int64(1); seq <= events; seq++ {
			r := eventRec(0, id, seq, off)
			r.Value = append(r.Value, pad...)
			recs = append(recs, r)
			off++
		}
		recs = append(recs, snapRec(0, id, snapAt, snapOff))
		snapOff++
		if len(recs) >= 5000 {
			mustNoErr(b, s.Apply(0, recs, nil))
			recs = recs[:0]
		}
	}
	mustNoErr(b, s.Apply(0, recs, nil))
	mustNoErr(b, s.db.Flush())
	lower, upper := partitionBounds(0)
	mustNoErr(b, s.db.Compact(b.Context(), lower, upper, true))
	rng := rand.New(rand.NewPCG(1, 1))
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("e%05d", rng.IntN(entities))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		img, err := s.LoadEventSourced(0, testPID, ids[i%len(ids)])
		if err != nil {
			b.Fatal(err)
		}
		if len(img.Events) != events-snapAt || img.Snapshot == nil {
			b.Fatalf("image %+v", img)
		}
	}
}
