package processor

import (
	"slices"
	"time"
)

// Readiness is how far a node is from serving: what `kstate dev` waits on before it says "up",
// and what it shows meanwhile.
type Readiness struct {
	// Serving is the readiness rule of gRPC health and /readyz: joined, every assigned partition
	// restored, the user function reachable.
	Serving bool
	// Joined: the group has assigned this node at least once.
	Joined bool
	// UserFunctionDown: the connection to the user function failed and is not back.
	UserFunctionDown bool
	// Assigned and Restored count the partitions the group assigned this node and those of them
	// that serve.
	Assigned, Restored int
	// Restoring lists the assigned partitions still being acquired, by partition.
	Restoring []RestoreProgress
}

// RestoreProgress is one partition's restore: Done of Total offsets read (transaction markers
// included, as broker.ReadProgress counts them); Total is 0 until the end offsets are known.
type RestoreProgress struct {
	Partition   int32
	Done, Total int64
	// Started is when this restore's read began.
	Started time.Time
}

// Readiness reports the node's state now.
func (n *Node) Readiness() Readiness {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := Readiness{
		Serving:          n.health != nil && n.servingLocked(),
		Joined:           n.joined,
		UserFunctionDown: n.ufDown,
		Assigned:         len(n.parts),
		Restored:         len(n.restored),
	}
	for p := range n.parts {
		if n.restored[p] {
			continue
		}
		rp := RestoreProgress{Partition: p}
		if pr, ok := n.progress[p]; ok {
			rp = pr.RestoreProgress
		}
		r.Restoring = append(r.Restoring, rp)
	}
	slices.SortFunc(r.Restoring, func(a, b RestoreProgress) int { return int(a.Partition - b.Partition) })
	return r
}

// restoreState is a partition's latest restore and when it last logged its progress.
type restoreState struct {
	RestoreProgress
	logged time.Time
}

// restoreLogEvery is how often a long restore logs its progress.
const restoreLogEvery = 5 * time.Second

// restoreProgress is the broker.ReadProgress of o's restore: it feeds the metrics and Readiness,
// and logs the rate and the time left every restoreLogEvery.
func (o *owner) restoreProgress(done, total int64) {
	o.partMetrics().RestoreProgress(done, total)
	n := o.n
	now := time.Now()
	n.mu.Lock()
	if n.progress == nil {
		n.progress = make(map[int32]*restoreState)
	}
	pr, ok := n.progress[o.p]
	if !ok || done == 0 || done < pr.Done {
		pr = &restoreState{RestoreProgress: RestoreProgress{Partition: o.p, Started: now}, logged: now}
		n.progress[o.p] = pr
	}
	pr.Done, pr.Total = done, total
	started := pr.Started
	log := done < total && now.Sub(pr.logged) >= restoreLogEvery
	if log {
		pr.logged = now
	}
	n.mu.Unlock()
	if !log {
		return
	}
	elapsed := now.Sub(started).Seconds()
	rate := float64(done) / elapsed
	args := []any{"partition", o.p, "done", done, "total", total, "percent", done * 100 / max(total, 1), "offsets_per_sec", int64(rate)}
	if rate > 0 {
		args = append(args, "eta", time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second))
	}
	o.log.Info("restoring", args...)
}
