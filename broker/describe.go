package broker

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// What operators read of an app from Kafka alone (`kstate status`, `kstate inspect`, `kstate
// topics`): its consumer group, its owners topic, the claims of its persistence ids, an entity's
// records and the records of topics.

// GroupMember is one member of an app's consumer group: one node.
type GroupMember struct {
	MemberID string
	// ClientID is the node's client id: Config.ClientID, "-", its node id (JoinGroup).
	ClientID string
	Host     string
	// Partitions are the partitions of the commands topic it is assigned: those it owns, sorted.
	Partitions []int32
}

// GroupState describes an app's consumer group.
type GroupState struct {
	Group string
	// State is Kafka's: Stable, PreparingRebalance, CompletingRebalance, Empty or Dead.
	State   string
	Members []GroupMember
}

// DescribeGroup describes the app's consumer group (Config.GroupID): its members and the
// partitions each is assigned. A group that does not exist is Dead with no members.
func (a *Admin) DescribeGroup(ctx context.Context) (GroupState, error) {
	gs := GroupState{Group: a.cfg.GroupID()}
	dgs, err := a.adm.DescribeGroups(ctx, gs.Group)
	if err != nil {
		return gs, a.cfg.hint(fmt.Errorf("describe group %s: %w", gs.Group, err))
	}
	dg, ok := dgs[gs.Group]
	if !ok {
		gs.State = "Dead"
		return gs, nil
	}
	if dg.Err != nil {
		return gs, fmt.Errorf("describe group %s: %w", gs.Group, dg.Err)
	}
	gs.State = dg.State
	topic := a.cfg.CommandsTopic()
	for _, m := range dg.Members {
		gm := GroupMember{MemberID: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost}
		if ca, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range ca.Topics {
				if t.Topic == topic {
					gm.Partitions = append(gm.Partitions, t.Partitions...)
				}
			}
		}
		slices.Sort(gm.Partitions)
		gs.Members = append(gs.Members, gm)
	}
	slices.SortFunc(gs.Members, func(x, y GroupMember) int {
		if c := strings.Compare(x.ClientID, y.ClientID); c != 0 {
			return c
		}
		return strings.Compare(x.MemberID, y.MemberID)
	})
	return gs, nil
}

// ReadOwners reads the app's owners topic (Config.OwnersTopic) to its end and returns the latest
// record of each partition, released ones included. Records that do not decode are skipped.
func ReadOwners(ctx context.Context, cfg Config) (map[int32]*kstatev1.OwnerRecord, error) {
	cfg = cfg.withDefaults()
	owners := make(map[int32]*kstatev1.OwnerRecord)
	_, err := ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: cfg.OwnersTopic(), Partition: 0, From: -1}}, func(r Record) error {
		var rec kstatev1.OwnerRecord
		if r.Value != nil && proto.Unmarshal(r.Value, &rec) == nil {
			owners[rec.GetPartition()] = &rec
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", cfg.OwnersTopic(), err)
	}
	return owners, nil
}

// ReadClaims reads the namespace's claims topic (Config.ClaimsTopic): the app each persistence id
// belongs to (ClaimPersistenceIDs).
func ReadClaims(ctx context.Context, cfg Config) (map[string]string, error) {
	cs, err := readClaims(ctx, cfg.withDefaults())
	if err != nil {
		return nil, err
	}
	apps := make(map[string]string, len(cs))
	for pid, c := range cs {
		apps[pid] = c.app
	}
	return apps, nil
}

// ReadKey reads, in each of topics, the partition key belongs to (Partition over the topic's
// partition count, as kstate writes) from its log start to its end, read_committed, and returns
// the records with that key: by topic in the order given, each topic's in offset order. It reads
// the whole partition (Kafka has no index by key), so it costs what restoring the partition does.
func ReadKey(ctx context.Context, cfg Config, topics []TopicInfo, key []byte) ([]Record, error) {
	parts := make([]TopicPartitionFrom, 0, len(topics))
	for _, t := range topics {
		if t.Partitions < 1 {
			continue
		}
		parts = append(parts, TopicPartitionFrom{Topic: t.Name, Partition: Partition(key, t.Partitions), From: -1})
	}
	byTopic := make(map[string][]Record, len(parts))
	_, err := ReadToEnd(ctx, cfg, parts, func(r Record) error {
		if bytes.Equal(r.Key, key) {
			byTopic[r.Topic] = append(byTopic[r.Topic], r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, t := range topics {
		rs := byTopic[t.Name]
		slices.SortFunc(rs, func(x, y Record) int { return cmp.Compare(x.Offset, y.Offset) })
		out = append(out, rs...)
		delete(byTopic, t.Name) // a topic listed twice is returned once
	}
	return out, nil
}

// CountRecords reads every partition of topics to its end, read_committed, and counts the
// records: unlike end offsets, the counts leave out transaction markers (one per partition per
// transaction), aborted records and what compaction or retention removed. It returns, per topic,
// the count of each partition.
func CountRecords(ctx context.Context, cfg Config, topics []TopicInfo) (map[string][]int64, error) {
	counts := make(map[string][]int64, len(topics))
	var most int32
	for _, t := range topics {
		counts[t.Name] = make([]int64, t.Partitions)
		most = max(most, t.Partitions)
	}
	// ReadToEnd reads one partition per topic: partition p of every topic at once.
	for p := int32(0); p < most; p++ {
		var parts []TopicPartitionFrom
		for _, t := range topics {
			if p < t.Partitions {
				parts = append(parts, TopicPartitionFrom{Topic: t.Name, Partition: p, From: -1})
			}
		}
		_, err := ReadToEnd(ctx, cfg, parts, func(r Record) error {
			counts[r.Topic][r.Partition]++
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("count records: %w", err)
		}
	}
	return counts, nil
}
