package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Key layout. Every key of partition p starts with p as a big-endian uint32, so one DeleteRange of
// [prefix(p), prefix(p+1)) drops a whole partition, and one bounded iterator reads one entity.
//
//	p | 0x01 | topic                                   next offset to read (8 bytes big-endian)
//	p | 0x02 | esc(pid) | esc(entity) | 0x01           EntityMeta
//	p | 0x02 | esc(pid) | esc(entity) | 0x02           StoredSnapshot
//	p | 0x02 | esc(pid) | esc(entity) | 0x03 | seq     StoredEvent (seq as big-endian uint64)
//	p | 0x03 | esc(pid) | esc(entity)                  StoredValue
//	p | 0x04                                           Lineage (see lineage.go)
//	p | 0x05 | esc(pid) | esc(entity) | esc(key)       IdempotencyRecord (as written to Kafka)
//	p | 0x06 | expiry | esc(pid) | esc(entity) | esc(key)   empty: the expiry index (expiry as
//	                                                   big-endian Unix nanoseconds)
//	p | 0x07 | esc(pid) | esc(entity)                  CRDT replica (crdtlog encoding, opaque here)
//	p | 0x08 | topic                                   next offset of a CRDT delta topic partition
//	ff ff ff ff | "schema"                             store schema version (outside every partition)
//
// esc writes a string so that no encoded string is a prefix of another and byte order is kept:
// every 0x00 becomes 0x00 0xff and the string ends with 0x00 0x01 (CockroachDB's bytes encoding).
// Partitions are non-negative int32s, so their first byte is below 0x80 and never meets the
// global 0xff prefix.
const (
	tagOffset  byte = 0x01
	tagEntity  byte = 0x02
	tagValue   byte = 0x03
	tagLineage byte = 0x04
	tagIdem    byte = 0x05
	tagExpiry  byte = 0x06
	tagCrdt    byte = 0x07
	tagCrdtOff byte = 0x08

	subMeta     byte = 0x01
	subSnapshot byte = 0x02
	subEvent    byte = 0x03

	escByte   byte = 0x00
	escEscape byte = 0xff
	escEnd    byte = 0x01
)

// schemaKey holds the store's schema version; see schemaVersion.
var schemaKey = []byte("\xff\xff\xff\xffschema")

// appendPartition appends p's 4-byte prefix.
func appendPartition(dst []byte, p int32) []byte {
	return binary.BigEndian.AppendUint32(dst, uint32(p))
}

// partitionBounds returns [lower, upper) covering every key of partition p.
func partitionBounds(p int32) (lower, upper []byte) {
	lower = appendPartition(nil, p)
	upper = binary.BigEndian.AppendUint32(nil, uint32(p)+1)
	return lower, upper
}

