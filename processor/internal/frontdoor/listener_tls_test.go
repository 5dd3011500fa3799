package frontdoor

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/internal/testcert"
	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/proctest"
)

// tlsTest is a TLS split listener on 127.0.0.1 with ServeMux behind it.
type tlsTest struct {
	addr  string
	ca    *testcert.CA
	split *SplitListener
}

// startTLSTest serves h over TLS with a certificate for 127.0.0.1; configure adjusts the server's
// tls.Config (client certificates).
func startTLSTest(t *testing.T, h http.Handler, handshake time.Duration, configure func(*tls.Config, *testcert.CA)) *tlsTest {
	t.Helper()
	ca := testcert.NewCA(t, "test CA")
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{ca.Issue(t, "server", "127.0.0.1").TLS},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if configure != nil {
		configure(cfg, ca)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	split := startTLSSplitListener(lis, cfg, handshake, proctest.Logger(t))
	srv := ServeMux(split.HTTP(), h)
	t.Cleanup(func() {
		split.Close()
		_ = srv.Close()
		split.Wait()
	})
	return &tlsTest{addr: lis.Addr().String(), ca: ca, split: split}
}

// client returns an HTTP client trusting the test CA; h2 selects HTTP/2 (else HTTP/1.1 only).
func (s *tlsTest) client(t *testing.T, h2 bool, certs ...tls.Certificate) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: s.ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// protoEcho answers with the request's protocol, whether it came over TLS and the client
// certificate's common name.
var protoEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	cn := "-"
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		cn = r.TLS.VerifiedChains[0][0].Subject.CommonName
	}
	fmt.Fprintf(w, "%s tls=%v cn=%s", r.Proto, r.TLS != nil, cn)
})

// Over TLS both HTTP/1.1 and HTTP/2 (chosen by ALPN) reach the handler as *tls.Conn connections,
// so Request.TLS is set.
func TestTLSSplitListenerServesHTTP1AndHTTP2(t *testing.T) {
	s := startTLSTest(t, protoEcho, time.Minute, nil)
	for _, tc := range []struct {
		h2   bool
		want string
	}{{false, "HTTP/1.1 tls=true cn=-"}, {true, "HTTP/2.0 tls=true cn=-"}} {
		resp, body := get(t, s.client(t, tc.h2), "https://"+s.addr+"/")
		if resp.StatusCode != http.StatusOK || body != tc.want {
			t.Errorf("h2=%v: %d %q, want %q", tc.h2, resp.StatusCode, body, tc.want)
		}
	}
}

// A plaintext HTTP/1 client is told what went wrong; a plaintext gRPC client fails with
// UNAVAILABLE, and neither reaches the handler.
func TestTLSSplitListenerRefusesPlaintext(t *testing.T) {
	s := startTLSTest(t, protoEcho, time.Minute, nil)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTPS") {
		t.Fatalf("plaintext HTTP: %d %q", resp.StatusCode, b)
	}

	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext gRPC: %v, want UNAVAILABLE", err)
	}
}

// With client certificates required, a client without one is refused in the handshake; one with a
// certificate of the client CA gets through, its verified chain in Request.TLS.
func TestTLSSplitListenerClientCertificates(t *testing.T) {
	s := startTLSTest(t, protoEcho, time.Minute, func(cfg *tls.Config, ca *testcert.CA) {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = ca.Pool()
	})
	// TLS 1.3 clients finish their side of the handshake before the server checks theirs: the
	// refusal is the alert that the first read returns.
	raw, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12})
	if err == nil {
		_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = raw.Read(make([]byte, 1))
		raw.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("without a client certificate: %v, want the handshake refused (certificate required)", err)
	}
	if _, err := s.client(t, true).Get("https://" + s.addr + "/"); err == nil {
		t.Fatal("an HTTP request without a client certificate succeeded")
	}
	other := testcert.NewCA(t, "other CA").Issue(t, "mallory")
	if _, err := s.client(t, true, other.TLS).Get("https://" + s.addr + "/"); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	resp, body := get(t, s.client(t, true, s.ca.Issue(t, "alice").TLS), "https://"+s.addr+"/")
	if resp.StatusCode != http.StatusOK || body != "HTTP/2.0 tls=true cn=alice" {
		t.Fatalf("with a client certificate: %d %q", resp.StatusCode, body)
	}
}

// A client that never completes its handshake is closed after the handshake timeout, and Close
// interrupts handshakes in progress rather than wait them out.
func TestTLSSplitListenerHandshakeBounds(t *testing.T) {
	s := startTLSTest(t, protoEcho, 200*time.Millisecond, nil)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("silent client: read %v, want EOF (closed by the listener)", err)
	}

	// A handshake waiting for the rest of a client hello, with an hour to go: Close must not wait.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := &acceptSignal{Listener: lis, ch: make(chan struct{}, 1)}
	slow := startTLSSplitListener(accepted, &tls.Config{Certificates: []tls.Certificate{s.ca.Issue(t, "server").TLS}}, time.Hour, nil)
	defer slow.Close()
	c2, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Write([]byte{22, 3, 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not accepted")
	}
	closed := make(chan struct{})
	go func() {
		slow.Close()
		slow.Wait()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a handshake in progress")
	}
	// EOF, or a reset when the bytes sent were still unread: either way closed by the listener.
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ne net.Error
	if _, err := c2.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("interrupted handshake: read %v, want the connection closed by the listener", err)
	}
}

// acceptSignal reports each accepted connection on ch.
type acceptSignal struct {
	net.Listener
	ch chan struct{}
}

func (l *acceptSignal) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.ch <- struct{}{}:
		default:
		}
	}
	return c, err
}

// Through the real front door over TLS: native gRPC (HTTP/2, to the gRPC server by ServeHTTP)
// and REST over HTTP/1.1 and HTTP/2 share the port.
func TestTLSFrontDoorServesGRPCAndREST(t *testing.T) {
	cat := httpTestCatalog(t)
	d := &httpTestDispatcher{canceled: make(chan struct{})}
	gs := grpc.NewServer(NewIngress(cat, d, Limits{}).ServerOptions()...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	h, err := NewHTTPHandler(cat, gs, proctest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	s := startTLSTest(t, h, time.Minute, nil)
	defer gs.Stop()

	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := testpb.NewEventSourcedTestClient(cc).Process(ctx, &testpb.Request{Id: "g"}); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	for _, h2 := range []bool{false, true} {
		resp, body := get(t, s.client(t, h2), "https://"+s.addr+"/carts/u1")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"productId":"p1"`) {
			t.Errorf("REST over TLS (h2=%v, %s): %d %s", h2, resp.Proto, resp.StatusCode, body)
		}
		if got := resp.ProtoMajor == 2; got != h2 {
			t.Errorf("REST over TLS: protocol %s, want HTTP/2 %v", resp.Proto, h2)
		}
	}
	if d.count() != 3 {
		t.Fatalf("the dispatcher received %d calls, want 3", d.count())
	}
}
