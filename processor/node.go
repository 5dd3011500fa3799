// Package processor is kstate's entity runtime: discovery of the user function, the dynamic gRPC
// front door, routing of commands to the node that owns their partition, one goroutine per owned
// partition with fenced group commit into Kafka, the Cloudstate protocol driver for each active
// entity, and passivation.
package processor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/internal/logging"
	"github.com/kstatehq/kstate/partition"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/frontdoor"
	"github.com/kstatehq/kstate/processor/internal/metrics"
	"github.com/kstatehq/kstate/processor/internal/tracing"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
	"github.com/kstatehq/kstate/sdk"
)

// maxBackground bounds the node's background goroutines for side effects and forwards.
const maxBackground = 4096

// Version is reported to user functions in ProxyInfo and by `kstate version`. Release builds set
// it with -ldflags "-X github.com/kstatehq/kstate/processor.Version=v1.2.3" (see the Makefile).
var Version = "dev"

// errStorage marks a Pebble failure after a commit: the partition is given up and reacquired.
var errStorage = errors.New("storage")

// Option configures a Node beyond its Config.
type Option func(*Node)

// WithEntities runs Go SDK entities inside the node (in-process user function). They are served
// over an in-memory gRPC connection speaking the same Cloudstate protocol as a remote function.
func WithEntities(entities ...sdk.Entity) Option {
	return func(n *Node) { n.inproc = append(n.inproc, entities...) }
}

// WithListener serves on l instead of listening on Config.ListenAddr (tests, socket activation).
// With TLS configured, the node runs the handshakes on l's connections itself: pass a plain TCP
// listener.
func WithListener(l net.Listener) Option {
	return func(n *Node) { n.lis = l }
}

// topicRole says what an entity topic holds, for restore and Pebble.
type topicRole struct {
	kind          partition.Kind
	persistenceID string
}

// Node is one kstate process: it serves the user's services, owns the partitions the consumer
// group assigns it, and forwards commands for other partitions to their owners.
type Node struct {
	cfg            Config
	log            hclog.Logger
	inproc         []sdk.Entity
	lis            net.Listener
	commandTimeout time.Duration

	// Security of the ports (tls.go, auth.go): the public port's TLS (nil: plaintext), the option
	// it may come from, the authentication hooks, and the peer port's credentials (nil: plaintext).
	pubTLS               *tls.Config
	tlsOpt               *tls.Config
	auth                 []AuthFunc
	peerCreds, dialCreds credentials.TransportCredentials

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	store   *partition.Store
	uf      *grpc.ClientConn
	ufSrv   *grpc.Server
	sdkSrv  *sdk.Server // in-process entities: their sessions are called directly
	crdt    *crdtHost   // CRDT entities and their replicas
	cat     *catalog.Catalog
	topics  map[string]topicRole
	srv     *grpc.Server
	peerSrv *grpc.Server
	peerLis net.Listener
	split   *frontdoor.SplitListener
	ownLis  bool         // the node opened lis (not WithListener): close closes it
	early   *earlyHealth // health checks while Start waits (bootstrap.go)
	httpSrv *http.Server
	health  *health.Server
	group   *broker.Group
	adm     *broker.Admin
	owners  *ownerTable
	cmdSeq  atomic.Uint64
	// quarantined counts the records restores skipped and copied to the dead-letter topic.
	quarantined atomic.Int64
	met         *metrics.Metrics // the node's own registry, served on the admin listener
	adminLis    net.Listener
	adminSrv    *http.Server
	adminReqs   inflight    // admin requests being served; closeAdmin waits for them
	console     *console    // the admin console's state (console.go)
	started     atomic.Bool // Start has set up the catalog, topics and servers (the console reads them)
	// background bounds the goroutines that finish commands with side effects or forwards and
	// that run asynchronous side effects.
	background chan struct{}
	boot       string // random per process
	conns      connPool

	// Tracing (tracing.go): the embedder's provider or the OTEL_* variables, and the node's
	// tracing, nil when off.
	tp       trace.TracerProvider
	traceIDs bool
	traceEnv tracing.Env
	tr       *tracing.Tracing

	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	parts    map[int32]*partSup // partitions assigned to this node
	local    map[int32]*owner   // partitions restored and serving (or restoring: requests queue)
	restored map[int32]bool     // assigned partitions whose restore has finished
	joined   bool               // the group has assigned this node at least once
	ufDown   bool               // the user function is unreachable (health.go)
}

