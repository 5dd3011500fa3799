// Package partition is a kstate node's per-partition storage: one Pebble database holding, for
// every partition the node owns or owned, the entity images needed to activate entities without
// reading Kafka, and the Kafka offsets they reflect (DESIGN §2–4).
//
// The logic is pure and lives apart from the IO: Step turns an entity's Meta and one Record into
// the mutations it implies (contiguous event sequences, snapshots that cover events, value
// tombstones), and RestoreProgress tracks a restore until every topic's position reaches the end
// offset taken after fencing. Store does the IO: Apply writes records and the offsets they reflect
// in one batch (RELIABILITY F7), LoadEventSourced and LoadValue read one entity through an
// iterator bounded by its key prefix, and DropPartition deletes a partition in one range deletion.
//
// Only this package imports Pebble, and it never sees the Kafka client: the processor adapts
// Kafka records into Record.
package partition
