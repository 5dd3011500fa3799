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
// Choices a caller should know:
//   - A checkpoint is the next offset to read. Apply advances it past every record it applies and
//     to any larger offset passed in; it refuses to move it backwards or to apply a record below
//     it, so a record can never be folded in twice.
//   - The restore of a `.snapshots` topic and of its `.events` topic may interleave in any way:
//     both orders give the same image. A null value on a `.snapshots` topic is ignored.
//   - An event sequence gap or duplicate fails Apply with a *SequenceError and writes nothing: it
//     means two writers, and the partition must not go on (RELIABILITY F6).
//   - Without Config.Sync, a crash may lose the latest batches but never part of one; Kafka
//     replays them from the surviving checkpoint.
//   - Each partition's writer caches the sequence metadata of recently written entities
//     (Config.MetaCacheSize), filled only after a batch commits and cleared by DropPartition.
//
// Only this package imports Pebble, and it never sees the Kafka client: the processor adapts
// Kafka records into Record.
package partition
