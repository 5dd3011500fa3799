package processor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kstatehq/kstate/broker"
)

// Config configures one kstate node. Map a YAML file or flags onto it, then call Validate.
type Config struct {
	// NodeID names this node in ownership records and logs. Default: hostname plus a random suffix.
	NodeID string
	// ListenAddr is where the node serves the user's services (gRPC and HTTP/JSON), reflection and
	// health. Default ":9000", Cloudstate's proxy port.
	ListenAddr string
	// PeerListenAddr is where the node serves node-to-node forwarding (kstate.v1.Node), never
	// on the public port. Default: ListenAddr's host with port 0 (any free port: other nodes learn
	// it from the owners topic); set a fixed port where a firewall needs one.
	PeerListenAddr string
	// AdvertiseAddr is the address other nodes use to forward commands here: the peer listener's.
	// Default: PeerListenAddr (with the port it got) with an empty or wildcard host replaced by
	// 127.0.0.1 when every broker is on this machine, else by the host's first non-loopback IPv4
	// address.
	AdvertiseAddr string
	// DataDir holds the node's Pebble store. Required.
	DataDir string
	// UserFunction is the address of a user function speaking the Cloudstate protocol. Leave it empty
	// when entities run in-process (WithEntities).
	UserFunction string
	// Broker is the Kafka configuration: brokers, namespace, app, partition count, TLS, SASL.
	Broker broker.Config
	// CommitLinger is how long a partition waits for more commands before it starts a transaction
	// when no transaction is in flight. Zero (the default) commits at once; batching then comes from
	// commands that arrive while a transaction is in flight.
	CommitLinger time.Duration
	// MaxBatchRecords caps the records in one transaction (F4: bounded transactions). Default 2000.
	MaxBatchRecords int
	// EntityQueue is the number of commands that may wait for one entity before new ones get
	// RESOURCE_EXHAUSTED. Default 1024.
	EntityQueue int
	// MaxActiveEntities bounds the active entities of one partition; when a new one must start,
	// the least recently used idle one is passivated (and if all are busy, the command gets
	// RESOURCE_EXHAUSTED). Default 10000.
	MaxActiveEntities int
	// MaxRecordBytes is the largest record a command may write (its encoded key, value and
	// headers plus framing). A command whose event or state is larger fails alone with
	// INVALID_ARGUMENT and never enters a transaction. Default 1,000,000 bytes, under the
	// producer's batch limit and Kafka's default max.message.bytes (1,048,588).
	MaxRecordBytes int
	// ReadLease is how long after a transaction was sent (and then committed) a partition answers
	// commands that emit no events without first proving ownership with a barrier transaction
	// (RELIABILITY.md F2). A new owner answers nothing until ReadLease+LeaseMargin after its fence,
	// so a fenced old owner's lease has run out by then. Default: a third of the group session
	// timeout; negative disables the lease (every such command commits a barrier first).
	ReadLease time.Duration
	// LeaseMargin covers clock-rate drift and scheduling delay between nodes in the lease rule.
	// Default 100ms plus 5% of ReadLease.
	LeaseMargin time.Duration
	// IdempotencyWindow is how long a command's outcome is remembered for its idempotency key
	// (docs/idempotency.md): a retry with the same key within the window is answered with the
	// first outcome. Default 24h; at most 7 days (the idempotency topic keeps records for
	// broker.IdempotencyRetention).
	IdempotencyWindow time.Duration
	// MaxRecvBytes limits one request message. Default 4 MiB.
	MaxRecvBytes int
	// AdminListenAddr is where the node serves its admin endpoints over HTTP: the console (/,
	// /api/v1/status, /api/v1/call), Prometheus metrics (/metrics), pprof (/debug/pprof/) and
	// readiness (/readyz), never on the public port. Empty (the default) serves none; keep it on
	// loopback or a private network (docs/operations.md).
	AdminListenAddr string
	// AllowProtocolMismatch accepts user functions that report another protocol version.
	AllowProtocolMismatch bool
	// TLS serves the public port over TLS, optionally requiring client certificates; the zero
	// value serves plaintext (docs/security.md).
	TLS TLSConfig
	// PeerTLS secures node-to-node forwarding with mutual TLS; the zero value is plaintext.
	PeerTLS PeerTLSConfig
	// Logger receives the node's logs; nil discards them.
	Logger hclog.Logger
}