// partSup supervises one assigned partition: acquire, run, reacquire after an indefinite commit.
type partSup struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// New builds a node. Nothing runs until Start.
func New(cfg Config, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:            cfg,
		log:            logging.OrDiscard(cfg.Logger).Named("node").With("node", cfg.NodeID),
		commandTimeout: 60 * time.Second,
		parts:          make(map[int32]*partSup),
		local:          make(map[int32]*owner),
		restored:       make(map[int32]bool),
		owners:         newOwnerTable(),
		background:     make(chan struct{}, maxBackground),
		boot:           strconv.FormatUint(rand.Uint64()&0xffffffff, 36),
		met:            metrics.New(Version),
	}
	for _, o := range opts {
		o(n)
	}
	if err := n.parseTracing(); err != nil {
		return nil, err
	}
	if n.cfg.Broker.Metrics == nil {
		km, err := broker.NewClientMetrics(n.met.Registry()) // the Kafka clients' metrics
		if err != nil {
			return nil, fmt.Errorf("processor: Kafka client metrics: %w", err)
		}
		n.cfg.Broker.Metrics = km
	}
	if len(n.inproc) == 0 && cfg.UserFunction == "" {
		return nil, errors.New("processor: no user function: set Config.UserFunction to its gRPC address or pass WithEntities")
	}
	if len(n.inproc) > 0 && cfg.UserFunction != "" {
		return nil, errors.New("processor: both UserFunction and in-process entities given; choose one")
	}
	var err error
	if n.pubTLS, err = n.publicTLS(); err != nil {
		return nil, err
	}
	if n.peerCreds, n.dialCreds, err = cfg.PeerTLS.credentials(); err != nil {
		return nil, err
	}
	return n, nil
}

// Addr is the address the node serves on (useful with ":0").
func (n *Node) Addr() string {
	if n.lis == nil {
		return ""
	}
	return n.lis.Addr().String()
}

// PeerAddr is the address of the node-to-node listener (kstate.v1.Node), "" before Start.
func (n *Node) PeerAddr() string {
	if n.peerLis == nil {
		return ""
	}
	return n.peerLis.Addr().String()
}

// Service describes one service a node serves, as discovered from the user function.
type Service struct {
	// Name is the service's full name, e.g. "shop.v1.ShoppingCart".
	Name string
	// Kind is the entity kind serving it: "event-sourced", "value", "crdt" or "action".
	Kind string
	// PersistenceID names the entity's stored state (and its Kafka topics); "" for actions.
	PersistenceID string
}

// Services returns the services discovered from the user function, sorted by name (nil before
// Start).
func (n *Node) Services() []Service {
	if n.cat == nil {
		return nil
	}
	var out []Service
	for _, s := range n.cat.Services() {
		out = append(out, Service{Name: s.Name, Kind: s.Kind.String(), PersistenceID: s.PersistenceID})
	}
	return out
}

// Start discovers the user function, ensures the app's topics, serves gRPC and joins the group.
// It returns once the node serves; partitions are acquired in the background.
func (n *Node) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			_ = n.Close()
		}
	}()
	n.health = health.NewServer()
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	// Every port first, so a port in use fails the start before anything else happens; then
	// health checks answer NOT_SERVING while the node waits for its user function and Kafka.
	if err := n.listen(); err != nil {
		return err
	}
	if err := n.startTracing(ctx); err != nil {
		return err
	}
	if err := n.startAdmin(); err != nil {
		return err
	}
	n.startEarlyHealth()
	store, err := partition.Open(partition.Config{Dir: filepath.Join(n.cfg.DataDir, "pebble"), Logger: n.log})
	if err != nil {
		return fmt.Errorf("open store in %s: %w", n.cfg.DataDir, err)
	}
	n.store = store
	if err := n.connectUserFunction(); err != nil {
		return err
	}
	cat, _, err := catalog.Discover(ctx, n.uf, catalog.DiscoverOptions{
		ProxyName:            "kstate",
		ProxyVersion:         Version,
		AllowVersionMismatch: n.cfg.AllowProtocolMismatch,
		Logger:               n.log,
	})
	if err != nil {
		return fmt.Errorf("discover user function: %w", err)
	}
	n.cat = cat
	n.watchUserFunction()
	if err := n.bootstrapKafka(ctx); err != nil {
		return err
	}
	if n.crdt, err = newCrdtHost(n); err != nil {
		return err
	}
	// CRDT replicas catch up before the node serves (a restarted node serves what it had).
	if err := n.crdt.start(ctx); err != nil {
		return err
	}
	if err := n.serve(); err != nil {
		return err
	}
	n.started.Store(true)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.followOwners()
	}()
	g, err := broker.JoinGroup(n.ctx, n.cfg.Broker, n.cfg.NodeID, broker.GroupCallbacks{
		Assigned: n.assigned,
		Revoked:  n.revoked,
		Lost:     n.revoked,
	})
	if err != nil {
		return fmt.Errorf("join group %s: %w", n.cfg.Broker.GroupID(), err)
	}
	n.group = g
	ok = true
	n.log.Info("node started", "addr", n.Addr(), "advertise", n.cfg.AdvertiseAddr, "services", len(cat.Services()))
	return nil
}

