package kafkatest

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// admin returns a kadm client for addrs, closed when t ends.
func admin(t testing.TB, addrs []string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// AlterTopicConfigs sets configs of topic (IncrementalAlterConfigs, SET) on the cluster at addrs,
// fails t if the cluster refuses any of them, and waits (at most 20 s) until the brokers describe
// the topic with the new values: on KRaft the controller commits the change and brokers apply it a
// moment later. Give values as the broker prints them ("0.01", not ".01"). Tests use it, for
// example, to make a compacted topic compact within seconds (segment.ms, delete.retention.ms,
// min.cleanable.dirty.ratio).
func AlterTopicConfigs(t testing.TB, addrs []string, topic string, configs map[string]string) {
	t.Helper()
	adm := admin(t, addrs)
	keys := make([]string, 0, len(configs))
	for k := range configs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	alter := make([]kadm.AlterConfig, 0, len(keys))
	for _, k := range keys {
		v := configs[k]
		alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resps, err := adm.AlterTopicConfigs(ctx, alter, topic)
	if err != nil {
		t.Fatalf("kafkatest: alter configs of %s: %v", topic, err)
	}
	for _, r := range resps {
		if r.Err != nil {
			t.Fatalf("kafkatest: alter configs of %s: %v %s", r.Name, r.Err, r.ErrMessage)
		}
	}
	for {
		var stale []string
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err == nil {
			var rc kadm.ResourceConfig
			if rc, err = rcs.On(topic, nil); err == nil && rc.Err != nil {
				err = rc.Err
			}
			got := make(map[string]string, len(rc.Configs))
			for _, c := range rc.Configs {
				if c.Value != nil {
					got[c.Key] = *c.Value
				}
			}
			for _, k := range keys {
				if got[k] != configs[k] {
					stale = append(stale, k+"="+got[k])
				}
			}
		}
		if err == nil && len(stale) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: %s still described with %v 20 s after altering its configs to %v (last error: %v)", topic, stale, configs, err)
		case <-time.After(50 * time.Millisecond): // poll interval of a bounded wait
		}
	}
}

// DeleteTopics deletes topics on the cluster at addrs and waits (at most 30 s) until the cluster
// no longer lists any of them, so a test can create them again at once.
func DeleteTopics(t testing.TB, addrs []string, topics ...string) {
	t.Helper()
	adm := admin(t, addrs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resps, err := adm.DeleteTopics(ctx, topics...)
	if err != nil {
		t.Fatalf("kafkatest: delete %v: %v", topics, err)
	}
	for _, r := range resps {
		if r.Err != nil {
			t.Fatalf("kafkatest: delete %s: %v", r.Topic, r.Err)
		}
	}
	for {
		tds, err := adm.ListTopics(ctx)
		if err == nil {
			left := 0
			for _, name := range topics {
				if td, ok := tds[name]; ok && !errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
					left++
				}
			}
			if left == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topics %v still listed 30 s after their deletion (last error: %v)", topics, err)
		case <-time.After(50 * time.Millisecond): // poll interval of a bounded wait
		}
	}
}

// KfakeCompacting starts a kfake cluster (see Kfake) whose log cleaner compacts every topic with
// cleanup.policy=compact every interval (kfake's log.cleaner.backoff.ms), removing tombstones
// older than the topic's delete.retention.ms. kfake compacts everything but a partition's last
// batch and has no segments, dirty ratio or compaction lag: it is a coarser model of a real
// broker's cleaner.
func KfakeCompacting(t testing.TB, interval time.Duration) []string {
	t.Helper()
	return Kfake(t, kfake.BrokerConfigs(map[string]string{
		"log.cleaner.backoff.ms": strconv.FormatInt(interval.Milliseconds(), 10),
	}))
}
