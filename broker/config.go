package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kstatehq/kstate/internal/logging"
)

// SASL mechanisms accepted in SASLConfig.Mechanism.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// maxTopicNameLen is Kafka's limit on topic name length.
const maxTopicNameLen = 249

// TLSConfig configures TLS to the brokers. Files are PEM encoded.
type TLSConfig struct {
	// Enabled turns TLS on. Setting any file below also turns it on.
	Enabled bool
	// CAFile holds the certificate authorities that sign the brokers' certificates; empty means
	// the system pool.
	CAFile string
	// CertFile and KeyFile hold the client certificate and key for mutual TLS; set both or neither.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked against the brokers' certificates; empty means the
	// host of each broker address.
	ServerName string
	// InsecureSkipVerify disables certificate verification. For tests only.
	InsecureSkipVerify bool
}

// SASLConfig configures SASL authentication to the brokers.
type SASLConfig struct {
	// Mechanism is "" (no SASL), "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512".
	Mechanism string
	Username  string
	Password  string
}

// Config is how kstate reaches Kafka and names its topics, groups and transactional ids.
type Config struct {
	// Brokers are the bootstrap addresses, host:port.
	Brokers []string
	// ClientID is sent to the brokers with every request; default "kstate".
	ClientID string
	// Namespace prefixes every topic, group and transactional id; default "kstate".
	Namespace string
	// App names the application (one consumer group, one commands topic); default "app".
	App string
	// Partitions is the partition count of every entity topic and of the commands topic; default 16.
	Partitions int32
	// ReplicationFactor of created topics; -1 (the default) means the broker default.
	ReplicationFactor int16
	// TLS to the brokers.
	TLS TLSConfig
	// SASL authentication.
	SASL SASLConfig
	// TransactionTimeout is transaction.timeout.ms of the transactional producers: how long a
	// hung transaction can hold back the LSO (RELIABILITY.md F4); default 10s.
	TransactionTimeout time.Duration
	// SessionTimeout is the consumer-group session timeout; default 6s (kfake's and Kafka's
	// default group.min.session.timeout.ms).
	SessionTimeout time.Duration
	// RebalanceTimeout bounds how long a rebalance waits for members, including the time the
	// Revoked callback takes to drop partitions; default 30s.
	RebalanceTimeout time.Duration
	// RequestTimeout bounds admin requests and is added to every request's own timeout;
	// default 10s.
	RequestTimeout time.Duration
	// Logger receives the client's logs (franz-go's info is logged at debug); nil discards.
	Logger hclog.Logger
	// Metrics, when set, collects the metrics of every Kafka client built from this Config
	// (see NewClientMetrics); nil collects none. A processor.Node sets its own.
	Metrics *ClientMetrics
}

// DefaultConfig returns a Config for a local broker at 127.0.0.1:9092 with every default set.
func DefaultConfig() Config {
	return Config{
		Brokers:            []string{"127.0.0.1:9092"},
		ClientID:           "kstate",
		Namespace:          "kstate",
		App:                "app",
		Partitions:         16,
		ReplicationFactor:  -1,
		TransactionTimeout: 10 * time.Second,
		SessionTimeout:     6 * time.Second,
		RebalanceTimeout:   30 * time.Second,
		RequestTimeout:     10 * time.Second,
	}
}

// withDefaults fills the zero fields of c with DefaultConfig's values (but never the brokers).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ClientID == "" {
		c.ClientID = d.ClientID
	}
	if c.Namespace == "" {
		c.Namespace = d.Namespace
	}
	if c.App == "" {
		c.App = d.App
	}
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = d.ReplicationFactor
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = d.TransactionTimeout
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = d.SessionTimeout
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = d.RebalanceTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	c.Logger = logging.OrDiscard(c.Logger)
	return c
}

