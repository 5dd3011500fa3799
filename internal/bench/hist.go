package bench

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// subBits is the histogram's precision: 2^subBits sub-buckets per power of two, so a recorded
// value is reported within 1/128 (< 0.8%) of itself.
const subBits = 7

const (
	sub        = 1 << subBits
	numBuckets = sub * (64 - subBits + 1)
)

// Histogram records durations in log-linear buckets (as HdrHistogram does, with 7 bits of
// sub-bucket precision): fixed memory, values from 1 ns to hours, quantiles within 0.8%.
// It is not safe for concurrent use; give each worker its own and Merge them.
type Histogram struct {
	counts []uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, numBuckets), min: math.MaxInt64}
}

// bucketOf returns the bucket of v: exact below 2*sub, then sub buckets per power of two.
func bucketOf(v uint64) int {
	if v < 2*sub {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1)
	return sub*(shift+1) + int(v>>shift) - sub
}

// bucketHigh returns the largest value that falls into bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*sub {
		return uint64(i)
	}
	shift := i/sub - 1
	m := uint64(i%sub + sub)
	return (m+1)<<shift - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(uint64(v))]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Mean is the exact mean of the recorded values (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Max is the largest recorded value (0 when empty).
func (h *Histogram) Max() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.max)
}

// Quantile returns the value below or at which a fraction q (0..1) of the recorded values lie:
// the highest value of the bucket holding the value of rank ceil(q·n), clamped to the recorded
// minimum and maximum. It is 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := int64(bucketHigh(i))
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// Quantiles returns the q-quantiles of ds by the nearest-rank method (the value of rank
// ceil(q·n) in sorted order), for small samples such as failover times. ds is sorted in place.
func Quantiles(ds []time.Duration, qs ...float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	if len(ds) == 0 {
		return out
	}
	slices.Sort(ds)
	for i, q := range qs {
		rank := int(math.Ceil(min(max(q, 0), 1) * float64(len(ds))))
		out[i] = ds[max(rank, 1)-1]
	}
	return out
}
