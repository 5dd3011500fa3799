package bench

import (
	"hash/fnv"
	"testing"
)

func TestEntityOf(t *testing.T) {
	for p := range int32(16) {
		id := entityOf(fnvPartition, "probe", p, 16)
		if got := fnvPartition([]byte(id), 16); got != p {
			t.Fatalf("entityOf(%d) = %q in partition %d", p, id, got)
		}
	}
}

// fnvPartition stands in for kstate's partitioner.
func fnvPartition(key []byte, partitions int32) int32 {
	h := fnv.New32a()
	h.Write(key)
	return int32(h.Sum32() % uint32(partitions))
}
