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
	now := time.Now()
	n.mu.Lock()
	r := Readiness{
		Serving:          n.health != nil && n.servingLocked(),
		Joined:           n.joined,
		UserFunctionDown: n.ufDown,
		Assigned:         len(n.parts),
		Restored:         len(n.restored),
	}
	owners := map[int32]*owner{}
	for p := range n.parts {
		if !n.restored[p] {
			owners[p] = n.local[p] // nil while its producer is being made
		}
	}
	n.mu.Unlock()
	for p, o := range owners {
		rp := RestoreProgress{Partition: p}
		if o != nil {
			v := o.meter.view(now)
			rp.Done, rp.Total = v.Done, v.Total
			if v.Elapsed > 0 {
				rp.Started = now.Add(-v.Elapsed)
			}
		}
		r.Restoring = append(r.Restoring, rp)
	}
	slices.SortFunc(r.Restoring, func(a, b RestoreProgress) int { return int(a.Partition - b.Partition) })
	return r
}
