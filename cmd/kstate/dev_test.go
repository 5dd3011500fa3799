package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/internal/testcert"
	"github.com/kstatehq/kstate/processor"
)

// syncBuffer is a bytes.Buffer safe for one writer goroutine and a polling reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devRun is a `kstate dev` running in-process through the root command, as the binary would.
type devRun struct {
	grpcAddr   string
	kafkaAddr  string
	metricsURL string
	consoleURL string
	cancel     context.CancelFunc
	errc       chan error
	out        *syncBuffer
}

var bannerAddr = regexp.MustCompile(`(?m)^\s+(gRPC \+ HTTP/JSON|Kafka|metrics|console):\s+(\S+)`)

// startDev runs `kstate dev args...` until its banner is printed.
func startDev(t *testing.T, args ...string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &devRun{cancel: cancel, errc: make(chan error, 1), out: &syncBuffer{}}
	root := newRootCmd()
	// Any free admin port: the default (9090) may be taken on the machine running the tests.
	root.SetArgs(append([]string{"dev", "--log-level", "error", "--admin-listen", "127.0.0.1:0"}, args...))
	root.SetOut(r.out)
	root.SetErr(r.out)
	go func() { r.errc <- root.ExecuteContext(ctx) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-r.errc
		}
	})
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(r.out.String(), "kstate dev is up") {
		select {
		case err := <-r.errc:
			stopped = true
			t.Fatalf("kstate dev exited before it was up: %v\n%s", err, r.out.String())
		case <-deadline.C:
			t.Fatalf("kstate dev not up after 2m:\n%s", r.out.String())
		case <-tick.C:
		}
	}
	for _, m := range bannerAddr.FindAllStringSubmatch(r.out.String(), -1) {
		switch m[1] {
		case "gRPC + HTTP/JSON":
			r.grpcAddr = m[2]
		case "Kafka":
			r.kafkaAddr = m[2]
		case "metrics":
			r.metricsURL = m[2]
		case "console":
			r.consoleURL = m[2]
		}
	}
	if r.grpcAddr == "" || r.kafkaAddr == "" || r.metricsURL == "" || r.consoleURL == "" {
		t.Fatalf("no gRPC, Kafka, metrics or console address in the banner:\n%s", r.out.String())
	}
	// "up" means serving: health says so the moment the banner is out.
	if strings.Contains(r.out.String(), "TLS") {
		return r // healthOf speaks plaintext
	}
	if st := healthOf(t, r.grpcAddr); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("kstate dev says it is up, but its health is %v:\n%s", st, r.out.String())
	}
	return r
}

// healthOf asks addr's gRPC health once.
func healthOf(t *testing.T, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health of %s: %v", addr, err)
	}
	return resp.GetStatus()
}