// Validate reports the first problem with c, in words that name the field and the fix. Zero
// values are read as their defaults (DefaultConfig), so only Brokers must be set.
func (c Config) Validate() error {
	c = c.withDefaults()
	if len(c.Brokers) == 0 {
		return errors.New("broker config: Brokers is empty: set at least one host:port")
	}
	for _, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" {
			return fmt.Errorf("broker config: broker address %q: want host:port", b)
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			return fmt.Errorf("broker config: broker address %q: port %q is not a number in 1..65535", b, port)
		}
	}
	if err := validNamePart("Namespace", c.Namespace); err != nil {
		return err
	}
	if err := validNamePart("App", c.App); err != nil {
		return err
	}
	if c.Partitions < 1 {
		return fmt.Errorf("broker config: Partitions is %d: want at least 1", c.Partitions)
	}
	if c.ReplicationFactor < -1 || c.ReplicationFactor == 0 {
		return fmt.Errorf("broker config: ReplicationFactor is %d: want -1 (broker default) or at least 1", c.ReplicationFactor)
	}
	// The longest name we derive from Namespace and App: "<ns>.<app>.p<max partition>".
	if n := len(c.TransactionalID(c.Partitions - 1)); n > maxTopicNameLen {
		return fmt.Errorf("broker config: Namespace and App are too long: derived names reach %d characters, Kafka allows %d", n, maxTopicNameLen)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("broker config: TLS.CertFile and TLS.KeyFile: set both (mutual TLS) or neither")
	}
	for _, f := range []struct{ field, path string }{{"TLS.CAFile", c.TLS.CAFile}, {"TLS.CertFile", c.TLS.CertFile}, {"TLS.KeyFile", c.TLS.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("broker config: %s: %w", f.field, err)
		}
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" || c.SASL.Password != "" {
			return errors.New("broker config: SASL.Username/Password are set but SASL.Mechanism is empty: set PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if c.SASL.Username == "" {
			return fmt.Errorf("broker config: SASL.Mechanism is %s but SASL.Username is empty", c.SASL.Mechanism)
		}
	default:
		return fmt.Errorf("broker config: SASL.Mechanism %q: want one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (or empty for none)", c.SASL.Mechanism)
	}
	if c.TransactionTimeout < time.Millisecond || c.TransactionTimeout > 15*time.Minute {
		return fmt.Errorf("broker config: TransactionTimeout is %v: want between 1ms and 15m (Kafka's transaction.max.timeout.ms default); 10-15s is recommended", c.TransactionTimeout)
	}
	if c.SessionTimeout < 0 || c.RebalanceTimeout < 0 || c.RequestTimeout < 0 {
		return errors.New("broker config: SessionTimeout, RebalanceTimeout and RequestTimeout must not be negative")
	}
	return nil
}

// validNamePart checks that s can be part of a Kafka topic name: ASCII letters, digits, '.',
// '_' and '-'.
func validNamePart(field, s string) error {
	if s == "" {
		return fmt.Errorf("broker config: %s is empty", field)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return !legalTopicRune(r) }); i >= 0 {
		return fmt.Errorf("broker config: %s %q: character %q is not allowed in Kafka topic names (use letters, digits, '.', '_', '-')", field, s, s[i])
	}
	return nil
}

func legalTopicRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// EventsTopic is the journal topic of an event-sourced entity type: "<ns>.<pid>.events".
func (c Config) EventsTopic(persistenceID string) string {
	return c.entityTopic(persistenceID, "events")
}

// SnapshotsTopic is the compacted snapshot topic: "<ns>.<pid>.snapshots".
func (c Config) SnapshotsTopic(persistenceID string) string {
	return c.entityTopic(persistenceID, "snapshots")
}

// StateTopic is the compacted value-entity state topic: "<ns>.<pid>.state".
func (c Config) StateTopic(persistenceID string) string { return c.entityTopic(persistenceID, "state") }

// CrdtTopic is the CRDT delta topic: "<ns>.<pid>.crdt".
func (c Config) CrdtTopic(persistenceID string) string { return c.entityTopic(persistenceID, "crdt") }

// CrdtStateTopic is the compacted full CRDT state topic: "<ns>.<pid>.crdt-state".
func (c Config) CrdtStateTopic(persistenceID string) string {
	return c.entityTopic(persistenceID, "crdt-state")
}

// CommandsTopic is the app's asynchronous command ingress topic: "<ns>.<app>.commands".
func (c Config) CommandsTopic() string { return c.ns() + "." + c.app() + ".commands" }