// followOwners keeps the routing table following the owners topic for the node's lifetime: a
// fetch error restarts the follower (from the start of the compacted topic) after a backoff,
// so routing never freezes.
func (n *Node) followOwners() {
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := broker.Follow(n.ctx, n.cfg.Broker, n.cfg.Broker.OwnersTopic(), n.owners.apply)
		if n.ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		n.log.Warn("owners topic follower failed; restarting", "error", err, "after", backoff)
		if !sleepCtx(n.ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (n *Node) connectUserFunction() error {
	if len(n.inproc) > 0 {
		srv := sdk.NewServer(sdk.WithLogger(n.log.Named("sdk")))
		if err := srv.Register(n.inproc...); err != nil {
			return fmt.Errorf("in-process entities: %w", err)
		}
		n.sdkSrv = srv
		lis := bufconn.Listen(1 << 20)
		n.ufSrv = grpc.NewServer()
		srv.RegisterGRPC(n.ufSrv)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			_ = n.ufSrv.Serve(lis)
		}()
		conn, err := grpc.NewClient("passthrough:///inprocess", append(n.tr.UserFunctionDialOptions(entityStreams...),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			return err
		}
		n.uf = conn
		return nil
	}
	conn, err := grpc.NewClient(n.cfg.UserFunction, append(n.tr.UserFunctionDialOptions(entityStreams...), grpc.WithTransportCredentials(insecure.NewCredentials()), userFunctionBackoff)...)
	if err != nil {
		return fmt.Errorf("user function %s: %w", n.cfg.UserFunction, err)
	}
	n.uf = conn
	return nil
}

// ensureTopics creates the app's topics for every entity service discovered and records which
// topics a partition restores from.
func (n *Node) ensureTopics(ctx context.Context) error {
	kinds := make(map[string]broker.EntityKind)
	n.topics = make(map[string]topicRole)
	bc := &n.cfg.Broker
	for _, s := range n.cat.Services() {
		switch s.Kind {
		case catalog.EventSourced:
			kinds[s.PersistenceID] = broker.EventSourced
			n.topics[bc.EventsTopic(s.PersistenceID)] = topicRole{partition.Events, s.PersistenceID}
			n.topics[bc.SnapshotsTopic(s.PersistenceID)] = topicRole{partition.Snapshots, s.PersistenceID}
		case catalog.Value:
			kinds[s.PersistenceID] = broker.Value
			n.topics[bc.StateTopic(s.PersistenceID)] = topicRole{partition.State, s.PersistenceID}
		case catalog.CRDT:
			// Not restored by partitions: every node follows the CRDT delta topics (crdt.go).
			kinds[s.PersistenceID] = broker.CRDT
		}
	}
	// Every partition restores the outcomes of commands that carried idempotency keys.
	n.topics[bc.IdempotencyTopic()] = topicRole{kind: partition.Idempotency}
	adm, err := broker.NewAdmin(n.cfg.Broker)
	if err != nil {
		return err
	}
	n.adm = adm // kept: partitions describe their topics when they are acquired
	if err := adm.EnsureTopics(ctx, n.cfg.Broker.AppTopics(kinds)); err != nil {
		return err // already says "ensure topics: …"
	}
	// One fence per journal: the partitions' transactional ids are the app's, so no other app may
	// write these persistence ids' topics.
	pids := make([]string, 0, len(kinds))
	for pid := range kinds {
		pids = append(pids, pid)
	}
	if err := broker.ClaimPersistenceIDs(ctx, n.cfg.Broker, pids); err != nil {
		return err
	}
	return nil
}

func (n *Node) serve() error {
	n.early.stop() // the public listener is the real servers' from here on
	lim := frontdoor.Limits{MaxRecvBytes: n.cfg.MaxRecvBytes}
	ing := frontdoor.NewIngress(n.cat, dispatcher{n}, lim)
	n.conns.opts = append(peerDialOptions(ing.Limits(), n.dialCreds), n.tr.DialOptions()...)
	// Node-to-node forwarding has its own listener and server, never the public port: a client
	// cannot reach kstate.v1.Node. Its limits leave room around a client's largest message.
	peerOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(ing.Limits().MaxRecvBytes + frontdoor.ForwardOverhead),
		grpc.MaxSendMsgSize(ing.Limits().MaxSendBytes + frontdoor.ForwardOverhead),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if n.peerCreds != nil {
		peerOpts = append(peerOpts, grpc.Creds(n.peerCreds)) // mutual TLS (PeerTLSConfig)
	}
	n.peerSrv = grpc.NewServer(append(peerOpts, n.tr.ServerOptions()...)...)
	kstatev1.RegisterNodeServer(n.peerSrv, &nodeService{n: n})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.peerSrv.Serve(n.peerLis); err != nil && n.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			n.log.Error("peer server stopped", "error", err)
		}
	}()
	n.srv = grpc.NewServer(slices.Concat(ing.ServerOptions(), n.authServerOptions(), n.tr.ServerOptions())...)
	healthpb.RegisterHealthServer(n.srv, n.health)
	frontdoor.RegisterReflection(n.srv, n.cat)
	front, err := frontdoor.NewHTTPHandler(n.cat, n.srv, n.log.Named("http"))
	if err != nil {
		return fmt.Errorf("HTTP/JSON front door: %w", err)
	}
	front = ing.ObserveHTTP(front) // ingress metrics by protocol
	// One port: HTTP/2 (gRPC) connections go to the gRPC server, HTTP/1.1 to the front door. With
	// TLS every connection goes to the front door, which hands gRPC requests to the gRPC server.
	if n.pubTLS != nil {
		n.split = frontdoor.NewTLSSplitListener(n.lis, n.pubTLS, n.log.Named("listener"))
	} else {
		n.split = frontdoor.NewSplitListener(n.lis, n.log.Named("listener"))
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(n.split.GRPC()); err != nil && n.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
			n.log.Error("gRPC server stopped", "error", err)
		}
	}()
	n.httpSrv = frontdoor.ServeMux(n.split.HTTP(), front)
	return nil
}

