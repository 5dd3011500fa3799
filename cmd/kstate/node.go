package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/examples/chat"
	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/validator"
	"github.com/kstatehq/kstate/examples/valuecart"
	"github.com/kstatehq/kstate/processor"
	"github.com/kstatehq/kstate/sdk"
)

// examples are the in-process user functions `--example` can run.
var examples = map[string]func() []sdk.Entity{
	"shoppingcart": func() []sdk.Entity { return []sdk.Entity{shoppingcart.NewEntity()} },
	"valuecart":    func() []sdk.Entity { return []sdk.Entity{valuecart.NewEntity()} },
	// Presence (a Vote per user) and friends (an ORSet): CRDT entities.
	"chat": chat.Entities,
	// The validator action forwards to the event-sourced cart, so both run.
	"validator": validator.Entities,
	// Everything at once: both carts, the validator and the chat (CRDTs).
	"all": func() []sdk.Entity {
		return append(append(validator.Entities(), valuecart.NewEntity()), chat.Entities()...)
	},
}

func exampleNames() string {
	var names []string
	for n := range examples {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// nodeOpts are the flags shared by `kstate dev` and `kstate serve`.
type nodeOpts struct {
	nodeID         string
	listen         string
	advertise      string
	peerListen     string
	dataDir        string
	userFunction   string
	example        string
	namespace      string
	app            string
	partitions     int32
	sessionTimeout time.Duration
	commitLinger   time.Duration
	readLease      time.Duration
	maxActive      int
	maxRecordBytes int
	idemWindow     time.Duration
	startTimeout   time.Duration
	adminListen    string // registered by each command: its default differs
	kafka          kafkaOpts
	security       securityOpts
}

// securityOpts are the flags that secure the node's own ports (docs/security.md).
type securityOpts struct {
	tlsCert, tlsKey, tlsClientCA       string
	peerCert, peerKey, peerCA, peerSNI string
	bearerFile                         string
}

func (s *securityOpts) register(f *pflag.FlagSet) {
	f.StringVar(&s.tlsCert, "tls-cert", "", "PEM certificate (chain) of the public port: serve gRPC and HTTP over TLS (with --tls-key)")
	f.StringVar(&s.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&s.tlsClientCA, "tls-client-ca", "", "PEM CAs of client certificates: every client of the public port must present one they signed (mutual TLS)")
	f.StringVar(&s.peerCert, "peer-tls-cert", "", "PEM certificate of this node on the peer port, signed by --peer-tls-ca (mutual TLS between nodes; with --peer-tls-key and --peer-tls-ca)")
	f.StringVar(&s.peerKey, "peer-tls-key", "", "PEM private key of --peer-tls-cert")
	f.StringVar(&s.peerCA, "peer-tls-ca", "", "PEM CA that signs every node's peer certificate (the cluster CA)")
	f.StringVar(&s.peerSNI, "peer-tls-server-name", "", "DNS name every node's peer certificate must carry, for a CA shared with other services (optional)")
	f.StringVar(&s.bearerFile, "auth-bearer-file", "", "file of bearer tokens, one per line (# comments): every call on the public port but health checks needs \"authorization: Bearer <token>\"")
}

// apply sets cfg's TLS from the flags, checks the files, and returns the authentication option of
// --auth-bearer-file (nil without it).
func (s *securityOpts) apply(cfg *processor.Config) (processor.Option, error) {
	cfg.TLS = processor.TLSConfig{CertFile: s.tlsCert, KeyFile: s.tlsKey, ClientCAFile: s.tlsClientCA}
	cfg.PeerTLS = processor.PeerTLSConfig{CertFile: s.peerCert, KeyFile: s.peerKey, CAFile: s.peerCA, ServerName: s.peerSNI}
	if err := cfg.TLS.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.PeerTLS.Validate(); err != nil {
		return nil, err
	}
	if s.bearerFile == "" {
		return nil, nil
	}
	tokens, err := readTokens(s.bearerFile)
	if err != nil {
		return nil, err
	}
	return processor.WithAuth(processor.BearerTokens(tokens...)), nil
}

// readTokens reads a token file: one token per line, surrounding space trimmed; blank lines and
// lines starting with # are skipped. A file without tokens is an error (it would refuse every
// call).
func readTokens(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-bearer-file: %w", err)
	}
	var tokens []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("--auth-bearer-file %s: line %d: a token cannot contain spaces", path, i+1)
		}
		tokens = append(tokens, line)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("--auth-bearer-file %s: no tokens (one per line)", path)
	}
	return tokens, nil
}

// kafkaOpts are the flags for reaching a secured Kafka cluster.
type kafkaOpts struct {
	tls           bool
	caFile        string
	certFile      string
	keyFile       string
	saslMechanism string
	saslUser      string
}

