package partition

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
)

const (
	// DefaultCacheSize is the block cache size used when Config.CacheSize is 0.
	DefaultCacheSize int64 = 128 << 20
	// DefaultMemTableSize is the memtable size used when Config.MemTableSize is 0.
	DefaultMemTableSize uint64 = 16 << 20
	// cachePerMemTable is the smallest ratio of CacheSize to MemTableSize: Pebble reserves the
	// memory of live memtables (up to two, plus one being flushed) from the block cache, and a
	// cache no larger than that holds no blocks at all.
	cachePerMemTable = 4
	// DefaultMetaCacheSize is the per-partition meta cache size used when Config.MetaCacheSize is 0.
	DefaultMetaCacheSize = 16384
	// maxMemTableSize is Pebble's limit (just under 4 GiB).
	maxMemTableSize uint64 = 4<<30 - 1
)

// Config configures a Store.
type Config struct {
	// Dir is the directory of the node's Pebble database. Required.
	Dir string
	// FS is the file system; nil means the disk. Tests use vfs.NewMem or vfs.NewCrashableMem.
	FS vfs.FS
	// Logger receives Pebble's logs and the store's own; nil discards them.
	Logger hclog.Logger
	// Sync makes every Apply and DropPartition wait for the WAL to reach stable storage. Without
	// it a crash may lose the most recent batches — never part of one — which is safe because the
	// checkpoint lives in the same batch and Kafka replays the tail (RELIABILITY F7).
	Sync bool
	// CacheSize is the block cache size in bytes; 0 means DefaultCacheSize. Pebble reserves the
	// memory of live memtables from it, so it must be at least 4×MemTableSize.
	CacheSize int64
	// MemTableSize is the size of one memtable in bytes; 0 means DefaultMemTableSize.
	MemTableSize uint64
	// MetaCacheSize is how many entities' sequence metadata each partition's writer keeps in
	// memory, so restores and appends need not read it back from Pebble; 0 means
	// DefaultMetaCacheSize, a negative value disables the cache.
	MetaCacheSize int
}

// DefaultConfig returns the defaults: asynchronous WAL, DefaultCacheSize, DefaultMemTableSize,
// DefaultMetaCacheSize. Dir must still be set.
func DefaultConfig() Config {
	return Config{CacheSize: DefaultCacheSize, MemTableSize: DefaultMemTableSize, MetaCacheSize: DefaultMetaCacheSize}
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("CacheSize %d is negative", c.CacheSize))
	}
	if c.MemTableSize > maxMemTableSize {
		errs = append(errs, fmt.Errorf("MemTableSize %d must be below 4 GiB", c.MemTableSize))
	}
	cache, mem := c.CacheSize, c.MemTableSize
	if cache == 0 {
		cache = DefaultCacheSize
	}
	if mem == 0 {
		mem = DefaultMemTableSize
	}
	if cache >= 0 && mem <= maxMemTableSize && uint64(cache) < cachePerMemTable*mem {
		errs = append(errs, fmt.Errorf("CacheSize %d must be at least %d×MemTableSize (%d): Pebble reserves memtables from the block cache",
			cache, cachePerMemTable, mem))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("partition: config: %w", err)
	}
	return nil
}
