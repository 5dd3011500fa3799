// Package broker is everything kstate says to Kafka: client configuration (TLS, SASL), the
// topic layout and its management, the fenced transactional producer of each owned partition,
// read_committed restore reads, consumer-group membership over the commands topic, and the
// embedded broker of `kstate dev`.
//
// It is the only package of kstate that imports franz-go (and Sarama); its exported API speaks
// in its own small types (Record, Header, TopicSpec, ...), so the rest of kstate never does.
//
// # Layout
//
// Config names everything (DESIGN.md §2): the entity topics "<ns>.<pid>.<kind>" (kind events,
// snapshots, state, crdt or crdt-state), the app's "<ns>.<app>.commands" and "<ns>.<app>.owners", the group
// "<ns>.<app>" and the transactional ids "<ns>.<app>.p<N>". Config.AppTopics turns an app's
// entity types into TopicSpecs and Admin.EnsureTopics creates what is missing; an existing topic
// with another partition count or cleanup.policy is reported (*TopicMismatchError), never
// altered or re-created.
//
// # Owning a partition
//
// The assignment of the commands topic's partitions in the app's group (JoinGroup) decides who
// should own partition p; the transactional id decides who can write it (RELIABILITY.md F1):
//
//  1. NewTxnProducer(cfg, p) and Acquire(ctx, ownerRecord): InitProducerID bumps the epoch of
//     "<ns>.<app>.p<p>", which fences every older producer and aborts its open transaction; a
//     transaction holding the ownership record is left open.
//  2. ReadToEnd the partition of every topic read_committed, from the checkpoint to the end
//     captured after the fence.
//  3. Commit(ctx, nil) publishes ownership; then serve, one Commit per group-commit window.
//  4. ErrFenced: drop the partition. ErrIndefinite: Close or Acquire again, reload what the
//     transaction touched, answer UNAVAILABLE. ErrAborted: nothing is visible, retry.
//
// # Partitioning and other clients
//
// Partition is Kafka's default keyed partitioner (murmur2), so records keyed by entity id from
// the Java client, franz-go (default partitioner) or librdkafka's murmur2_random land on the
// owning partition. Sarama's default partitioner is FNV-1a based and does not: Sarama producers
// must set Config.Producer.Partitioner = sarama.NewMurmur2Partitioner (Sarama ≥ 1.46).
package broker
