package partition

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

var crashSeed = flag.Uint64("crash-seed", 20240611, "seed of TestCrashAtomicity")

// applyStep is one Store.Apply of a generated restore.
type applyStep struct {
	p       int32
	recs    []Record
	offsets map[string]int64
}

// plannedRestore is the Apply calls of restoring several partitions' histories, interleaved.
func plannedRestore(t *testing.T, rng *rand.Rand, hs map[int32]history) []applyStep {
	t.Helper()
	type cursor struct {
		p    int32
		recs []Record
		rp   *RestoreProgress
	}
	var cs []*cursor
	for p := int32(0); p < int32(len(hs)); p++ {
		h := hs[p]
		rp, err := NewRestoreProgress(nil, h.ends)
		mustNoErr(t, err)
		cs = append(cs, &cursor{p: p, recs: interleave(rng, h.events, h.snaps, h.states), rp: rp})
	}
	var steps []applyStep
	for len(cs) > 0 {
		i := rng.IntN(len(cs))
		c := cs[i]
		if len(c.recs) == 0 {
			for topic, end := range hs[c.p].ends {
				mustNoErr(t, c.rp.AdvanceTo(topic, end))
			}
			steps = append(steps, applyStep{p: c.p, offsets: c.rp.Positions()})
			cs = append(cs[:i], cs[i+1:]...)
			continue
		}
		n := 1 + rng.IntN(min(len(c.recs), 25))
		for _, r := range c.recs[:n] {
			mustNoErr(t, c.rp.Observe(r.Topic, r.Offset))
		}
		steps = append(steps, applyStep{p: c.p, recs: c.recs[:n], offsets: c.rp.Positions()})
		c.recs = c.recs[n:]
	}
	return steps
}

// TestCrashAtomicity crashes the store at random moments while a restore applies batches without
// waiting for sync, reopens the file system as a crash leaves it (synced data plus a random part
// of the unsynced data), and checks RELIABILITY F7: the recovered store is exactly the store after
// some prefix of the batches — the offsets always match the state — and resuming the restore from
// the recovered checkpoints converges to the same store as an uninterrupted restore. With
// Config.Sync, every batch applied before the crash survives.
func TestCrashAtomicity(t *testing.T) {
	rounds := 120
	if testing.Short() {
		rounds = 30
	}
	t.Logf("seed %d (-crash-seed to replay)", *crashSeed)
	partial := 0 // rounds that recovered neither nothing nor everything
	for round := range rounds {
		rng := rand.New(rand.NewPCG(*crashSeed, uint64(round)))
		sync := round%3 == 0
		t.Run(fmt.Sprintf("round%d-sync=%v", round, sync), func(t *testing.T) {
			if k, n := crashRound(t, rng, sync); k > 0 && k < n {
				partial++
			}
		})
		if t.Failed() {
			return
		}
	}
	// Guard the test itself: crashes must land in the middle of restores, not only at the edges.
	if partial < rounds/4 {
		t.Fatalf("only %d of %d rounds recovered a partial restore", partial, rounds)
	}
	t.Logf("%d of %d rounds recovered a partial restore", partial, rounds)
}

// crashRound runs one crash and returns how many of the n batches the recovered store holds.
func crashRound(t *testing.T, rng *rand.Rand, sync bool) (k, n int) {
	hs := map[int32]history{}
	for p := range int32(2) {
		h := randomHistory(rng, p, 1+rng.IntN(8), 1+rng.IntN(40))
		// Bulky events fill WAL blocks and memtables, so that writes reach the file system
		// without a sync and flushes run during the batches.
		for i := range h.events {
			h.events[i].Value = append(h.events[i].Value, bytes.Repeat([]byte{'x'}, rng.IntN(600))...)
		}
		hs[p] = h
	}
	steps := plannedRestore(t, rng, hs)

	fs := vfs.NewCrashableMem()
	// A small memtable makes flushes (synced sstables, manifest edits, WAL rotation) happen
	// between and during the batches.
	cfg := Config{Dir: "db", FS: fs, Sync: sync, MemTableSize: 32 << 10, MetaCacheSize: []int{-1, 1, 0}[rng.IntN(3)]}
	s, err := Open(cfg)
	mustNoErr(t, err)
	defer s.Close()

	// The crash is taken concurrently with the batches after crashAfter.
	crashAfter := rng.IntN(len(steps) + 1)
	cloneCfg := vfs.CrashCloneCfg{UnsyncedDataPercent: []int{0, 0, 10, 50, 90, 100}[rng.IntN(6)]}
	cloneCfg.RNG = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	crashed := make(chan *vfs.MemFS, 1)
	start := make(chan struct{})
	go func() {
		<-start
		crashed <- fs.CrashClone(cloneCfg)
	}()

	states := []string{dump(t, s)} // states[k] is the store after k batches
	for k, st := range steps {
		if k == crashAfter {
			close(start)
		}
		mustNoErr(t, s.Apply(st.p, st.recs, st.offsets))
		states = append(states, dump(t, s))
	}
	if crashAfter == len(steps) {
		close(start)
	}
	crashFS := <-crashed
	final := states[len(states)-1]
	mustNoErr(t, s.Close())

	cfg.FS = crashFS
	r, err := Open(cfg)
	mustNoErr(t, err)
	defer r.Close()
	got := dump(t, r)
	k = -1
	for i := len(states) - 1; i >= 0; i-- {
		if states[i] == got {
			k = i
			break
		}
	}
	if k < 0 {
		t.Fatalf("recovered store (clone %d%% unsynced, crash after %d of %d batches) is no prefix of the batches:\n%s",
			cloneCfg.UnsyncedDataPercent, crashAfter, len(steps), got)
	}
	if sync && k < crashAfter {
		t.Fatalf("synced store lost batches: recovered %d, %d were applied before the crash", k, crashAfter)
	}

	// Resume: read each topic again from its recovered checkpoint, as the restore loop does.
	for p, h := range hs {
		cp := offsets(t, r, p)
		var tail [3][]Record
		for i, topic := range [][]Record{h.events, h.snaps, h.states} {
			for _, rec := range topic {
				if rec.Offset >= cp[rec.Topic] {
					tail[i] = append(tail[i], rec)
				}
			}
		}
		restoreInto(t, rng, r, p, interleave(rng, tail[0], tail[1], tail[2]), h.ends)
	}
	if got := dump(t, r); got != final {
		t.Fatalf("resumed restore (from batch %d of %d) differs from an uninterrupted one", k, len(steps))
	}
	for p, h := range hs {
		checkImages(t, r, p, h)
	}
	return k, len(steps)
}
