package processor

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
)

// healthOf asks addr's gRPC health once: the status, or "" and the error when nothing answered.
func healthOf(addr string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return 0, err
	}
	return r.GetStatus(), nil
}

// waitHealth polls addr's health until it reports want, failing t after d.
func waitHealth(t *testing.T, addr string, want healthpb.HealthCheckResponse_ServingStatus, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var got healthpb.HealthCheckResponse_ServingStatus
	var err error
	for time.Now().Before(deadline) {
		if got, err = healthOf(addr); err == nil && got == want {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
	t.Fatalf("health of %s: %v (error %v) after %v, want %v", addr, got, err, d, want)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestStartWaitsForKafka: a node started while no broker listens does not fail: its public port
// answers health checks with NOT_SERVING while it retries, and once a broker appears on the
// address Start returns and the node serves.
func TestStartWaitsForKafka(t *testing.T) {
	uf := startFakeUF(t, esEntities(0)...)
	port := freePort(t)
	cfg := testConfig(t, []string{"127.0.0.1:" + strconv.Itoa(port)}, "waits", uf.addr)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, WithListener(lis))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- n.Start(ctx) }()

	addr := lis.Addr().String()
	waitHealth(t, addr, healthpb.HealthCheckResponse_NOT_SERVING, 20*time.Second)
	// Several retries later the node still waits.
	select {
	case err := <-started:
		t.Fatalf("Start returned while Kafka was unreachable: %v", err)
	case <-time.After(800 * time.Millisecond):
	}
	if st, err := healthOf(addr); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("while waiting for Kafka: health %v, %v; want NOT_SERVING", st, err)
	}
	// A call of a user service is UNAVAILABLE (retry), not UNIMPLEMENTED.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = cc.Invoke(cctx, "/"+esService+"/Get", &emptypb.Empty{}, &emptypb.Empty{})
	ccancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a call while waiting for Kafka: %v, want UNAVAILABLE", err)
	}

	kafkatest.KfakeOnPort(t, port)
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Start once Kafka is up: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("Start did not return within 45s of Kafka coming up")
	}
	waitHealth(t, addr, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
}

// TestStartKafkaGivesUp: Start's context bounds the wait, and the error says what was waited for.
func TestStartKafkaGivesUp(t *testing.T) {
	uf := startFakeUF(t, esEntities(0)...)
	cfg := testConfig(t, []string{"127.0.0.1:" + strconv.Itoa(freePort(t))}, "gives-up", uf.addr)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err = n.Start(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not reachable after") {
		t.Fatalf("Start = %v, want the deadline and the attempts", err)
	}
}

// TestHealthFollowsUserFunction: health is NOT_SERVING while the user function is unreachable
// and SERVING again once it is back on its address.
func TestHealthFollowsUserFunction(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	// A second server for the same fake function, on its own address, that the test stops.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ufAddr := l.Addr().String()
	serve := func(l net.Listener) *grpc.Server {
		s := grpc.NewServer()
		cloudstatepb.RegisterEntityDiscoveryServer(s, uf)
		eventsourcedpb.RegisterEventSourcedServer(s, esServer{uf: uf})
		go func() { _ = s.Serve(l) }()
		return s
	}
	s := serve(l)
	t.Cleanup(func() { s.Stop() })
	n, _ := testNode(t, brokers, "uf-health", ufAddr)

	s.Stop()
	waitHealth(t, n.Addr(), healthpb.HealthCheckResponse_NOT_SERVING, 20*time.Second)

	l2, err := net.Listen("tcp", ufAddr)
	if err != nil {
		t.Skipf("the user function's port was taken meanwhile: %v", err)
	}
	s2 := serve(l2)
	t.Cleanup(s2.Stop)
	waitHealth(t, n.Addr(), healthpb.HealthCheckResponse_SERVING, 30*time.Second)
}

// TestListenConflictNamesFlag: a public port in use fails Start before the store or Kafka are
// touched, naming the flag.
func TestListenConflictNamesFlag(t *testing.T) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	cfg := testConfig(t, []string{"127.0.0.1:1"}, "conflict", "127.0.0.1:1")
	cfg.ListenAddr = hold.Addr().String()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	start := time.Now()
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "(--listen)") {
		t.Fatalf("Start = %v, want the port conflict naming --listen", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the conflict took %v to report", d)
	}
}

// TestReadiness: a serving node reports every assigned partition restored, and no restore left.
func TestReadiness(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	uf := startFakeUF(t, esEntities(0)...)
	n, _ := testNode(t, brokers, "readiness", uf.addr)
	r := n.Readiness()
	if !r.Serving || !r.Joined || r.UserFunctionDown || r.Assigned != 4 || r.Restored != 4 || len(r.Restoring) != 0 {
		t.Fatalf("Readiness of a serving node = %+v", r)
	}
}
