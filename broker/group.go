package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// GroupCallbacks receive the app's partition ownership changes. They run one at a time on the
// group's management goroutine, and the group waits for each to return: Revoked must drop the
// partitions (stop serving, finish or abort their transactions) before returning, within the
// config's RebalanceTimeout. Nil callbacks are skipped. Never call Group.Close from a callback.
type GroupCallbacks struct {
	// Assigned: this member now owns parts (cooperative: only the newly added ones).
	Assigned func(ctx context.Context, parts []int32)
	// Revoked: this member gives up parts in an orderly rebalance or on Close.
	Revoked func(ctx context.Context, parts []int32)
	// Lost: this member lost parts without a rebalance (session expired, fenced from the group);
	// another member may already own them.
	Lost func(ctx context.Context, parts []int32)
}

// Group is this node's membership in the app's consumer group over the commands topic
// (cfg.GroupID(), cfg.CommandsTopic()), with the cooperative-sticky balancer. The partitions
// of the commands topic it is assigned are the partitions it owns. Fetching of the commands
// topic is paused, so membership (heartbeats, rebalances, callbacks) goes on without anyone
// polling records.
type Group struct {
	cl  *kgo.Client
	log hclog.Logger

	mu       sync.Mutex
	assigned map[int32]bool
}

// JoinGroup joins the app's group as instanceID (used in the client id, so operators can tell
// members apart) and returns at once; cb is called as the assignment changes. The commands
// topic must exist (Admin.EnsureTopics): a missing one is an error wrapping ErrTopicNotFound.
//
// instanceID is not Kafka static membership (group.instance.id): a static member does not leave
// the group on Close, and kstate wants its partitions moved at once when a node stops.
func JoinGroup(ctx context.Context, cfg Config, instanceID string, cb GroupCallbacks) (*Group, error) {
	cfg = cfg.withDefaults()
	if instanceID != "" {
		cfg.ClientID = cfg.ClientID + "-" + instanceID
	}
	topic := cfg.CommandsTopic()
	g := &Group{
		log:      cfg.Logger.Named("group").With("group", cfg.GroupID(), "member", instanceID),
		assigned: make(map[int32]bool),
	}
	call := func(what string, fn func(context.Context, []int32), update func([]int32)) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
			parts := slices.Clone(m[topic])
			if len(parts) == 0 {
				return
			}
			slices.Sort(parts)
			g.log.Info("partitions "+what, "partitions", parts)
			if fn != nil {
				fn(ctx, parts)
			}
			g.mu.Lock()
			update(parts)
			g.mu.Unlock()
		}
	}
	add := func(ps []int32) {
		for _, p := range ps {
			g.assigned[p] = true
		}
	}
	remove := func(ps []int32) {
		for _, p := range ps {
			delete(g.assigned, p)
		}
	}
	cl, err := cfg.newClientAs(roleGroup,
		kgo.ConsumerGroup(cfg.GroupID()),
		kgo.ConsumeTopics(topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.HeartbeatInterval(cfg.SessionTimeout/3),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.OnPartitionsAssigned(call("assigned", cb.Assigned, add)),
		kgo.OnPartitionsRevoked(call("revoked", cb.Revoked, remove)),
		kgo.OnPartitionsLost(call("lost", cb.Lost, remove)),
	)
	if err != nil {
		return nil, err
	}
	// Command ingress over Kafka is not consumed yet: keep the assignment, fetch nothing.
	cl.PauseFetchTopics(topic)
	g.cl = cl
	r := &reader{cl: cl, adm: kadm.NewClient(cl), topics: []string{topic}}
	if err := r.refreshMetadata(ctx); err != nil {
		cl.Close()
		err = cfg.hint(err)
		if errors.Is(err, ErrTopicNotFound) {
			return nil, fmt.Errorf("join group %s: commands %w", cfg.GroupID(), err)
		}
		return nil, fmt.Errorf("join group %s: %w", cfg.GroupID(), err)
	}
	return g, nil
}

// Assignment returns the partitions this member owns now, sorted (those whose Assigned
// callback returned and whose Revoked or Lost callback has not run).
func (g *Group) Assignment() []int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]int32, 0, len(g.assigned))
	for p := range g.assigned {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Close leaves the group promptly: the Revoked callback runs for every owned partition, then
// the group rebalances them to the other members. It must not be called from a callback.
func (g *Group) Close() {
	g.cl.Close()
}