// stop cancels the run (as SIGINT would) and waits for a clean exit.
func (r *devRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.errc:
		r.errc <- nil // for the cleanup registered by startDev
		if err != nil {
			t.Fatalf("kstate dev did not shut down cleanly: %v\n%s", err, r.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("kstate dev still running 1m after cancel:\n%s", r.out.String())
	}
}

// getURL fetches url and returns its body, failing t unless the answer is 200.
func getURL(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// freeAddr returns a loopback address whose port was free a moment ago, so two runs of
// `kstate dev` can use the same --kafka-addr, as a user's would.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// call runs `kstate call` against addr and decodes the JSON reply.
func call(t *testing.T, addr, method, req string) map[string]any {
	t.Helper()
	out, errOut, err := runCallCmd(t, "", "--addr", addr, "--timeout", "30s", method, req)
	if err != nil {
		t.Fatalf("kstate call %s %s: %v\n%s", method, req, err, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("kstate call %s: reply %q is not one JSON object: %v", method, out, err)
	}
	return m
}

func topicsByName(t *testing.T, kafkaAddr string, app string) map[string]topicRow {
	t.Helper()
	o := &topicsOpts{clusterOpts: clusterOpts{brokers: []string{kafkaAddr}, namespace: "kstate", app: app, timeout: 30 * time.Second}, count: true}
	rows, err := listTopics(context.Background(), o, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]topicRow{}
	for _, r := range rows {
		m[r.Name] = r
	}
	return m
}

// TestDevRestartKeepsTopicsAndData runs `kstate dev --example shoppingcart` on a data dir, checks
// its topics with the `kstate topics` logic, adds an item to a cart, stops it, starts it again on
// the same data dir, and finds the topics, their records and the cart as they were.
func TestDevRestartKeepsTopicsAndData(t *testing.T) {
	dataDir := t.TempDir()
	kafkaAddr := freeAddr(t)
	args := []string{"--data-dir", dataDir, "--kafka-addr", kafkaAddr, "--listen", "127.0.0.1:0",
		"--example", "shoppingcart", "--app", "shop", "--partitions", "3"}

	want := map[string]struct {
		kind       string
		partitions int32
		cleanup    string
	}{
		"kstate.shop.commands":                                {"commands", 3, "delete"},
		"kstate.shop.owners":                                  {"owners", 1, "compact"},
		"kstate.claims":                                       {"claims", 1, "delete"},
		"kstate.shop.dead-letters":                            {"dead-letters", 3, "delete"},
		"kstate.shop.idempotency":                             {"idempotency", 3, "delete"},
		"kstate." + shoppingcart.PersistenceID + ".events":    {"events", 3, "delete"},
		"kstate." + shoppingcart.PersistenceID + ".snapshots": {"snapshots", 3, "compact"},
	}
	check := func(run string, r *devRun) map[string]topicRow {
		t.Helper()
		got := topicsByName(t, r.kafkaAddr, "")
		for name, w := range want {
			g, ok := got[name]
			if !ok {
				t.Fatalf("%s: topic %s missing; have %v", run, name, got)
			}
			if g.Kind != w.kind || g.Partitions != w.partitions || g.CleanupPolicy != w.cleanup {
				t.Errorf("%s: %s is kind %s, %d partitions, cleanup %s; want %s, %d, %s",
					run, name, g.Kind, g.Partitions, g.CleanupPolicy, w.kind, w.partitions, w.cleanup)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d topics, want %d: %v", run, len(got), len(want), got)
		}
		app := topicsByName(t, r.kafkaAddr, "shop")
		if len(app) != 4 || app["kstate.shop.commands"].Name == "" || app["kstate.shop.owners"].Name == "" || app["kstate.shop.dead-letters"].Name == "" || app["kstate.shop.idempotency"].Name == "" {
			t.Errorf("%s: --app shop lists %v, want the commands, owners, dead-letters and idempotency topics", run, app)
		}
		return got
	}

	first := startDev(t, args...)
	if first.kafkaAddr != kafkaAddr {
		t.Fatalf("banner shows Kafka at %s, want --kafka-addr %s", first.kafkaAddr, kafkaAddr)
	}
	check("first run", first)
	call(t, first.grpcAddr, "com.example.shoppingcart.ShoppingCart/AddItem",
		`{"user_id":"ann","product_id":"pen","name":"Pen","quantity":2}`)
	before := check("first run, after AddItem", first)
	// The banner's metrics URL serves the node's metrics, the AddItem command among them.
	if m := getURL(t, first.metricsURL); !strings.Contains(m, `kstate_commands_total{code="OK",service="com.example.shoppingcart.ShoppingCart"} 1`) {
		t.Errorf("%s does not count the AddItem command:\n%s", first.metricsURL, m)
	}
	// The banner's console URL serves the console, which lists the service.
	if c := getURL(t, first.consoleURL); !strings.Contains(c, `data-service="com.example.shoppingcart.ShoppingCart"`) {
		t.Errorf("%s does not show the shopping cart service:\n%s", first.consoleURL, c)
	}
	events := "kstate." + shoppingcart.PersistenceID + ".events"
	if n := sum(before[events].EndOffsets); n < 1 {
		t.Fatalf("after AddItem the journal %s is empty", events)
	}
	// One event: one record, and an end offset past its transaction's commit marker.
	if r, e := sum(before[events].Records), sum(before[events].EndOffsets); r != 1 || e != 2 {
		t.Errorf("%s: %d records, end offsets %d; want 1 record (the ItemAdded event) and 2 (with the commit marker)", events, r, e)
	}

	// The `kstate topics` command itself, through the root command.
	var out bytes.Buffer
	root := newRootCmd()
	root.SetArgs([]string{"topics", "--log-level", "error", "--brokers", first.kafkaAddr})
	root.SetOut(&out)
	if err := root.Execute(); err != nil {
		t.Fatalf("kstate topics: %v", err)
	}
	for _, s := range []string{"TOPIC", "KIND", "RECORDS", "END OFFSETS", events, "kstate.shop.owners", "compact"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("kstate topics output lacks %q:\n%s", s, out.String())
		}
	}
	first.stop(t)

	second := startDev(t, args...)
	after := check("second run", second)
	for name, b := range before {
		a := after[name]
		if name != "kstate.shop.owners" && sum(a.EndOffsets) != sum(b.EndOffsets) {
			t.Errorf("%s: %d records before the restart, %d after", name, sum(b.EndOffsets), sum(a.EndOffsets))
		}
		if sum(a.EndOffsets) < sum(b.EndOffsets) {
			t.Errorf("%s lost records over the restart: end offsets %v, then %v", name, b.EndOffsets, a.EndOffsets)
		}
	}
	cart := call(t, second.grpcAddr, "com.example.shoppingcart.ShoppingCart/GetCart", `{"user_id":"ann"}`)
	items, _ := cart["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("cart after restart = %v, want the one item added before it", cart)
	}
	item, _ := items[0].(map[string]any)
	if item["productId"] != "pen" || item["quantity"] != float64(2) {
		t.Errorf("cart item after restart = %v, want pen x2", item)
	}
	second.stop(t)
}

// TestBadFlags checks that bad flag values fail before anything starts, naming what to fix.
func TestBadFlags(t *testing.T) {
	// A port in use: a dev run that got as far as starting its broker would fail naming it.
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	busy := hold.Addr().String()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "loud", "version"}, ""}, // version takes no logger: fine
		{[]string{"--log-level", "loud", "topics"}, "want one of"},
		{[]string{"topics", "--brokers", ""}, "--brokers is empty"},
		{[]string{"topics", "--namespace", "bad ns"}, "not allowed in Kafka topic names"},
		{[]string{"topics", "--app", "a/b"}, "not allowed in Kafka topic names"},
		{[]string{"topics", "--timeout", "0s"}, "--timeout"},
		{[]string{"dev", "--example", "nope", "--kafka-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, "unknown example"},
		{[]string{"dev", "--kafka-addr", "nohost", "--data-dir", t.TempDir()}, "want host:port"},
		{[]string{"topics", "--partitions", "3"}, "unknown flag"},
		{[]string{"serve", "--partitions", "0", "--example", "shoppingcart", "--data-dir", t.TempDir()}, "--partitions 0: want at least 1"},
		{[]string{"serve", "--partitions", "-3", "--example", "shoppingcart", "--data-dir", t.TempDir()}, "--partitions -3: want at least 1"},
		// Security flags are checked before the embedded broker starts (its port is taken).
		{[]string{"dev", "--example", "shoppingcart", "--kafka-addr", busy, "--data-dir", t.TempDir(), "--tls-cert", "/nonexistent.crt"}, "--tls-key"},
		{[]string{"dev", "--example", "shoppingcart", "--kafka-addr", busy, "--data-dir", t.TempDir(), "--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"}, "(--tls-cert): open /nonexistent.crt"},
		{[]string{"dev", "--example", "shoppingcart", "--kafka-addr", busy, "--data-dir", t.TempDir(), "--auth-bearer-file", "/nonexistent"}, "--auth-bearer-file"},
		{[]string{"serve", "--example", "shoppingcart", "--data-dir", t.TempDir(), "--peer-tls-cert", "/x.crt", "--peer-tls-key", "/x.key"}, "--peer-tls-ca"},
	} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetArgs(tc.args)
		root.SetOut(&out)
		root.SetErr(&out)
		err := root.Execute()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("kstate %v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("kstate %v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestDevChecksBeforeStarting: a port in use or a data dir another kstate dev holds fails
// `kstate dev` before its broker starts, naming the flag.
func TestDevChecksBeforeStarting(t *testing.T) {
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	busy := hold.Addr().String()
	locked := t.TempDir()
	release, err := lockDataDir(locked)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"listen", []string{"--listen", busy}, "--listen " + busy + ": bind: address already in use"},
		{"admin", []string{"--admin-listen", busy}, "--admin-listen " + busy},
		{"peer", []string{"--peer-listen", busy}, "--peer-listen " + busy},
		{"kafka", []string{"--kafka-addr", busy}, "--kafka-addr " + busy},
		{"data dir", []string{"--data-dir", locked}, "--data-dir " + locked + " is in use by another kstate (pid "},
	} {
		dir := t.TempDir()
		args := append([]string{"dev", "--example", "shoppingcart", "--data-dir", dir, "--kafka-addr", freeAddr(t), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, tc.args...)
		root := newRootCmd()
		var out bytes.Buffer
		root.SetArgs(args)
		root.SetOut(&out)
		root.SetErr(&out)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: kstate %v: %v, want an error containing %q", tc.name, args, err, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "kafka")); err == nil {
			t.Errorf("%s: the embedded broker started before the conflict was found", tc.name)
		}
	}
}

func TestReadinessLine(t *testing.T) {
	for _, tc := range []struct {
		r    processor.Readiness
		want string
	}{
		{processor.Readiness{UserFunctionDown: true}, "waiting for the user function (unreachable)"},
		{processor.Readiness{}, "waiting for the group to assign partitions"},
		{processor.Readiness{Joined: true, Assigned: 4, Restored: 2, Restoring: []processor.RestoreProgress{{Partition: 1, Done: 10, Total: 40}, {Partition: 3, Done: 0, Total: 0}}},
			"restoring: 2 of 4 partitions serve, 10 of 40 offsets read (25%)"},
	} {
		if got := readinessLine(tc.r); got != tc.want {
			t.Errorf("readinessLine(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetArgs([]string{"version"})
	root.SetOut(&out)
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"kstate " + processor.Version + "\n", "\ncommit ", "go go1.", "protocol 0.2"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("version output %q lacks %q", out.String(), s)
		}
	}
}

func TestTopicKind(t *testing.T) {
	for name, want := range map[string]string{
		"kstate.shop.commands":    "commands",
		"kstate.cart.crdt-state":  "crdt-state",
		"kstate.cart.events":      "events",
		"kstate.cart.snapshots":   "snapshots",
		"kstate.votes.crdt":       "crdt",
		"kstate.shop.owners":      "owners",
		"kstate.shop.idempotency": "idempotency",
		"kstate.profile.state":    "state",
		"kstate.something.else":   "-",
		"no-dots-at-all":          "-",
		"kstate.shop.commands.x":  "-",
		"kstate.shop.owners-copy": "-",
	} {
		if got := topicKind(name); got != want {
			t.Errorf("topicKind(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestDevTLSAndTokens runs `kstate dev` with TLS, required client certificates and a token file,
// and calls it with `kstate call` and over HTTPS: the right certificate and token get through;
// without the token the call is UNAUTHENTICATED (HTTP 401), without the certificate refused.
func TestDevTLSAndTokens(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "dev CA")
	cert, key := ca.Issue(t, "node", "127.0.0.1").WriteFiles(t, dir, "node")
	caFile := ca.WriteFile(t, dir, "ca.crt")
	client := ca.Issue(t, "alice")
	clientCert, clientKey := client.WriteFiles(t, dir, "alice")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startDev(t, "--data-dir", filepath.Join(dir, "data"), "--kafka-addr", freeAddr(t), "--listen", "127.0.0.1:0",
		"--example", "shoppingcart", "--partitions", "2",
		"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", caFile, "--auth-bearer-file", tokens)
	if !strings.Contains(r.out.String(), "TLS, client certificates required, bearer tokens required") {
		t.Errorf("the banner does not say the port is secured:\n%s", r.out.String())
	}
	const add = "com.example.shoppingcart.ShoppingCart/AddItem"
	req := `{"user_id":"ann","product_id":"pen","name":"Pen","quantity":2}`
	tlsArgs := []string{"--addr", r.grpcAddr, "--timeout", "30s", "--tls-ca", caFile, "--tls-cert", clientCert, "--tls-key", clientKey}
	if _, errOut, err := runCallCmd(t, "", append(tlsArgs, "-H", "authorization: Bearer s3cret", add, req)...); err != nil {
		t.Fatalf("kstate call with certificate and token: %v\n%s", err, errOut)
	}
	if _, errOut, err := runCallCmd(t, "", append(tlsArgs, add, req)...); err == nil || !strings.Contains(errOut, "Unauthenticated") {
		t.Fatalf("kstate call without a token: %v, stderr %q; want Unauthenticated", err, errOut)
	}
	if _, errOut, err := runCallCmd(t, "", "--addr", r.grpcAddr, "--timeout", "10s", "--tls-ca", caFile, "-H", "authorization: Bearer s3cret", add, req); err == nil {
		t.Fatalf("kstate call without a client certificate succeeded: %s", errOut)
	}

	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLS}, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	get := func(token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://"+r.grpcAddr+"/carts/ann", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("s3cret"); code != http.StatusOK || !strings.Contains(body, `"productId":"pen"`) {
		t.Fatalf("HTTPS with the token: %d %s", code, body)
	}
	if code, body := get(""); code != http.StatusUnauthorized || !strings.Contains(body, `"code":16`) {
		t.Fatalf("HTTPS without a token: %d %s", code, body)
	}
	r.stop(t)
}