// Close leaves the group (handing partitions over), stops serving and releases everything.
// Close is idempotent: later calls return the first call's result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	if n.cancel == nil {
		return nil
	}
	if n.group != nil {
		n.group.Close() // revokes every partition synchronously
	}
	n.mu.Lock()
	sups := make([]*partSup, 0, len(n.parts))
	for p, s := range n.parts {
		sups = append(sups, s)
		delete(n.parts, p)
	}
	n.mu.Unlock()
	for _, s := range sups {
		s.cancel()
		<-s.done
	}
	// Stop accepting first: both servers' Accept loops return once the split listener closes.
	n.early.stop()
	if n.split != nil {
		n.split.Close()
	} else if n.ownLis {
		_ = n.lis.Close() // Start failed before serving
	}
	if n.httpSrv != nil {
		if n.pubTLS != nil {
			// Over TLS the front door serves gRPC too: let its calls in flight finish as the gRPC
			// server does below, within the same few seconds.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = n.httpSrv.Shutdown(ctx)
			cancel()
		}
		_ = n.httpSrv.Close()
	}
	if n.srv != nil {
		// Let calls in flight finish (their partitions are gone, so they end quickly with
		// UNAVAILABLE or their result), but never wait longer than a few seconds.
		stopped := make(chan struct{})
		go func() {
			n.srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			n.srv.Stop()
			<-stopped
		}
	}
	if n.peerSrv != nil {
		n.peerSrv.Stop() // forwards in flight end; the forwarding node classifies the break
	} else if n.peerLis != nil {
		_ = n.peerLis.Close()
	}
	if n.split != nil {
		n.split.Wait()
	}
	n.closeAdmin()
	n.cancel()
	if n.ufSrv != nil {
		n.ufSrv.Stop()
	}
	if n.uf != nil {
		_ = n.uf.Close()
	}
	n.conns.closeAll()
	n.wg.Wait()
	if n.crdt != nil {
		n.crdt.close()
	}
	if n.adm != nil {
		n.adm.Close()
	}
	var err error
	if n.store != nil {
		err = n.store.Close()
	}
	n.stopTracing()
	return err
}