// DefaultConfig returns a Config with every default filled in except DataDir.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	return Config{
		NodeID:          fmt.Sprintf("%s-%d", host, os.Getpid()),
		ListenAddr:      ":9000",
		Broker:          broker.DefaultConfig(),
		MaxBatchRecords: 2000,
		EntityQueue:     1024,
		MaxRecvBytes:    4 << 20,
	}
}

// Validate fills derived defaults and reports the first configuration problem in words a person can
// act on.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		c.NodeID = DefaultConfig().NodeID
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":9000"
	}
	if c.DataDir == "" {
		return errors.New("processor: DataDir is required (where the node keeps its Pebble store)")
	}
	if c.PeerListenAddr == "" {
		host, _, err := net.SplitHostPort(c.ListenAddr)
		if err != nil {
			return fmt.Errorf("processor: listen address %q: %w", c.ListenAddr, err)
		}
		c.PeerListenAddr = net.JoinHostPort(host, "0")
	}
	if c.AdvertiseAddr == "" {
		host, port, err := net.SplitHostPort(c.PeerListenAddr)
		if err != nil {
			return fmt.Errorf("processor: peer listen address %q: %w", c.PeerListenAddr, err)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
			if !allLoopback(c.Broker.Brokers) {
				// Other nodes of a real cluster cannot reach our loopback address.
				ip, err := firstHostIP()
				if err != nil {
					return fmt.Errorf("processor: the brokers are remote, so other nodes must reach this one: set AdvertiseAddr (--advertise host:port): %w", err)
				}
				host = ip
			}
		}
		c.AdvertiseAddr = net.JoinHostPort(host, port)
	}
	if c.MaxBatchRecords <= 0 {
		c.MaxBatchRecords = 2000
	}
	if c.EntityQueue <= 0 {
		c.EntityQueue = 1024
	}
	if c.MaxActiveEntities <= 0 {
		c.MaxActiveEntities = 10000
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = 1_000_000
	}
	if c.MaxRecvBytes <= 0 {
		c.MaxRecvBytes = 4 << 20
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = defaultIdempotencyWindow
	}
	if maxWindow := broker.IdempotencyRetention - 24*time.Hour; c.IdempotencyWindow < 0 || c.IdempotencyWindow > maxWindow {
		return fmt.Errorf("processor: IdempotencyWindow %v must be between 0 and %v (the idempotency topic keeps records for %v)", c.IdempotencyWindow, maxWindow, broker.IdempotencyRetention)
	}
	if c.CommitLinger < 0 {
		return fmt.Errorf("processor: CommitLinger %v is negative", c.CommitLinger)
	}
	if err := c.Broker.Validate(); err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if err := c.PeerTLS.Validate(); err != nil {
		return err
	}
	if c.ReadLease == 0 {
		c.ReadLease = c.Broker.SessionTimeout / 3
	}
	if c.LeaseMargin <= 0 {
		c.LeaseMargin = 100*time.Millisecond + max(c.ReadLease, 0)/20
	}
	return nil
}

// allLoopback reports whether every broker address is on this machine (or none is given).
func allLoopback(brokers []string) bool {
	for _, b := range brokers {
		host, _, err := net.SplitHostPort(b)
		if err != nil {
			host = b
		}
		if host == "localhost" {
			continue
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// firstHostIP returns the first non-loopback unicast IPv4 address of the host's interfaces.
func firstHostIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
			return ipn.IP.String(), nil
		}
	}
	return "", errors.New("the host has no non-loopback IPv4 address")
}
