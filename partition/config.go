package partition

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
)

const (
	// DefaultCacheSize is the block cache size used when Config.CacheSize is 0.
	DefaultCacheSize int64 = 64 << 20
	// DefaultMemTableSize is the memtable size used when Config.MemTableSize is 0.
	DefaultMemTableSize uint64 = 32 << 20
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
	// CacheSize is the block cache size in bytes; 0 means DefaultCacheSize.
	CacheSize int64
	// MemTableSize is the size of one memtable in bytes; 0 means DefaultMemTableSize.
	MemTableSize uint64
}

// DefaultConfig returns the defaults: asynchronous WAL, DefaultCacheSize, DefaultMemTableSize.
// Dir must still be set.
func DefaultConfig() Config {
	return Config{CacheSize: DefaultCacheSize, MemTableSize: DefaultMemTableSize}
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
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("partition: config: %w", err)
	}
	return nil
}
