package processor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testcert"
	"github.com/kstatehq/kstate/internal/testpb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
	"github.com/kstatehq/kstate/sdk"
)

// Tests of the ports' security (docs/security.md): TLS and client certificates on the public port,
// the authentication hook on every protocol, and mutual TLS between nodes. Certificates come from
// a CA made per test (internal/testcert); nothing about TLS is mocked.

// secureEntities are the in-process entities of these tests: the event-sourced and value entities
// of inproc_test.go and an action with a server-streaming method.
func secureEntities() []sdk.Entity {
	a := sdk.NewAction("kstate.test.v1.ActionTest")
	sdk.ActionUnary(a, "Unary", func(_ *sdk.ActionContext, in *testpb.Request) (*testpb.Response, error) {
		return &testpb.Response{Message: in.GetPayload()}, nil
	})
	sdk.ActionStreamedIn(a, "StreamedIn", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request]) (*testpb.Response, error) {
		return &testpb.Response{}, nil
	})
	sdk.ActionStreamedOut(a, "StreamedOut", func(_ *sdk.ActionContext, in *testpb.Request, send func(*testpb.Response) error) error {
		for i := range 2 {
			if err := send(&testpb.Response{Message: fmt.Sprintf("%s-%d", in.GetPayload(), i)}); err != nil {
				return err
			}
		}
		return nil
	})
	sdk.ActionStreamed(a, "Streamed", func(*sdk.ActionContext, *sdk.ActionStream[*testpb.Request], func(*testpb.Response) error) error {
		return nil
	})
	return append(inprocEntities(), a)
}

