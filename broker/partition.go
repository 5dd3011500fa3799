package broker

import "encoding/binary"

// Partition returns the partition of key among n partitions the way Kafka's default partitioner
// does (Java client, franz-go's default, Sarama's NewMurmur2Partitioner):
// toPositive(murmur2(key)) % n, where toPositive clears the sign bit. Every record keyed by an
// entity id therefore lands on the partition that owns the entity, whichever client produced it.
// n must be positive.
func Partition(key []byte, n int32) int32 {
	return int32(Murmur2(key)&0x7fffffff) % n
}

// Murmur2 is the 32-bit MurmurHash2 variant Kafka uses for partitioning (seed 0x9747b28c,
// little-endian 4-byte blocks), as org.apache.kafka.common.utils.Utils.murmur2.
func Murmur2(data []byte) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	length := len(data)
	h := uint32(seed) ^ uint32(length)
	for len(data) >= 4 {
		k := binary.LittleEndian.Uint32(data)
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		data = data[4:]
	}
	switch len(data) {
	case 3:
		h ^= uint32(data[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
