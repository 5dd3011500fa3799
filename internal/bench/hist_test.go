package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsAreContiguousAndOrdered(t *testing.T) {
	// Every value falls in a bucket whose range holds it, and bucket ranges tile the line.
	prevHigh := int64(-1)
	for i := 0; i < numBuckets-1; i++ {
		low := uint64(prevHigh + 1)
		if got := bucketOf(low); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d (the bucket after the one ending at %d)", low, got, i, prevHigh)
		}
		high := bucketHigh(i)
		if high < low {
			t.Fatalf("bucket %d: high %d below low %d", i, high, low)
		}
		if got := bucketOf(high); got != i {
			t.Fatalf("bucketOf(bucketHigh(%d)=%d) = %d", i, high, got)
		}
		// Relative width below 1/128 for buckets past the exact range.
		if i >= 2*sub {
			if w := float64(high-low+1) / float64(low); w > 1.0/sub+1e-12 {
				t.Fatalf("bucket %d [%d,%d]: relative width %g > 1/%d", i, low, high, w, sub)
			}
		}
		prevHigh = int64(high)
		if i > 2*sub && prevHigh > 1<<50 {
			break // the rest only matters for durations of weeks
		}
	}
	if got := bucketOf(math.MaxUint64); got != numBuckets-1 {
		t.Fatalf("bucketOf(MaxUint64) = %d, want %d", got, numBuckets-1)
	}
}

func TestQuantilesWithinPrecision(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := NewHistogram()
	var vals []time.Duration
	for range 100_000 {
		// Log-uniform from 10 µs to 1 s, like latencies.
		d := time.Duration(math.Exp(math.Log(10e3) + rng.Float64()*(math.Log(1e9)-math.Log(10e3))))
		vals = append(vals, d)
		h.Record(d)
	}
	slices.Sort(vals)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(vals)))), 1)
		want := vals[rank-1]
		got := h.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 1.0/sub {
			t.Errorf("q%.3f = %v, exact %v: relative error %.4f > 1/%d", q, got, want, rel, sub)
		}
	}
	if h.Count() != uint64(len(vals)) {
		t.Fatalf("Count = %d, want %d", h.Count(), len(vals))
	}
	if h.Max() != vals[len(vals)-1] {
		t.Fatalf("Max = %v, want %v", h.Max(), vals[len(vals)-1])
	}
}

func TestQuantileSmallAndEmpty(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Max() != 0 {
		t.Fatal("empty histogram must report zeros")
	}
	for _, d := range []time.Duration{10, 20, 30, 40} {
		h.Record(d)
	}
	// Values below 256 ns are exact: nearest rank.
	for q, want := range map[float64]time.Duration{0.25: 10, 0.5: 20, 0.75: 30, 0.76: 40, 1: 40} {
		if got := h.Quantile(q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if h.Mean() != 25 {
		t.Errorf("Mean = %v, want 25ns", h.Mean())
	}
	h.Record(-5 * time.Second)
	if h.Quantile(0) != 0 {
		t.Errorf("a negative duration is recorded as 0, got min %v", h.Quantile(0))
	}
}

func TestQuantileClampedToMax(t *testing.T) {
	h := NewHistogram()
	h.Record(1_000_001 * time.Nanosecond)
	// The bucket's high end is above the only value; the quantile must not exceed it.
	if got := h.Quantile(0.99); got != 1_000_001 {
		t.Fatalf("Quantile = %d, want the recorded 1000001", got)
	}
}

func TestMerge(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 10_000 {
		d := time.Duration(rng.Int64N(int64(50 * time.Millisecond)))
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		all.Record(d)
	}
	a.Merge(b)
	a.Merge(nil)
	a.Merge(NewHistogram())
	for _, q := range []float64{0.1, 0.5, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged q%v = %v, want %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != all.Count() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Errorf("merged count/max/mean %d/%v/%v, want %d/%v/%v", a.Count(), a.Max(), a.Mean(), all.Count(), all.Max(), all.Mean())
	}
}

func TestQuantilesNearestRank(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	got := Quantiles(ds, 0, 0.5, 0.99, 1)
	want := []time.Duration{1, 3, 5, 5}
	if !slices.Equal(got, want) {
		t.Fatalf("Quantiles = %v, want %v", got, want)
	}
	if z := Quantiles(nil, 0.5); len(z) != 1 || z[0] != 0 {
		t.Fatalf("Quantiles(nil) = %v, want [0]", z)
	}
}
