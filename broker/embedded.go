package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kstatehq/kstate/internal/logging"
)

// EmbeddedConfig configures the in-process broker of `kstate dev`.
type EmbeddedConfig struct {
	// DataDir holds the broker's topics, offsets, groups and transactions across restarts;
	// empty keeps everything in memory.
	DataDir string
	// Addr is the listen address, host:port; default 127.0.0.1:9092. Port 0 picks a free port.
	Addr string
	// Sync fsyncs every produced batch (durable across machine crashes, slower); without it a
	// crash of the process can lose the last writes, like Kafka's default flush policy.
	Sync bool
	// Logger receives the broker's logs (its per-request info at debug); nil discards.
	Logger hclog.Logger
}

// Embedded is a running in-process Kafka-compatible broker (franz-go's kfake): one node,
// transactions, consumer groups, compaction, persistence in DataDir.
type Embedded struct {
	c *kfake.Cluster
}

// StartEmbedded starts the broker and returns once it listens.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:9092"
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: address %q: want host:port", cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded broker: address %q: bad port", cfg.Addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		// Let apps use short group sessions (fast failover in dev), as the test broker does.
		kfake.GroupMinSessionTimeout(time.Second),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.WithLogger(kfakeLogger{logging.OrDiscard(cfg.Logger).Named("kfake")}),
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("embedded broker: data dir: %w", err)
		}
		opts = append(opts, kfake.DataDir(cfg.DataDir))
		if cfg.Sync {
			opts = append(opts, kfake.SyncWrites())
		}
	} else if cfg.Sync {
		return nil, errors.New("embedded broker: Sync needs a DataDir")
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w", cfg.Addr, err)
	}
	return &Embedded{c: c}, nil
}

// Addrs returns the broker's listen addresses, for Config.Brokers.
func (e *Embedded) Addrs() []string { return e.c.ListenAddrs() }

// Close stops the broker, flushing its state to DataDir.
func (e *Embedded) Close() error {
	e.c.Close()
	return nil
}