// secureNode starts a node with secureEntities on kfake; cfg has been adjusted by the caller.
func secureNode(t *testing.T, cfg Config, opts ...Option) *Node {
	t.Helper()
	n, err := New(cfg, append([]Option{WithEntities(secureEntities()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func secureConfig(t *testing.T, brokers []string, app string) Config {
	cfg := testConfig(t, brokers, app, "")
	cfg.Broker.Partitions = 2
	return cfg
}

// dialTLS returns a gRPC connection to addr over TLS, trusting ca, presenting certs.
func dialTLS(t *testing.T, addr string, ca *testcert.CA, certs ...tls.Certificate) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12})
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func dialPlain(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// httpsClient returns an HTTP client trusting ca: HTTP/2 when h2, else HTTP/1.1 only.
func httpsClient(t *testing.T, ca *testcert.CA, h2 bool, certs ...tls.Certificate) *http.Client {
	t.Helper()
	tr := &http.Transport{ForceAttemptHTTP2: h2}
	if ca != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12}
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// postJSON posts body to url with header pairs and returns the status, protocol and body.
func postJSON(t *testing.T, c *http.Client, url, body string, hdr ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Proto, string(b)
}

// rpcStatus is the google.rpc.Status JSON body of an HTTP error answer.
type rpcStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func decodeStatus(t *testing.T, body string) rpcStatus {
	t.Helper()
	var st rpcStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("error body %q is not a google.rpc.Status: %v", body, err)
	}
	return st
}

// processUntil calls Process until it succeeds (the node's partitions may still be moving) or
// the deadline passes, and returns the reply's message.
func processUntil(t *testing.T, ctx context.Context, c testpb.EventSourcedTestClient, id, payload string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := c.Process(cctx, &testpb.Request{Id: id, Payload: payload})
		cancel()
		if err == nil {
			return r.GetMessage()
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("Process(%s): %v", id, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
	}
}

// TestTLSPublicPort: with TLS (here from WithTLSConfig), gRPC, health and HTTP/JSON over HTTP/1.1
// and HTTP/2 all work on the one port, and plaintext clients fail cleanly.
func TestTLSPublicPort(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	ca := testcert.NewCA(t, "public CA")
	cfg := secureConfig(t, brokers, kafkatest.Unique(t, "tls"))
	n := secureNode(t, cfg, WithTLSConfig(&tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "node", "127.0.0.1").TLS}}))

	cc := dialTLS(t, n.Addr(), ca)
	waitServing(t, cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got := processUntil(t, ctx, testpb.NewEventSourcedTestClient(cc), "t1", "a"); got != "a" {
		t.Fatalf("gRPC over TLS: %q", got)
	}
	for i, h2 := range []bool{false, true} {
		code, proto, body := postJSON(t, httpsClient(t, ca, h2), "https://"+n.Addr()+"/test/t1", fmt.Sprintf(`{"payload":"h%d"}`, i))
		if want := "a," + strings.Join([]string{"h0", "h1"}[:i+1], ","); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("HTTP/JSON over TLS (%s): %d %s, want %s", proto, code, body, want)
		}
		if (proto == "HTTP/2.0") != h2 {
			t.Errorf("HTTP/JSON over TLS: protocol %s, want HTTP/2 %v", proto, h2)
		}
	}

	// Plaintext: gRPC fails with UNAVAILABLE, HTTP/1 gets a 400 that says why.
	hc := healthpb.NewHealthClient(dialPlain(t, n.Addr()))
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	if _, err := hc.Check(pctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext gRPC to the TLS port: %v, want UNAVAILABLE", err)
	}
	code, _, body := postJSON(t, httpsClient(t, nil, false), "http://"+n.Addr()+"/test/t1", `{}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "HTTPS") {
		t.Fatalf("plaintext HTTP to the TLS port: %d %q", code, body)
	}
}

// authRecorder is a hook that records every call it sees and refuses some on request: with
// header x-deny, PERMISSION_DENIED; with x-plain-error, a plain error (UNAUTHENTICATED).
type authRecorder struct {
	mu    sync.Mutex
	calls []AuthCall
}

func (a *authRecorder) hook(_ context.Context, call AuthCall) error {
	a.mu.Lock()
	a.calls = append(a.calls, call)
	a.mu.Unlock()
	switch {
	case len(call.Header.Get("x-deny")) > 0:
		return status.Error(codes.PermissionDenied, "denied by policy")
	case len(call.Header.Get("x-plain-error")) > 0:
		return errors.New("plain failure")
	}
	return nil
}

func (a *authRecorder) last(t *testing.T) AuthCall {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.calls) == 0 {
		t.Fatal("the hook saw no call")
	}
	return a.calls[len(a.calls)-1]
}

func (a *authRecorder) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

// TestTLSClientCertificatesAndAuth: with --tls-client-ca a client without a certificate is
// refused in the handshake; with one, the hooks see its verified chain, the method, the headers
// and the peer, over gRPC (unary and streaming) and HTTP/JSON (HTTP/1.1 and HTTP/2). The bearer
// hook answers UNAUTHENTICATED (HTTP 401 with a google.rpc.Status body) to a missing or wrong
// token; a hook's PERMISSION_DENIED is kept (HTTP 403). Health needs no token, reflection does.
func TestTLSClientCertificatesAndAuth(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	dir := t.TempDir()
	ca := testcert.NewCA(t, "public CA")
	clientCA := testcert.NewCA(t, "client CA")
	cfg := secureConfig(t, brokers, kafkatest.Unique(t, "mtls"))
	cfg.TLS.CertFile, cfg.TLS.KeyFile = ca.Issue(t, "node", "127.0.0.1").WriteFiles(t, dir, "node")
	cfg.TLS.ClientCAFile = clientCA.WriteFile(t, dir, "clients.crt")
	rec := &authRecorder{}
	n := secureNode(t, cfg, WithAuth(BearerTokens("s3cret", "other")), WithAuth(rec.hook))

	// No client certificate: refused before any request (the alert ends the gRPC connection).
	noCert := healthpb.NewHealthClient(dialTLS(t, n.Addr(), ca))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := noCert.Check(nctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("without a client certificate: %v, want UNAVAILABLE", err)
	}
	ncancel()
	if _, err := httpsClient(t, ca, true).Get("https://" + n.Addr() + "/"); err == nil {
		t.Fatal("HTTP without a client certificate got an answer")
	}

	alice := clientCA.Issue(t, "alice")
	cc := dialTLS(t, n.Addr(), ca, alice.TLS)
	waitServing(t, cc) // health: no token needed
	if rec.count() != 0 {
		t.Fatalf("health checks reached the hook (%d calls)", rec.count())
	}
	es := testpb.NewEventSourcedTestClient(cc)
	withToken := func(tok string, kv ...string) context.Context {
		return metadata.NewOutgoingContext(ctx, metadata.Pairs(append([]string{"authorization", "Bearer " + tok}, kv...)...))
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no token", ctx, codes.Unauthenticated},
		{"wrong token", withToken("s3cre"), codes.Unauthenticated},
		{"another scheme", metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Basic czNjcmV0")), codes.Unauthenticated},
		{"policy says no", withToken("s3cret", "x-deny", "1"), codes.PermissionDenied},
		{"a plain error", withToken("s3cret", "x-plain-error", "1"), codes.Unauthenticated},
	} {
		if _, err := es.Process(tc.ctx, &testpb.Request{Id: "a1", Payload: "x"}); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if got := processUntil(t, withToken("s3cret", "x-trace", "t-1"), es, "a1", "x"); got != "x" {
		t.Fatalf("with the token: %q", got)
	}
	call := rec.last(t)
	if call.Method != "/kstate.test.v1.EventSourcedTest/Process" || len(call.Header.Get("x-trace")) == 0 ||
		call.Peer == nil || call.TLS == nil || len(call.VerifiedChain) != 2 || call.VerifiedChain[0].Subject.CommonName != "alice" {
		t.Fatalf("the hook saw %+v", call)
	}

	// A server-streaming call is authorized when it opens.
	act := testpb.NewActionTestClient(cc)
	s, err := act.StreamedOut(ctx, &testpb.Request{Payload: "s"})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream without a token: %v, want UNAUTHENTICATED", err)
	}
	s, err = act.StreamedOut(withToken("other"), &testpb.Request{Payload: "s"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if r, err := s.Recv(); err != nil || r.GetMessage() != fmt.Sprintf("s-%d", i) {
			t.Fatalf("stream reply %d: %v %v", i, r, err)
		}
	}
	if rec.last(t).Method != "/kstate.test.v1.ActionTest/StreamedOut" {
		t.Fatalf("the hook saw %s", rec.last(t).Method)
	}

	// Reflection describes the services: it needs the token too.
	rs, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err == nil {
		_ = rs.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
		_, err = rs.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reflection without a token: %v, want UNAUTHENTICATED", err)
	}

	// HTTP/JSON: 401 and 403 with the front door's google.rpc.Status body; 200 with the token.
	for _, h2 := range []bool{false, true} {
		hc := httpsClient(t, ca, h2, alice.TLS)
		url := "https://" + n.Addr() + "/test/a1"
		code, proto, body := postJSON(t, hc, url, `{"payload":"y"}`)
		if st := decodeStatus(t, body); code != http.StatusUnauthorized || st.Code != int(codes.Unauthenticated) {
			t.Errorf("%s without a token: %d %s, want 401 UNAUTHENTICATED", proto, code, body)
		}
		code, proto, body = postJSON(t, hc, url, `{"payload":"y"}`, "Authorization", "Bearer nope")
		if st := decodeStatus(t, body); code != http.StatusUnauthorized || st.Code != int(codes.Unauthenticated) || st.Message != "invalid bearer token" {
			t.Errorf("%s with a wrong token: %d %s, want 401 UNAUTHENTICATED", proto, code, body)
		}
		code, proto, body = postJSON(t, hc, url, `{"payload":"y"}`, "Authorization", "Bearer s3cret", "X-Deny", "1")
		if st := decodeStatus(t, body); code != http.StatusForbidden || st.Code != int(codes.PermissionDenied) {
			t.Errorf("%s denied by policy: %d %s, want 403 PERMISSION_DENIED", proto, code, body)
		}
		code, proto, body = postJSON(t, hc, url, `{"payload":"y"}`, "Authorization", "bearer s3cret")
		if code != http.StatusOK || !strings.Contains(body, `"message"`) {
			t.Errorf("%s with the token: %d %s", proto, code, body)
		}
		call := rec.last(t)
		if call.Method != "/kstate.test.v1.EventSourcedTest/Process" || len(call.VerifiedChain) == 0 || call.VerifiedChain[0].Subject.CommonName != "alice" || call.Peer == nil {
			t.Errorf("%s: the hook saw %+v", proto, call)
		}
	}
}

// TestAuthPlaintext: without TLS the hook covers native gRPC (served by grpc-go's own transport
// behind the split listener) and HTTP/JSON alike, and health stays open.
func TestAuthPlaintext(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	n := secureNode(t, secureConfig(t, brokers, kafkatest.Unique(t, "auth")), WithAuth(BearerTokens("t0k")))
	cc := dialPlain(t, n.Addr())
	waitServing(t, cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	val := testpb.NewValueTestClient(cc)
	if _, err := val.Process(ctx, &testpb.Request{Id: "v1", Payload: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC without a token: %v, want UNAUTHENTICATED", err)
	}
	if _, err := val.Process(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer t0k"), &testpb.Request{Id: "v1", Payload: "x"}); err != nil {
		t.Fatalf("gRPC with the token: %v", err)
	}
	hc := httpsClient(t, nil, false)
	code, _, body := postJSON(t, hc, "http://"+n.Addr()+"/test-value/v1", `{"payload":"y"}`)
	if st := decodeStatus(t, body); code != http.StatusUnauthorized || st.Code != int(codes.Unauthenticated) {
		t.Fatalf("HTTP without a token: %d %s", code, body)
	}
	code, _, body = postJSON(t, hc, "http://"+n.Addr()+"/test-value/v1", `{"payload":"y"}`, "Authorization", "Bearer t0k")
	if code != http.StatusOK || !strings.Contains(body, "x,y") {
		t.Fatalf("HTTP with the token: %d %s", code, body)
	}
}

// TestPeerMTLS: two nodes whose peer ports require mutual TLS forward commands to each other
// (their certificates name no address: the chain to the cluster CA is what is checked), and the
// peer listener refuses a client without a certificate, one of another CA, and plaintext.
func TestPeerMTLS(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	dir := t.TempDir()
	cluster := testcert.NewCA(t, "cluster CA")
	caFile := cluster.WriteFile(t, dir, "cluster.crt")
	app := kafkatest.Unique(t, "peer")
	var nodes []*Node
	for _, name := range []string{"a", "b"} {
		cfg := secureConfig(t, brokers, app)
		cfg.PeerTLS.CertFile, cfg.PeerTLS.KeyFile = cluster.Issue(t, "node-"+name).WriteFiles(t, dir, name)
		cfg.PeerTLS.CAFile = caFile
		nodes = append(nodes, secureNode(t, cfg))
	}
	a, b := nodes[0], nodes[1]
	waitServing(t, dialPlain(t, a.Addr()))
	waitServing(t, dialPlain(t, b.Addr()))

	// Wait until each node owns a partition and the other knows it, then call each node with an
	// entity of the other's partition: the command is forwarded over the peer port.
	deadline := time.Now().Add(30 * time.Second)
	owned := func(via, owner *Node) (int32, bool) {
		for p := range via.cfg.Broker.Partitions {
			rec, _ := via.owners.get(p)
			if rec.GetNodeId() == owner.cfg.NodeID && owner.localOwner(p) != nil {
				return p, true
			}
		}
		return 0, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, pair := range [][2]*Node{{a, b}, {b, a}} {
		via, owner := pair[0], pair[1]
		var p int32
		for {
			var ok bool
			if p, ok = owned(via, owner); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s never learned that %s owns a partition", via.cfg.NodeID, owner.cfg.NodeID)
			}
			time.Sleep(20 * time.Millisecond) // polling interval of a bounded wait
		}
		id := idIn("fwd", p, via.cfg.Broker.Partitions)
		if got := processUntil(t, ctx, testpb.NewEventSourcedTestClient(dialPlain(t, via.Addr())), id, "x"); got != "x" {
			t.Fatalf("forwarded Process: %q", got)
		}
		via.conns.mu.Lock()
		_, dialled := via.conns.conns[owner.cfg.AdvertiseAddr]
		via.conns.mu.Unlock()
		if !dialled {
			t.Fatalf("node %s has no peer connection to %s: the command was not forwarded", via.cfg.NodeID, owner.cfg.AdvertiseAddr)
		}
	}

	// The peer listener refuses clients without a certificate of the cluster CA.
	payload := &kstatev1.ForwardRequest{Service: esService, Method: "Process", EntityId: "x", Partition: broker.Partition([]byte("x"), b.cfg.Broker.Partitions)}
	// The server's name is not the point here: these clients skip its verification.
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}  //nolint:gosec // see above
	foreign := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, //nolint:gosec // see above
		Certificates: []tls.Certificate{testcert.NewCA(t, "other").Issue(t, "mallory").TLS}}
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"plaintext", insecure.NewCredentials()},
		{"no client certificate", credentials.NewTLS(noCert)},
		{"a certificate of another CA", credentials.NewTLS(foreign)},
	} {
		pc, err := grpc.NewClient(b.PeerAddr(), grpc.WithTransportCredentials(tc.creds))
		if err != nil {
			t.Fatal(err)
		}
		fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = kstatev1.NewNodeClient(pc).Forward(fctx, payload)
		fcancel()
		_ = pc.Close()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: Forward %v, want UNAVAILABLE (refused in the handshake)", tc.name, err)
		}
		t.Logf("%s: %v", tc.name, err)
	}
}

// TestPeerTLSServerName: with PeerTLS.ServerName both sides require that name among the other's
// SANs, on top of the chain to the CA.
func TestPeerTLSServerName(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "shared CA")
	caFile := ca.WriteFile(t, dir, "ca.crt")
	peerTLS := func(name string, sans ...string) PeerTLSConfig {
		cert, key := ca.Issue(t, name, sans...).WriteFiles(t, dir, name)
		return PeerTLSConfig{CertFile: cert, KeyFile: key, CAFile: caFile, ServerName: "peers.kstate"}
	}
	// handshake connects a client with the client side of client to a server with the server side
	// of server over loopback TCP; nil when both accept (the server then says "ok").
	handshake := func(server, client PeerTLSConfig) error {
		srv, _, err := server.build()
		if err != nil {
			t.Fatal(err)
		}
		_, cli, err := client.build()
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		errs := make(chan error, 1)
		go func() {
			c, err := lis.Accept()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(c, srv)
			if err = tc.Handshake(); err == nil {
				_, err = tc.Write([]byte("ok"))
			}
			errs <- err
		}()
		c, err := tls.Dial("tcp", lis.Addr().String(), cli)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = io.ReadFull(c, make([]byte, 2)) // a TLS 1.3 server refuses the client's certificate after the client's handshake
			c.Close()
		}
		return errors.Join(err, <-errs)
	}
	good, other := peerTLS("node-1", "peers.kstate"), peerTLS("intruder", "billing.internal")
	if err := handshake(good, peerTLS("node-2", "peers.kstate")); err != nil {
		t.Fatalf("two peers with the name: %v", err)
	}
	if err := handshake(good, other); err == nil {
		t.Fatal("a client certificate without the name was accepted")
	}
	if err := handshake(other, good); err == nil {
		t.Fatal("a server certificate without the name was accepted")
	}
}

// TestTLSConfigErrors: incomplete configurations and missing, unreadable or mismatched files are
// reported when the node is built, naming the field and its flag.
func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "CA")
	cert, key := ca.Issue(t, "a", "127.0.0.1").WriteFiles(t, dir, "a")
	_, otherKey := ca.Issue(t, "b").WriteFiles(t, dir, "b")
	caFile := ca.WriteFile(t, dir, "ca.crt")
	missing := dir + "/missing.pem"
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"cert without key", func(c *Config) { c.TLS.CertFile = cert }, "--tls-key"},
		{"missing cert", func(c *Config) { c.TLS = TLSConfig{CertFile: missing, KeyFile: key} }, "TLS.CertFile (--tls-cert): open " + missing},
		{"missing key", func(c *Config) { c.TLS = TLSConfig{CertFile: cert, KeyFile: missing} }, "TLS.KeyFile (--tls-key): open " + missing},
		{"mismatched key", func(c *Config) { c.TLS = TLSConfig{CertFile: cert, KeyFile: otherKey} }, "private key does not match public key"},
		{"client CA alone", func(c *Config) { c.TLS.ClientCAFile = caFile }, "--tls-cert"},
		{"client CA not PEM", func(c *Config) { c.TLS = TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: key} }, "--tls-client-ca) " + key + ": no PEM certificates"},
		{"peer cert only", func(c *Config) { c.PeerTLS.CertFile = cert }, "--peer-tls-ca"},
		{"peer CA missing", func(c *Config) { c.PeerTLS = PeerTLSConfig{CertFile: cert, KeyFile: key, CAFile: missing} }, "PeerTLS.CAFile (--peer-tls-ca): open"},
		{"peer key mismatched", func(c *Config) { c.PeerTLS = PeerTLSConfig{CertFile: cert, KeyFile: otherKey, CAFile: caFile} }, "--peer-tls-key"},
	} {
		cfg := DefaultConfig()
		cfg.DataDir = dir
		cfg.ListenAddr = "127.0.0.1:0"
		cfg.Broker.Brokers = []string{"127.0.0.1:9092"}
		tc.set(&cfg)
		_, err := New(cfg, WithEntities(inprocEntities()...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Broker.Brokers = []string{"127.0.0.1:9092"}
	cfg.TLS = TLSConfig{CertFile: cert, KeyFile: key}
	if _, err := New(cfg, WithEntities(inprocEntities()...), WithTLSConfig(&tls.Config{})); err == nil || !strings.Contains(err.Error(), "both Config.TLS and WithTLSConfig") {
		t.Errorf("Config.TLS and WithTLSConfig: %v", err)
	}
	cfg.TLS = TLSConfig{}
	if _, err := New(cfg, WithEntities(inprocEntities()...), WithTLSConfig(&tls.Config{})); err == nil || !strings.Contains(err.Error(), "no server certificate") {
		t.Errorf("WithTLSConfig without a certificate: %v", err)
	}
}