func (k *kafkaOpts) register(f *pflag.FlagSet) {
	f.BoolVar(&k.tls, "kafka-tls", false, "connect to Kafka over TLS (implied by the --kafka-ca/cert/key flags)")
	f.StringVar(&k.caFile, "kafka-ca", "", "PEM file of the CAs that sign the brokers' certificates (default: system pool)")
	f.StringVar(&k.certFile, "kafka-cert", "", "PEM client certificate for mutual TLS")
	f.StringVar(&k.keyFile, "kafka-key", "", "PEM client key for mutual TLS")
	f.StringVar(&k.saslMechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (password from $KSTATE_KAFKA_PASSWORD)")
	f.StringVar(&k.saslUser, "kafka-sasl-user", "", "SASL user name")
}

// apply sets cfg's TLS and SASL from the flags; the password comes from the environment so it
// never shows in a process listing.
func (k *kafkaOpts) apply(cfg *broker.Config) {
	cfg.TLS = broker.TLSConfig{Enabled: k.tls, CAFile: k.caFile, CertFile: k.certFile, KeyFile: k.keyFile}
	if k.saslMechanism != "" {
		cfg.SASL = broker.SASLConfig{Mechanism: strings.ToUpper(k.saslMechanism), Username: k.saslUser, Password: os.Getenv("KSTATE_KAFKA_PASSWORD")}
	}
}

func (o *nodeOpts) register(cmd *cobra.Command, defaultApp, defaultListen string) {
	f := cmd.Flags()
	f.StringVar(&o.nodeID, "node-id", "", "node id in ownership records and logs (default: hostname-pid)")
	f.StringVar(&o.listen, "listen", defaultListen, "public address: the user's services (gRPC, HTTP/JSON), reflection, health")
	f.StringVar(&o.peerListen, "peer-listen", "", "node-to-node forwarding address, never the public port (default: the listen host, any free port)")
	f.StringVar(&o.advertise, "advertise", "", "address other nodes forward to: the peer listener's (default: the peer listen address)")
	f.StringVar(&o.dataDir, "data-dir", "./.kstate", "folder for the node's Pebble store")
	f.StringVar(&o.userFunction, "user-function", "", "address of a Cloudstate user function (host:port)")
	f.StringVar(&o.example, "example", "", "run an example user function in-process: "+exampleNames())
	f.StringVar(&o.namespace, "namespace", "kstate", "prefix of every topic and of the group id")
	f.StringVar(&o.app, "app", defaultApp, "app name: group <namespace>.<app>")
	f.Int32Var(&o.partitions, "partitions", 16, "partitions of every entity topic (fixed for the app's lifetime)")
	f.DurationVar(&o.sessionTimeout, "session-timeout", 6*time.Second, "consumer-group session timeout: bounds failover time")
	f.DurationVar(&o.commitLinger, "commit-linger", 0, "wait this long for more commands before a transaction (0: natural batching)")
	f.DurationVar(&o.readLease, "read-lease", 0, "answer event-less commands from memory this long after a committed transaction was sent (0: a third of --session-timeout; negative: never, every read commits a barrier)")
	f.IntVar(&o.maxActive, "max-active-entities", 0, "active entities per partition before the least recently used idle one is passivated (0: 10000)")
	f.DurationVar(&o.idemWindow, "idempotency-window", 0, "how long a command's outcome is remembered for its idempotency key (0: 24h; at most 168h)")
	f.DurationVar(&o.startTimeout, "start-timeout", 0, "give up starting after this long while the user function or Kafka cannot be reached (0: wait until stopped; health says NOT_SERVING meanwhile)")
	f.IntVar(&o.maxRecordBytes, "max-record-bytes", 0, "largest event, snapshot or state record a command may write; larger fails the command with INVALID_ARGUMENT (0: 1000000, and never above the topics' max.message.bytes)")
	o.security.register(f)
}

// config maps the flags onto processor.Config and the in-process entities.
func (o *nodeOpts) config(brokers []string, dataDir string, log hclog.Logger) (processor.Config, []processor.Option, error) {
	cfg := processor.DefaultConfig()
	if o.partitions < 1 {
		return cfg, nil, fmt.Errorf("--partitions %d: want at least 1 (every entity topic gets this many partitions, fixed for the app's lifetime)", o.partitions)
	}
	if o.nodeID != "" {
		cfg.NodeID = o.nodeID
	}
	cfg.ListenAddr = o.listen
	cfg.AdvertiseAddr = o.advertise
	cfg.PeerListenAddr = o.peerListen
	cfg.DataDir = dataDir
	cfg.UserFunction = o.userFunction
	cfg.CommitLinger = o.commitLinger
	cfg.ReadLease = o.readLease
	cfg.MaxActiveEntities = o.maxActive
	cfg.MaxRecordBytes = o.maxRecordBytes
	cfg.IdempotencyWindow = o.idemWindow
	cfg.AdminListenAddr = o.adminListen
	cfg.Broker.Brokers = brokers
	cfg.Broker.Namespace = o.namespace
	cfg.Broker.App = o.app
	cfg.Broker.Partitions = o.partitions
	cfg.Broker.SessionTimeout = o.sessionTimeout
	cfg.Broker.Logger = log.Named("kafka")
	o.kafka.apply(&cfg.Broker)
	cfg.Logger = log
	var opts []processor.Option
	auth, err := o.security.apply(&cfg)
	if err != nil {
		return cfg, nil, err
	}
	if auth != nil {
		opts = append(opts, auth)
	}
	switch {
	case o.example != "" && o.userFunction != "":
		return cfg, nil, fmt.Errorf("--example and --user-function both given: choose one")
	case o.example != "":
		mk, ok := examples[o.example]
		if !ok {
			return cfg, nil, fmt.Errorf("unknown example %q: choose one of %s", o.example, exampleNames())
		}
		opts = append(opts, processor.WithEntities(mk()...))
	case o.userFunction == "":
		// Cloudstate's convention (and its TCK's): the function's address in the environment.
		host, port := os.Getenv("USER_FUNCTION_HOST"), os.Getenv("USER_FUNCTION_PORT")
		if host == "" && port == "" {
			return cfg, nil, fmt.Errorf("no user function: pass --example (%s) or --user-function host:port (or set USER_FUNCTION_HOST/USER_FUNCTION_PORT)", exampleNames())
		}
		if host == "" {
			host = "127.0.0.1"
		}
		if port == "" {
			port = "8080"
		}
		cfg.UserFunction = net.JoinHostPort(host, port)
	}
	return cfg, opts, nil
}

// adminListenHelp describes --admin-listen, registered by `kstate dev` and `kstate serve` with
// their own defaults.
const adminListenHelp = "admin HTTP address for Prometheus /metrics, /debug/pprof/ and /readyz (keep it private)"

// nodeGCPercent is the GOGC a node runs with unless the GOGC variable says otherwise. A node's
// live heap is small (entity images live in Pebble) while it allocates per command at a high rate,
// so Go's default of 100 runs the collector very often; 200 halves that for a bounded heap growth
// (docs/benchmarks.md has the measurement).
const nodeGCPercent = 200

// runNode starts a node and blocks until ctx ends, then hands its partitions over. The start
// waits for the user function and Kafka until ctx ends, or at most startTimeout when positive.
func runNode(ctx context.Context, cfg processor.Config, opts []processor.Option, startTimeout time.Duration, ready func(*processor.Node)) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(nodeGCPercent)
	}
	n, err := processor.New(cfg, opts...)
	if err != nil {
		return err
	}
	startCtx, cancel := ctx, context.CancelFunc(func() {})
	if startTimeout > 0 {
		startCtx, cancel = context.WithTimeout(ctx, startTimeout)
	}
	err = n.Start(startCtx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting (Ctrl-C, SIGTERM): not a failure
		}
		return err
	}
	if ready != nil {
		ready(n)
	}
	<-ctx.Done()
	return n.Close()
}