// OwnersTopic is the app's compacted partition-ownership topic: "<ns>.<app>.owners".
func (c Config) OwnersTopic() string { return c.ns() + "." + c.app() + ".owners" }

// DeadLettersTopic is "<ns>.<app>.dead-letters": records a restore rejected (malformed, out of
// sequence), copied with their origin and the reason in headers, so no bad record wedges a
// partition.
func (c Config) DeadLettersTopic() string { return c.ns() + "." + c.app() + ".dead-letters" }

// IdempotencyTopic is the app's topic of remembered command outcomes (records keyed by entity id,
// values kstate.v1.IdempotencyRecord), partitioned like the entity topics.
func (c Config) IdempotencyTopic() string { return c.ns() + "." + c.app() + ".idempotency" }

// ClaimsTopic is "<ns>.claims": the namespace's registry of persistence ids. The first record
// keyed by a persistence id names the app whose fenced producers alone write that id's topics.
func (c Config) ClaimsTopic() string { return c.ns() + ".claims" }

// GroupID is "<ns>.<app>", the consumer group of the app's nodes.
func (c Config) GroupID() string { return c.ns() + "." + c.app() }

// TransactionalID is the transactional.id of partition p's producer: "<ns>.<app>.p<p>".
func (c Config) TransactionalID(p int32) string {
	return c.ns() + "." + c.app() + ".p" + strconv.FormatInt(int64(p), 10)
}

func (c Config) entityTopic(pid, suffix string) string { return c.ns() + "." + pid + "." + suffix }

func (c Config) ns() string {
	if c.Namespace == "" {
		return "kstate"
	}
	return c.Namespace
}

func (c Config) app() string {
	if c.App == "" {
		return "app"
	}
	return c.App
}

// buildTLS turns TLSConfig into a *tls.Config, or nil when TLS is off.
func (t TLSConfig) build() (*tls.Config, error) {
	if !t.Enabled && t.CAFile == "" && t.CertFile == "" && t.KeyFile == "" {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test only
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s: no PEM certificates found", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// clientOpts returns the franz-go options shared by every client built from c: brokers, client
// id, TLS, SASL, timeouts and logging. c must have passed Validate.
func (c Config) clientOpts() ([]kgo.Opt, error) {
	c = c.withDefaults()
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.RequestTimeoutOverhead(c.RequestTimeout),
		kgo.WithLogger(kgoLogger{c.Logger}),
	}
	tc, err := c.TLS.build()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch c.SASL.Mechanism {
	case SASLPlain:
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsMechanism()))
	case SASLScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha256Mechanism()))
	case SASLScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

// hint adds a likely cause to errors where the broker dropped the connection without a Kafka
// error: kfake (and a listener that expects TLS or SASL) closes the connection on failed
// authentication, which otherwise surfaces as a bare EOF.
func (c Config) hint(err error) error {
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
		return err
	}
	switch {
	case c.SASL.Mechanism != "":
		return fmt.Errorf("%w (the broker closed the connection: check the SASL %s username and password, and that the listener uses SASL)", err, c.SASL.Mechanism)
	case c.TLS.Enabled || c.TLS.CAFile != "":
		return fmt.Errorf("%w (the broker closed the connection: check TLS settings, and whether the listener requires SASL)", err)
	default:
		return fmt.Errorf("%w (the broker closed the connection: does the listener require TLS or SASL?)", err)
	}
}

// newClient validates c and builds a franz-go client with c's options plus extra; its metrics
// count under the role "other" (see newClientAs).
func (c Config) newClient(extra ...kgo.Opt) (*kgo.Client, error) {
	return c.newClientAs(roleOther, extra...)
}

// newClientAs is newClient for a client whose metrics count under role (the role* constants).
func (c Config) newClientAs(role string, extra ...kgo.Opt) (*kgo.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts, err := c.clientOpts()
	if err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	var hook *clientHook
	if c.Metrics != nil {
		var o kgo.Opt
		o, hook = c.Metrics.opts(role)
		opts = append(opts, o)
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	if hook != nil {
		hook.attach()
	}
	return cl, nil
}
