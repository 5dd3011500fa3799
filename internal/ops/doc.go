// Package ops builds what `kstate status` and `kstate inspect` show an operator, from what the
// command read from Kafka (through the broker package) and from the nodes' admin listeners: the
// app's nodes and partitions, and one entity's events or state decoded with the user's
// descriptors. It does no Kafka IO itself, so every view is testable from plain values.
package ops
