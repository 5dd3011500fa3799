package processor

import (
	"sync"
	"time"
)

// restoreLogEvery is how often a restore that runs long logs its progress: the first line comes
// this long after the read began, so short restores (the common case) log nothing but the final
// "partition acquired".
var restoreLogEvery = 5 * time.Second // a variable for tests

// Phases of an acquisition, as the console shows them.
const (
	phaseAcquiring = "acquiring" // fencing the previous owner, publishing ownership, checking the image
	phaseRestoring = "restoring" // reading the partition's records into Pebble
	phaseServing   = "serving"   // restored; the partition answers commands
)

// restoreMeter follows one acquisition of a partition for the log and the console: its phase,
// and during the restore, offsets done of total (broker.ReadProgress), the rate and the time left.
// The partition's supervisor goroutine writes it (acquire, and restore's progress callback, which
// runs on that goroutine); console requests read it. The zero value is in phaseAcquiring.
type restoreMeter struct {
	mu          sync.Mutex
	phase       string
	began       time.Time // when the current read began (zero before the restore)
	done, total int64
	known       bool // total is known: the read has listed its end offsets
	nextLog     time.Time
	took        time.Duration // the finished restore's duration (phaseServing)
}

// restoreView is a restoreMeter at one instant.
type restoreView struct {
	Phase string
	// Done and Total are offsets read and to read (records, plus transaction markers and
	// compaction gaps), summed over the partition's entity topics.
	Done, Total int64
	// Rate is offsets per second since the read began, 0 before anything was read.
	Rate float64
	// ETA is the time left at Rate, -1 when unknown (nothing read yet).
	ETA time.Duration
	// Elapsed is how long the read has run, or took once serving.
	Elapsed time.Duration
}

// begin starts (or restarts: acquire may read again from the start) the restore's read at now.
func (m *restoreMeter) begin(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase, m.began, m.done, m.total, m.known = phaseRestoring, now, 0, 0, false
	m.nextLog = now.Add(restoreLogEvery)
}

// update records progress at now and reports whether a progress line is due; v is the progress
// to log.
func (m *restoreMeter) update(now time.Time, done, total int64) (v restoreView, logNow bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done, m.total, m.known = done, total, true
	if done < total && !m.nextLog.IsZero() && !now.Before(m.nextLog) {
		logNow = true
		m.nextLog = now.Add(restoreLogEvery)
	}
	return m.viewLocked(now), logNow
}

// served records that the restore finished at now and the partition serves.
func (m *restoreMeter) served(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase = phaseServing
	if !m.began.IsZero() {
		m.took = now.Sub(m.began)
	}
	m.done = m.total
}

// view returns the meter at now.
func (m *restoreMeter) view(now time.Time) restoreView {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.viewLocked(now)
}

func (m *restoreMeter) viewLocked(now time.Time) restoreView {
	v := restoreView{Phase: m.phase, Done: m.done, Total: m.total, ETA: -1}
	if v.Phase == "" {
		v.Phase = phaseAcquiring
	}
	switch {
	case v.Phase == phaseServing:
		v.Elapsed, v.ETA = m.took, 0
		if v.Elapsed > 0 {
			v.Rate = float64(v.Done) / v.Elapsed.Seconds()
		}
	case !m.began.IsZero():
		v.Elapsed = now.Sub(m.began)
		if v.Elapsed > 0 && v.Done > 0 {
			v.Rate = float64(v.Done) / v.Elapsed.Seconds()
			v.ETA = time.Duration(float64(v.Total-v.Done) / v.Rate * float64(time.Second))
		}
		if m.known && v.Done >= v.Total {
			v.ETA = 0
		}
	}
	return v
}

// restoreLogArgs are the key/value pairs of a restore's progress line.
func restoreLogArgs(v restoreView) []any {
	pct := 100.0
	if v.Total > 0 {
		pct = 100 * float64(v.Done) / float64(v.Total)
	}
	eta := "unknown"
	if v.ETA >= 0 {
		eta = v.ETA.Round(time.Second).String()
	}
	return []any{
		"records_done", v.Done, "records_total", v.Total,
		"percent", int(pct),
		"records_per_second", int64(v.Rate),
		"eta", eta,
		"elapsed", v.Elapsed.Round(time.Second).String(),
	}
}