func newServeCmd(lo *logOpts) *cobra.Command {
	o := &nodeOpts{}
	var brokers []string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a kstate node against a Kafka cluster",
		Long: `Run one kstate node against a real Kafka cluster. Start several with the same --app to share
the work: the consumer group assigns partitions, and a killed node's partitions move to the others.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			cfg, opts, err := o.config(brokers, o.dataDir, log)
			if err != nil {
				return err
			}
			if err := checkPorts(o.ports()...); err != nil {
				return err
			}
			return runNode(cmd.Context(), cfg, opts, o.startTimeout, func(n *processor.Node) {
				if waitServing(cmd.Context(), n, func(line string) { log.Info(line) }) {
					log.Info("serving", "addr", n.Addr(), "brokers", brokers, "app", o.app)
				}
			})
		},
	}
	o.register(cmd, "app", ":9000")
	cmd.Flags().StringVar(&o.adminListen, "admin-listen", "", adminListenHelp+" (default: off)")
	cmd.Flags().StringSliceVar(&brokers, "brokers", []string{"127.0.0.1:9092"}, brokersHelp)
	o.kafka.register(cmd.Flags())
	return cmd
}

// ports are the node's address flags.
func (o *nodeOpts) ports() []portFlag {
	return []portFlag{{"listen", o.listen}, {"peer-listen", o.peerListen}, {"admin-listen", o.adminListen}}
}

// portFlag is an address flag whose port must be free.
type portFlag struct{ flag, addr string }

// checkPorts listens on each address for a moment and reports the first one in use, naming its
// flag, so a conflict is found before anything starts. Empty addresses and port 0 are skipped.
func checkPorts(ports ...portFlag) error {
	for _, p := range ports {
		if p.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(p.addr); err != nil {
			return fmt.Errorf("--%s %q: want host:port, e.g. 127.0.0.1:9000", p.flag, p.addr)
		} else if port == "0" {
			continue
		}
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("--%s %s: %w (is another kstate or Kafka using it? choose another address with --%[1]s)", p.flag, p.addr, unwrapOp(err))
		}
		_ = l.Close()
	}
	return nil
}

// unwrapOp drops the "listen tcp ADDR:" part of a listen error, which the message already says.
func unwrapOp(err error) error {
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Err != nil {
		return oe.Err
	}
	return err
}
