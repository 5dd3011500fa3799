package processor

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/broker"
)

// A node that starts while Kafka (or its user function) cannot be reached waits for it instead of
// exiting, so under a supervisor it rides out a broker restart rather than crash-looping. While it
// waits, its public port already answers gRPC health checks with NOT_SERVING (the early health
// server below), and the admin listener's /readyz says 503: probes see a node that is up but not
// ready, not a port that refuses connections.

// Backoff of the Kafka bootstrap: the first retry after kafkaRetryInitial, doubling up to
// kafkaRetryMax.
const (
	kafkaRetryInitial = 250 * time.Millisecond
	kafkaRetryMax     = 10 * time.Second
)

// listen opens the public and peer listeners (unless WithListener gave the public one), first
// thing in Start: a port in use is reported before the node touches its store, its user function
// or Kafka.
func (n *Node) listen() error {
	if n.lis == nil {
		l, err := net.Listen("tcp", n.cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("listen on %s (--listen): %w", n.cfg.ListenAddr, err)
		}
		n.lis, n.ownLis = l, true
	}
	if n.peerLis == nil {
		l, err := net.Listen("tcp", n.cfg.PeerListenAddr)
		if err != nil {
			return fmt.Errorf("listen for peers on %s (--peer-listen): %w", n.cfg.PeerListenAddr, err)
		}
		n.peerLis = l
	}
	if host, port, err := net.SplitHostPort(n.cfg.AdvertiseAddr); err == nil && port == "0" {
		// The peer listener is on port 0: advertise the port we got.
		_, real, _ := net.SplitHostPort(n.peerLis.Addr().String())
		n.cfg.AdvertiseAddr = net.JoinHostPort(host, real)
	}
	return nil
}

// earlyHealth serves only grpc.health.v1 (NOT_SERVING until the node serves) on the public
// listener while Start discovers the user function and waits for Kafka; serve hands the listener
// over to the real servers.
type earlyHealth struct {
	srv     *grpc.Server
	lis     *handoffListener
	done    chan struct{}
	stopped sync.Once
}

// deadliner is the part of *net.TCPListener the hand-over needs: a deadline ends a blocked
// Accept without closing the socket.
type deadliner interface{ SetDeadline(time.Time) error }

// startEarlyHealth starts the early health server, when the public listener allows a hand-over
// (a TCP listener does; a listener without SetDeadline gets no early health).
func (n *Node) startEarlyHealth() {
	dl, ok := n.lis.(deadliner)
	if !ok {
		return
	}
	// Calls of the user's services are answered UNAVAILABLE, which clients retry, rather than
	// UNIMPLEMENTED: they are not served yet, not unknown.
	opts := []grpc.ServerOption{grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		return status.Error(codes.Unavailable, "kstate node is starting: waiting for its user function and Kafka")
	})}
	if n.pubTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(n.pubTLS.Clone())))
	}
	e := &earlyHealth{srv: grpc.NewServer(opts...), lis: &handoffListener{Listener: n.lis, dl: dl}, done: make(chan struct{})}
	healthpb.RegisterHealthServer(e.srv, n.health)
	go func() {
		defer close(e.done)
		_ = e.srv.Serve(e.lis)
	}()
	n.early = e
}

// stop ends the early server and leaves the listener open, its deadline cleared, for serve (or
// for close to close). Connections it accepted are closed; their clients reconnect.
func (e *earlyHealth) stop() {
	if e == nil {
		return
	}
	e.stopped.Do(func() {
		e.lis.handedOff.Store(true)
		_ = e.lis.dl.SetDeadline(time.Unix(1, 0)) // wakes a blocked Accept
		e.srv.Stop()
		<-e.done
		_ = e.lis.dl.SetDeadline(time.Time{})
	})
}

// handoffListener is the public listener as the early server sees it: once handed off, Accept
// fails for good and Close leaves the socket open.
type handoffListener struct {
	net.Listener
	dl        deadliner
	handedOff atomic.Bool
}

func (l *handoffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if l.handedOff.Load() {
		if c != nil {
			_ = c.Close() // raced with the hand-over: the client reconnects to the real server
		}
		return nil, net.ErrClosed
	}
	return c, err
}

func (l *handoffListener) Close() error { return nil }

// bootstrapKafka ensures the app's topics and claims its persistence ids: the node's first
// contact with Kafka. While Kafka cannot be reached it retries with backoff until ctx ends,
// logging each failure; an answer from Kafka that retrying cannot change (a topic that does not
// match, a persistence id of another app) fails at once.
func (n *Node) bootstrapKafka(ctx context.Context) error {
	wait := kafkaRetryInitial
	brokers := strings.Join(n.cfg.Broker.Brokers, ",")
	for attempt := 1; ; attempt++ {
		err := n.ensureTopics(ctx)
		if err == nil {
			if attempt > 1 {
				n.log.Info("Kafka reachable", "brokers", brokers, "attempts", attempt)
			}
			return nil
		}
		if n.adm != nil {
			n.adm.Close()
			n.adm = nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("Kafka at %s not reachable after %d attempts: %w (last error: %w)", brokers, attempt, ctx.Err(), err)
		}
		if !broker.Unreachable(err) {
			return err
		}
		n.log.Warn("Kafka not reachable; the node waits for it (health NOT_SERVING)", "brokers", brokers, "attempt", attempt, "retry_in", wait, "error", err)
		if !sleepCtx(ctx, wait) {
			return fmt.Errorf("Kafka at %s not reachable after %d attempts: %w (last error: %w)", brokers, attempt, ctx.Err(), err)
		}
		wait = min(wait*2, kafkaRetryMax)
	}
}
