// Package kafkatest gives tests a Kafka broker: the real Apache Kafka broker named by
// KSTATE_KAFKA_BROKERS (started by scripts/kafka.sh in CI), or an in-process kfake cluster.
//
// It lives under broker/ because only broker/ may import franz-go (internal/lint).
package kafkatest

import (
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// EnvBrokers names the environment variable with the real broker's bootstrap addresses,
// comma separated.
const EnvBrokers = "KSTATE_KAFKA_BROKERS"

// IsReal reports whether a real broker is configured.
func IsReal() bool { return strings.TrimSpace(os.Getenv(EnvBrokers)) != "" }

// Cluster returns the real broker's addresses when KSTATE_KAFKA_BROKERS is set, else those of a
// fresh single-broker kfake cluster that is closed when t ends. Tests that share a real broker
// must name their topics and apps with Unique.
func Cluster(t testing.TB, opts ...kfake.Opt) []string {
	t.Helper()
	if IsReal() {
		return Real(t)
	}
	return Kfake(t, opts...)
}

// Kfake starts a kfake cluster (one broker unless opts say otherwise, group sessions down to
// 500 ms so failover tests can use short timeouts) and closes it when t ends.
func Kfake(t testing.TB, opts ...kfake.Opt) []string {
	t.Helper()
	base := []kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(500 * time.Millisecond)}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// KfakeOnPort is Kfake listening on a given loopback port, for tests that start a broker where
// a client already waits for one.
func KfakeOnPort(t testing.TB, port int) []string {
	t.Helper()
	return Kfake(t, kfake.Ports(port))
}

// Real returns the real broker's addresses, or skips t when KSTATE_KAFKA_BROKERS is unset.
func Real(t testing.TB) []string {
	t.Helper()
	v := strings.TrimSpace(os.Getenv(EnvBrokers))
	if v == "" {
		t.Skipf("kafkatest: %s is not set; run `make kafka-start` and export %s=127.0.0.1:19092", EnvBrokers, EnvBrokers)
	}
	var out []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

var counter atomic.Uint64

// Unique returns a name safe for Kafka topics and group ids, distinct for every call in every
// run: prefix, a hash of the test name, the time and a counter. It is logged so a failing run's
// topics can be found on the broker.
func Unique(t testing.TB, prefix string) string {
	t.Helper()
	h := fnv.New32a()
	_, _ = h.Write([]byte(t.Name()))
	name := fmt.Sprintf("%s-%08x-%x-%d", prefix, h.Sum32(), time.Now().UnixNano()&0xffffffffff, counter.Add(1))
	t.Logf("kafkatest: unique name %s", name)
	return name
}