// appendEscaped appends the order-preserving, prefix-free encoding of s.
func appendEscaped(dst []byte, s string) []byte {
	for {
		i := indexByte(s, escByte)
		if i < 0 {
			break
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, escByte, escEscape)
		s = s[i+1:]
	}
	dst = append(dst, s...)
	return append(dst, escByte, escEnd)
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// decodeEscaped reads one escaped string from the front of b and returns it with the rest of b.
func decodeEscaped(b []byte) (string, []byte, error) {
	var out []byte
	for {
		i := bytes.IndexByte(b, escByte)
		if i < 0 || i+1 >= len(b) {
			return "", nil, fmt.Errorf("%w: unterminated string in key", ErrCorrupt)
		}
		out = append(out, b[:i]...)
		switch b[i+1] {
		case escEscape:
			out = append(out, escByte)
			b = b[i+2:]
		case escEnd:
			return string(out), b[i+2:], nil
		default:
			return "", nil, fmt.Errorf("%w: bad escape 0x%02x in key", ErrCorrupt, b[i+1])
		}
	}
}

// offsetKey is the key of the next-offset checkpoint of topic in partition p.
func offsetKey(p int32, topic string) []byte {
	k := make([]byte, 0, 5+len(topic))
	k = appendPartition(k, p)
	k = append(k, tagOffset)
	return append(k, topic...)
}

// offsetBounds returns [lower, upper) covering every checkpoint of partition p.
func offsetBounds(p int32) (lower, upper []byte) {
	lower = append(appendPartition(nil, p), tagOffset)
	upper = append(appendPartition(nil, p), tagOffset+1)
	return lower, upper
}

// appendEntityPrefix appends the prefix shared by every key of one event-sourced entity.
func appendEntityPrefix(dst []byte, p int32, pid, entityID string) []byte {
	dst = appendPartition(dst, p)
	dst = append(dst, tagEntity)
	dst = appendEscaped(dst, pid)
	return appendEscaped(dst, entityID)
}

// entityBounds returns [lower, upper) covering every key of one event-sourced entity.
func entityBounds(p int32, pid, entityID string) (lower, upper []byte) {
	lower = appendEntityPrefix(nil, p, pid, entityID)
	// The prefix ends with the terminator 0x00 0x01; bumping it to 0x00 0x02 bounds exactly the
	// keys that extend this prefix, because a longer entity id's encoding continues differently.
	upper = append([]byte(nil), lower...)
	upper[len(upper)-1]++
	return lower, upper
}

// appendMetaKey appends the EntityMeta key of an entity.
func appendMetaKey(dst []byte, p int32, pid, entityID string) []byte {
	return append(appendEntityPrefix(dst, p, pid, entityID), subMeta)
}

// appendSnapshotKey appends the StoredSnapshot key of an entity.
func appendSnapshotKey(dst []byte, p int32, pid, entityID string) []byte {
	return append(appendEntityPrefix(dst, p, pid, entityID), subSnapshot)
}

// appendEventKey appends the StoredEvent key of an entity's event seq.
func appendEventKey(dst []byte, p int32, pid, entityID string, seq int64) []byte {
	dst = append(appendEntityPrefix(dst, p, pid, entityID), subEvent)
	return binary.BigEndian.AppendUint64(dst, uint64(seq))
}

// appendValueKey appends the StoredValue key of a value entity.
func appendValueKey(dst []byte, p int32, pid, entityID string) []byte {
	dst = appendPartition(dst, p)
	dst = append(dst, tagValue)
	dst = appendEscaped(dst, pid)
	return appendEscaped(dst, entityID)
}

// entityKey is a decoded key of an event-sourced entity's image.
type entityKey struct {
	partition     int32
	persistenceID string
	entityID      string
	sub           byte
	seq           int64 // only for subEvent
}

// decodeEntityKey decodes a key written by appendMetaKey, appendSnapshotKey or appendEventKey.
func decodeEntityKey(k []byte) (entityKey, error) {
	var ek entityKey
	if len(k) < 5 || k[4] != tagEntity {
		return ek, fmt.Errorf("%w: not an entity key: %x", ErrCorrupt, k)
	}
	ek.partition = int32(binary.BigEndian.Uint32(k))
	rest := k[5:]
	var err error
	if ek.persistenceID, rest, err = decodeEscaped(rest); err != nil {
		return ek, err
	}
	if ek.entityID, rest, err = decodeEscaped(rest); err != nil {
		return ek, err
	}
	if len(rest) == 0 {
		return ek, fmt.Errorf("%w: entity key without kind: %x", ErrCorrupt, k)
	}
	ek.sub, rest = rest[0], rest[1:]
	switch ek.sub {
	case subMeta, subSnapshot:
		if len(rest) != 0 {
			return ek, fmt.Errorf("%w: trailing bytes in entity key: %x", ErrCorrupt, k)
		}
	case subEvent:
		if len(rest) != 8 {
			return ek, fmt.Errorf("%w: bad event sequence in key: %x", ErrCorrupt, k)
		}
		ek.seq = int64(binary.BigEndian.Uint64(rest))
	default:
		return ek, fmt.Errorf("%w: unknown entity key kind 0x%02x: %x", ErrCorrupt, ek.sub, k)
	}
	return ek, nil
}

// appendIdemKey appends the key of a remembered command outcome.
func appendIdemKey(dst []byte, p int32, pid, entityID, key string) []byte {
	dst = appendPartition(dst, p)
	dst = append(dst, tagIdem)
	return appendIdemSuffix(dst, pid, entityID, key)
}

func appendIdemSuffix(dst []byte, pid, entityID, key string) []byte {
	dst = appendEscaped(dst, pid)
	dst = appendEscaped(dst, entityID)
	return appendEscaped(dst, key)
}

// appendExpiryKey appends the expiry index key of a remembered outcome expiring at unixNano.
func appendExpiryKey(dst []byte, p int32, unixNano int64, pid, entityID, key string) []byte {
	dst = appendPartition(dst, p)
	dst = append(dst, tagExpiry)
	dst = binary.BigEndian.AppendUint64(dst, uint64(max(unixNano, 0)))
	return appendIdemSuffix(dst, pid, entityID, key)
}