// assigned starts a supervisor for each newly assigned partition. It does not block the group.
func (n *Node) assigned(_ context.Context, parts []int32) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.joined = true
	defer n.updateHealthLocked()
	for _, p := range parts {
		if _, ok := n.parts[p]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(n.ctx)
		s := &partSup{cancel: cancel, done: make(chan struct{})}
		n.parts[p] = s
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer close(s.done)
			n.supervise(ctx, p)
		}()
	}
	n.log.Info("partitions assigned", "partitions", parts)
}

// revoked stops the partitions synchronously: when it returns, this node answers nothing for them.
func (n *Node) revoked(_ context.Context, parts []int32) {
	var sups []*partSup
	n.mu.Lock()
	for _, p := range parts {
		if s, ok := n.parts[p]; ok {
			sups = append(sups, s)
			delete(n.parts, p)
			delete(n.restored, p)
		}
	}
	n.updateHealthLocked()
	n.mu.Unlock()
	for _, s := range sups {
		s.cancel()
		<-s.done
	}
	if len(parts) > 0 {
		n.log.Info("partitions revoked", "partitions", parts)
	}
}

// supervise acquires partition p and runs it until ctx ends (revoked) or it is fenced. After an
// indefinite commit or a storage failure it fences itself and acquires again (RELIABILITY.md F3).
func (n *Node) supervise(ctx context.Context, p int32) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		prod, err := broker.NewTxnProducer(n.cfg.Broker, p)
		if err != nil {
			n.log.Error("partition producer", "partition", p, "error", err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		o := newOwner(n, p, prod)
		n.mu.Lock()
		n.local[p] = o
		n.mu.Unlock()
		n.met.Partition(p).SetRestoring(true)
		aerr := o.acquire(ctx)
		n.met.Partition(p).SetRestoring(false)
		if aerr == nil {
			stop := context.AfterFunc(ctx, o.cancel) // revocation stops the partition
			n.setRestored(p, true)
			n.met.Partition(p).SetOwned(true)
			o.run()
			n.met.Partition(p).SetOwned(false)
			stop()
			n.setRestored(p, false)
			aerr = o.stopErr
		} else {
			o.cancel()
			o.stopErr = aerr
			o.wg.Wait()
			close(o.done)
		}
		n.mu.Lock()
		if n.local[p] == o {
			delete(n.local, p)
		}
		n.mu.Unlock()
		// Requests that raced into the queue after the loop stopped still get an answer.
		for {
			select {
			case r := <-o.in:
				r.finish(result{err: catalog.ErrNotOwner})
				continue
			default:
			}
			break
		}
		prod.Close()
		if ctx.Err() != nil {
			return
		}
		// Fenced, or the outcome of a commit is unknown: take the partition again, fencing
		// whoever holds it, and reload from the log — but only after a pause that lets the group
		// tell a node that was paused or cut off that it no longer owns p (its heartbeat answers
		// at once when it resumes). A node the group still assigns p to wins it back this way
		// even from a zombie that re-fenced it; safety rests on the fence, never on this timing.
		wait := max(backoff, time.Second)
		if errors.Is(aerr, broker.ErrFenced) {
			wait = max(backoff, n.cfg.Broker.SessionTimeout/2)
		}
		n.log.Warn("reacquiring partition", "partition", p, "after", wait, "error", aerr)
		if !sleepCtx(ctx, wait) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// setRestored records whether assigned partition p is serving, and updates health.
func (n *Node) setRestored(p int32, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, assigned := n.parts[p]; assigned && ok {
		n.restored[p] = true
	} else {
		delete(n.restored, p)
	}
	n.updateHealthLocked()
}

// updateHealthLocked reports SERVING once the group has assigned this node and every partition it
// was assigned is restored; NOT_SERVING while any of them is still restoring or the user function
// is unreachable (readiness).
func (n *Node) updateHealthLocked() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if n.servingLocked() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	n.health.SetServingStatus("", st)
}

// servingLocked is the readiness rule of gRPC health and the admin listener's /readyz.
func (n *Node) servingLocked() bool {
	return n.joined && len(n.restored) == len(n.parts) && !n.ufDown
}

// toPartitionRecord adapts a Kafka record of an entity topic for Pebble.
func (n *Node) toPartitionRecord(r broker.Record) (partition.Record, bool) {
	role, ok := n.topics[r.Topic]
	if !ok {
		return partition.Record{}, false
	}
	hs := make([]partition.Header, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = partition.Header{Key: h.Key, Value: h.Value}
	}
	return partition.Record{
		Kind:          role.kind,
		PersistenceID: role.persistenceID,
		Topic:         r.Topic,
		Partition:     r.Partition,
		Offset:        r.Offset,
		Key:           r.Key,
		Value:         r.Value,
		Headers:       hs,
		Tombstone:     r.Value == nil,
	}, true
}

// commandID names one command's journal records: node, process incarnation (so ids stay unique
// across restarts with a fixed node id), partition and a counter.
func (n *Node) commandID(p int32) string {
	return n.cfg.NodeID + "-" + n.boot + "-" + strconv.Itoa(int(p)) + "-" + strconv.FormatUint(n.cmdSeq.Add(1), 10)
}

func marshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ownerTable is the routing table read from the owners topic: partition → latest owner record.
type ownerTable struct {
	mu      sync.Mutex
	byPart  map[int32]*kstatev1.OwnerRecord
	changed chan struct{}
}

func newOwnerTable() *ownerTable {
	return &ownerTable{byPart: make(map[int32]*kstatev1.OwnerRecord), changed: make(chan struct{})}
}

func (t *ownerTable) apply(r broker.Record) {
	var rec kstatev1.OwnerRecord
	if err := proto.Unmarshal(r.Value, &rec); err != nil {
		return
	}
	t.mu.Lock()
	if rec.GetReleased() {
		delete(t.byPart, rec.GetPartition())
	} else {
		t.byPart[rec.GetPartition()] = &rec
	}
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// get returns p's owner and a channel closed at the next change of the table.
func (t *ownerTable) get(p int32) (*kstatev1.OwnerRecord, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byPart[p], t.changed
}

// connPool keeps one client connection per peer node, at most maxPeerConns: the addresses come
// from the owners topic, so the least recently used connection is closed to make room.
type connPool struct {
	mu    sync.Mutex
	opts  []grpc.DialOption
	conns map[string]*peerConn
}

type peerConn struct {
	cc   *grpc.ClientConn
	used time.Time
}

const maxPeerConns = 256

func (c *connPool) get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc, ok := c.conns[addr]; ok {
		pc.used = time.Now()
		return pc.cc, nil
	}
	cc, err := grpc.NewClient(addr, c.opts...)
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = make(map[string]*peerConn)
	}
	if len(c.conns) >= maxPeerConns {
		var oldest string
		for a, pc := range c.conns {
			if oldest == "" || pc.used.Before(c.conns[oldest].used) {
				oldest = a
			}
		}
		_ = c.conns[oldest].cc.Close()
		delete(c.conns, oldest)
	}
	c.conns[addr] = &peerConn{cc: cc, used: time.Now()}
	return cc, nil
}

func (c *connPool) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, pc := range c.conns {
		_ = pc.cc.Close()
		delete(c.conns, a)
	}
}

// peerDialOptions sizes peer connections from the node's own limits (a forwarded call must not
// fail where a local one succeeds) and pings idle connections, so a paused owner is noticed in
// seconds rather than eating the caller's whole deadline. creds secure them (PeerTLSConfig); nil
// is plaintext.
func peerDialOptions(lim frontdoor.Limits, creds credentials.TransportCredentials) []grpc.DialOption {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(lim.MaxRecvBytes+frontdoor.ForwardOverhead),
			grpc.MaxCallRecvMsgSize(lim.MaxSendBytes+frontdoor.ForwardOverhead)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
}

var _ = cloudstatepb.Metadata{}
