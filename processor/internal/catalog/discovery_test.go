package catalog

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/processor/internal/proctest"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// dsUF is a user function's EntityDiscovery service that records what the proxy sends.
type dsUF struct {
	cloudstatepb.UnimplementedEntityDiscoveryServer
	spec *cloudstatepb.EntitySpec

	mu     sync.Mutex
	infos  []*cloudstatepb.ProxyInfo
	errors []string
}

func (u *dsUF) Discover(_ context.Context, info *cloudstatepb.ProxyInfo) (*cloudstatepb.EntitySpec, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.infos = append(u.infos, info)
	return u.spec, nil
}

func (u *dsUF) ReportError(_ context.Context, e *cloudstatepb.UserFunctionError) (*emptypb.Empty, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.errors = append(u.errors, e.GetMessage())
	return &emptypb.Empty{}, nil
}

func (u *dsUF) reported() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.errors...)
}

// dsConn is a client connection to a bufconn listener whose dialer fails until up is set, so a test
// can start a proxy before its user function. grpc's reconnect backoff is shortened to keep the
// test fast.
type dsConn struct {
	lis   *bufconn.Listener
	up    atomic.Bool
	dials atomic.Int32
	cc    *grpc.ClientConn
}

func dsDial(t *testing.T, lis *bufconn.Listener, up bool) *dsConn {
	t.Helper()
	c := &dsConn{lis: lis}
	c.up.Store(up)
	cc, err := grpc.NewClient("passthrough:///uf",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c.dials.Add(1)
			if !c.up.Load() {
				return nil, errors.New("connection refused")
			}
			return lis.DialContext(ctx)
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1.5, MaxDelay: 20 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	c.cc = cc
	return c
}

// dsServe serves uf on a new bufconn listener until the test ends.
func dsServe(t *testing.T, uf *dsUF) *bufconn.Listener {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	cloudstatepb.RegisterEntityDiscoveryServer(s, uf)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis
}

func TestDiscoverHandshake(t *testing.T) {
	uf := &dsUF{spec: proctest.Spec(t)}
	conn := dsDial(t, dsServe(t, uf), true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cat, spec, err := Discover(ctx, conn.cc, DiscoverOptions{ProxyVersion: "1.2.3", Logger: proctest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(spec, uf.spec) {
		t.Fatal("returned spec differs from the user function's")
	}
	if _, ok := cat.Service(proctest.ES); !ok || len(cat.Services()) != 5 {
		t.Fatalf("catalog services = %d", len(cat.Services()))
	}
	want := &cloudstatepb.ProxyInfo{
		ProtocolMajorVersion: 0,
		ProtocolMinorVersion: 2,
		ProxyName:            "kstate",
		ProxyVersion:         "1.2.3",
		SupportedEntityTypes: []string{
			"cloudstate.eventsourced.EventSourced", "cloudstate.valueentity.ValueEntity",
			"cloudstate.crdt.Crdt", "cloudstate.action.ActionProtocol",
		},
	}
	uf.mu.Lock()
	defer uf.mu.Unlock()
	if len(uf.infos) != 1 || !proto.Equal(uf.infos[0], want) {
		t.Fatalf("ProxyInfo = %v, want %v", uf.infos, want)
	}
	if len(uf.errors) != 0 {
		t.Fatalf("errors reported for a valid spec: %v", uf.errors)
	}
}

func TestDiscoverReportsSpecErrors(t *testing.T) {
	spec := proctest.Spec(t)
	spec.Entities = append(spec.Entities,
		proctest.Entity(ProtocolValue, proctest.Keyless, "kv", 0),
		proctest.Entity(ProtocolEventSourced, proctest.Pkg+"Missing", "x", 0))
	uf := &dsUF{spec: spec}
	conn := dsDial(t, dsServe(t, uf), true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cat, got, err := Discover(ctx, conn.cc, DiscoverOptions{ProxyName: "custom", Logger: proctest.Logger(t)})
	var serr *SpecError
	if !errors.As(err, &serr) || cat != nil || got == nil {
		t.Fatalf("Discover = %v, %v, want a *SpecError and the spec", cat, err)
	}
	rep := uf.reported()
	if len(rep) != 1 || rep[0] != serr.Error() {
		t.Fatalf("reported %q, want the spec error %q", rep, serr.Error())
	}
	for _, want := range []string{proctest.Keyless + "/Process", proctest.Pkg + "Missing"} {
		if !strings.Contains(rep[0], want) {
			t.Errorf("report %q does not mention %s", rep[0], want)
		}
	}
	if uf.infos[0].GetProxyName() != "custom" {
		t.Errorf("proxy name = %q", uf.infos[0].GetProxyName())
	}
}

func TestDiscoverProtocolVersion(t *testing.T) {
	for _, tc := range []struct {
		major, minor int32
		allow, ok    bool
	}{
		{0, 2, false, true},
		{0, 1, false, true},
		{0, 0, false, true}, // libraries that report no version
		{0, 3, false, false},
		{1, 0, false, false},
		{1, 0, true, true},
		{0, 3, true, true},
	} {
		spec := proctest.Spec(t)
		spec.ServiceInfo = &cloudstatepb.ServiceInfo{
			SupportLibraryName: "lib", SupportLibraryVersion: "9",
			ProtocolMajorVersion: tc.major, ProtocolMinorVersion: tc.minor,
		}
		uf := &dsUF{spec: spec}
		conn := dsDial(t, dsServe(t, uf), true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cat, _, err := Discover(ctx, conn.cc, DiscoverOptions{AllowVersionMismatch: tc.allow, Logger: proctest.Logger(t)})
		cancel()
		if tc.ok {
			if err != nil || cat == nil {
				t.Errorf("%d.%d allow=%v: %v", tc.major, tc.minor, tc.allow, err)
			}
			if rep := uf.reported(); len(rep) != 0 {
				t.Errorf("%d.%d allow=%v: reported %q", tc.major, tc.minor, tc.allow, rep)
			}
			continue
		}
		if !errors.Is(err, ErrProtocolVersion) || cat != nil {
			t.Errorf("%d.%d: err = %v, want ErrProtocolVersion", tc.major, tc.minor, err)
			continue
		}
		if rep := uf.reported(); len(rep) != 1 || !strings.Contains(rep[0], "speaks Cloudstate protocol") || !strings.Contains(rep[0], "lib 9") {
			t.Errorf("%d.%d: reported %q", tc.major, tc.minor, rep)
		}
	}
}

func TestDiscoverWaitsForUserFunction(t *testing.T) {
	uf := &dsUF{spec: proctest.Spec(t)}
	conn := dsDial(t, dsServe(t, uf), false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type res struct {
		cat *Catalog
		err error
	}
	done := make(chan res, 1)
	go func() {
		cat, _, err := Discover(ctx, conn.cc, DiscoverOptions{RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, Logger: proctest.Logger(t)})
		done <- res{cat, err}
	}()
	// Let the proxy fail to connect a few times, then bring the user function up.
	deadline := time.Now().Add(10 * time.Second)
	for conn.dials.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("Discover never tried to connect")
		}
		select {
		case r := <-done:
			t.Fatalf("Discover returned before the user function was up: %v", r.err)
		case <-time.After(time.Millisecond):
		}
	}
	conn.up.Store(true)
	r := <-done
	if r.err != nil || r.cat == nil {
		t.Fatalf("Discover = %v", r.err)
	}
}

func TestDiscoverGivesUpWithContext(t *testing.T) {
	conn := dsDial(t, bufconn.Listen(1024), false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := Discover(ctx, conn.cc, DiscoverOptions{RetryInitial: time.Millisecond, RetryMax: 10 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("Discover = %v, want a deadline error", err)
	}
}

func TestDiscoverFailsFastOnOtherErrors(t *testing.T) {
	// A server without EntityDiscovery (the wrong port, say) answers Unimplemented: no retry.
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-served
	})
	conn := dsDial(t, lis, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := Discover(ctx, conn.cc, DiscoverOptions{})
	if status.Code(errors.Unwrap(err)) != codes.Unimplemented {
		t.Fatalf("Discover = %v, want Unimplemented", err)
	}
	if err := ReportError(ctx, conn.cc, "x"); status.Code(errors.Unwrap(err)) != codes.Unimplemented {
		t.Fatalf("ReportError = %v", err)
	}
	if err := ReportError(ctx, nil, "x"); err == nil {
		t.Fatal("ReportError with no connection succeeded")
	}
}

func TestReportError(t *testing.T) {
	uf := &dsUF{spec: proctest.Spec(t)}
	conn := dsDial(t, dsServe(t, uf), true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ReportError(ctx, conn.cc, "forward to unknown service x.Y"); err != nil {
		t.Fatal(err)
	}
	if rep := uf.reported(); len(rep) != 1 || rep[0] != "forward to unknown service x.Y" {
		t.Fatalf("reported %q", rep)
	}
}
