package processor

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/kstatehq/kstate/broker/kafkatest"
	"github.com/kstatehq/kstate/internal/testcert"
	"github.com/kstatehq/kstate/internal/testpb"
)

// consoleDo sends a request to the node's admin listener; tune may change it.
func consoleDo(t *testing.T, n *Node, method, path, body string, tune func(*http.Request)) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.AdminAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if tune != nil {
		tune(req)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func consoleStatusOf(t *testing.T, n *Node) consoleStatus {
	t.Helper()
	code, _, body := consoleDo(t, n, "GET", "/api/v1/status", "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/status: %d %s", code, body)
	}
	var st consoleStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status: %v\n%s", err, body)
	}
	return st
}

// TestConsoleHTTP checks the console's page, status and call endpoints over plain HTTP: what they
// show of a serving node, the call through the public port, and the requests they refuse.
func TestConsoleHTTP(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	n, cc := metricsNode(t, brokers, "console-http", 3, nil)

	// A command, so the entity is active and partition commits move.
	var resp testpb.Response
	if err := cc.Invoke(t.Context(), "/"+esTestService+"/Process", &testpb.Request{Id: "e1", Payload: "a"}, &resp); err != nil {
		t.Fatal(err)
	}

	st := consoleStatusOf(t, n)
	if st.Node.ID != n.cfg.NodeID || st.Node.App != "console-http" || st.Node.Version != Version || st.Node.State != "serving" {
		t.Errorf("node = %+v", st.Node)
	}
	if len(st.Node.Assigned) != 3 || st.Node.Restoring != 0 {
		t.Errorf("assigned %v, restoring %d; want all 3 partitions, none restoring", st.Node.Assigned, st.Node.Restoring)
	}
	if len(st.Partitions) != 3 {
		t.Fatalf("partitions = %+v", st.Partitions)
	}
	for _, p := range st.Partitions {
		if p.Owner == nil || p.Owner.Node != n.cfg.NodeID {
			t.Errorf("partition %d owner = %+v, want %s", p.Partition, p.Owner, n.cfg.NodeID)
		}
		if p.Local == nil || p.Local.Phase != phaseServing {
			t.Errorf("partition %d local = %+v, want serving", p.Partition, p.Local)
		}
		if p.LogEnd == nil {
			t.Errorf("partition %d: no log end (offsets error %q)", p.Partition, st.OffsetsError)
		}
	}
	if len(st.Nodes) != 1 || !st.Nodes[0].Self || st.Nodes[0].Partitions != 3 || !st.Nodes[0].InGroup {
		t.Errorf("nodes = %+v (group error %q)", st.Nodes, st.GroupError)
	}
	var es *consoleService
	for i := range st.Services {
		if st.Services[i].Name == esTestService {
			es = &st.Services[i]
		}
	}
	if es == nil || es.Kind != "event-sourced" || es.ActiveEntities != 1 {
		t.Fatalf("services = %+v; want %s, event-sourced, 1 active entity", st.Services, esTestService)
	}
	var process *consoleMethod
	for i := range es.Methods {
		if es.Methods[i].Name == "Process" {
			process = &es.Methods[i]
		}
	}
	if process == nil || process.Template != "{\n  \"id\": \"\",\n  \"payload\": \"\"\n}" {
		t.Errorf("Process method = %+v", process)
	}

	// The page is rendered on the server, with the same data.
	for _, path := range []string{"/", "/console"} {
		code, h, page := consoleDo(t, n, "GET", path, "", nil)
		if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", path, code, h.Get("Content-Type"))
		}
		if !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: security headers %v", path, h)
		}
		for _, want := range []string{`data-partition="2" data-owner="` + n.cfg.NodeID + `"`, `<option value="` + esTestService + `/Process"`, "serving (restored"} {
			if !strings.Contains(page, want) {
				t.Errorf("GET %s: no %q in\n%s", path, want, page)
			}
		}
	}
	if code, _, js := consoleDo(t, n, "GET", "/console/static/console.js", "", nil); code != http.StatusOK || !strings.Contains(js, "/api/v1/status") {
		t.Errorf("console.js: %d", code)
	}

	// A call through the public port.
	call := `{"method": "` + esTestService + `/Process", "request": {"id": "e1", "payload": "b"}}`
	code, _, body := consoleDo(t, n, "POST", "/api/v1/call", call, nil)
	var reply consoleCallReply
	if err := json.Unmarshal([]byte(body), &reply); err != nil || code != http.StatusOK {
		t.Fatalf("call: %d %s", code, body)
	}
	if reply.Code != "OK" || len(reply.Replies) != 1 || !strings.Contains(string(reply.Replies[0]), `"a,b"`) {
		t.Errorf("call reply = %s", body)
	}
	// A command failure arrives as its code.
	code, _, body = consoleDo(t, n, "POST", "/api/v1/call", `{"method": "`+esTestService+`/Process", "request": {"id": "e1", "payload": "bad"}}`, nil)
	if err := json.Unmarshal([]byte(body), &reply); err != nil || code != http.StatusOK || reply.Code == "OK" || !strings.Contains(reply.Message, "bad payload") {
		t.Errorf("failing call: %d %s", code, body)
	}

	// Refused requests.
	for _, tc := range []struct {
		name, method, path, body string
		tune                     func(*http.Request)
		code                     int
	}{
		{"GET call", "GET", "/api/v1/call", "", nil, http.StatusMethodNotAllowed},
		{"form post", "POST", "/api/v1/call", "method=x", func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }, http.StatusUnsupportedMediaType},
		{"text/plain", "POST", "/api/v1/call", call, func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, http.StatusUnsupportedMediaType},
		{"cross origin", "POST", "/api/v1/call", call, func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, http.StatusForbidden},
		{"cross site fetch", "POST", "/api/v1/call", call, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }, http.StatusForbidden},
		{"rebound host", "GET", "/api/v1/status", "", func(r *http.Request) { r.Host = "evil.example:9090" }, http.StatusMisdirectedRequest},
		{"rebound host page", "GET", "/", "", func(r *http.Request) { r.Host = "evil.example" }, http.StatusMisdirectedRequest},
		{"not the app's", "POST", "/api/v1/call", `{"method": "grpc.health.v1.Health/Check"}`, nil, http.StatusBadRequest},
		{"unknown field", "POST", "/api/v1/call", `{"method": "` + esTestService + `/Process", "body": {}}`, nil, http.StatusBadRequest},
		{"bad request", "POST", "/api/v1/call", `{"method": "` + esTestService + `/Process", "request": {"nope": 1}}`, nil, http.StatusBadRequest},
		{"reserved header", "POST", "/api/v1/call", `{"method": "` + esTestService + `/Process", "headers": {"grpc-timeout": "1S"}}`, nil, http.StatusBadRequest},
	} {
		if code, _, body := consoleDo(t, n, tc.method, tc.path, tc.body, tc.tune); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
	// Same origin and loopback names pass.
	ok := func(r *http.Request) {
		r.Header.Set("Origin", "http://"+r.Host)
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if code, _, body := consoleDo(t, n, "POST", "/api/v1/call", call, ok); code != http.StatusOK {
		t.Errorf("same-origin call: %d %s", code, body)
	}
	_, port, _ := strings.Cut(n.AdminAddr(), ":")
	if code, _, _ := consoleDo(t, n, "GET", "/api/v1/status", "", func(r *http.Request) { r.Host = "localhost:" + port }); code != http.StatusOK {
		t.Errorf("Host localhost: %d", code)
	}
}

func TestRestoreMeter(t *testing.T) {
	var m restoreMeter
	t0 := time.Unix(1000, 0)
	if v := m.view(t0); v.Phase != phaseAcquiring || v.ETA != -1 {
		t.Errorf("before the restore: %+v", v)
	}
	m.begin(t0)
	if v := m.view(t0); v.Phase != phaseRestoring || v.ETA != -1 {
		t.Errorf("ends unknown: %+v, want ETA unknown", v)
	}
	if _, logNow := m.update(t0, 0, 1000); logNow {
		t.Error("logs at once")
	}
	v, logNow := m.update(t0.Add(restoreLogEvery-time.Millisecond), 100, 1000)
	if logNow {
		t.Error("logs before restoreLogEvery")
	}
	v, logNow = m.update(t0.Add(restoreLogEvery), 250, 1000)
	if !logNow || v.Rate != 50 || v.ETA != 15*time.Second || v.Elapsed != restoreLogEvery {
		t.Errorf("at %v: %+v log %v; want 50/s, ETA 15s, a log line", restoreLogEvery, v, logNow)
	}
	if _, logNow := m.update(t0.Add(restoreLogEvery+time.Second), 300, 1000); logNow {
		t.Error("logs again within restoreLogEvery")
	}
	if _, logNow := m.update(t0.Add(2*restoreLogEvery), 1000, 1000); logNow {
		t.Error("logs a finished read")
	}
	m.served(t0.Add(20 * time.Second))
	if v := m.view(t0.Add(time.Hour)); v.Phase != phaseServing || v.Done != 1000 || v.Elapsed != 20*time.Second || v.ETA != 0 || v.Rate != 50 {
		t.Errorf("served: %+v", v)
	}
	args := restoreLogArgs(restoreView{Done: 250, Total: 1000, Rate: 50, ETA: 15 * time.Second, Elapsed: 5 * time.Second})
	if got := formatArgs(args); got != "records_done=250 records_total=1000 percent=25 records_per_second=50 eta=15s elapsed=5s" {
		t.Errorf("log args = %s", got)
	}
}

func formatArgs(args []any) string {
	var b strings.Builder
	for i := 0; i+1 < len(args); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(args[i].(string) + "=")
		switch v := args[i+1].(type) {
		case string:
			b.WriteString(v)
		default:
			j, _ := json.Marshal(v)
			b.Write(j)
		}
	}
	return b.String()
}

func TestRateMeter(t *testing.T) {
	var r rateMeter
	t0 := time.Unix(1000, 0)
	if _, ok := r.observe("k", t0, 10); ok {
		t.Error("rate from one sample")
	}
	if _, ok := r.observe("k", t0.Add(500*time.Millisecond), 20); ok {
		t.Error("rate over less than a second")
	}
	if rate, ok := r.observe("k", t0.Add(2*time.Second), 30); !ok || rate != 10 {
		t.Errorf("rate = %v %v, want 10", rate, ok)
	}
	if rate, ok := r.observe("k", t0.Add(2500*time.Millisecond), 99); !ok || rate != 10 {
		t.Errorf("within a second: %v %v, want the last rate", rate, ok)
	}
	if _, ok := r.observe("k", t0.Add(2*time.Second+maxRateGap+time.Second), 40); ok {
		t.Error("rate over a gap longer than maxRateGap")
	}
	if _, ok := r.observe("k", t0.Add(time.Hour), 1); ok {
		t.Error("rate of a counter that went back")
	}
}

func TestFmtDuration(t *testing.T) {
	for sec, want := range map[float64]string{0: "0ms", 0.0354: "35ms", 2.14: "2.1s", 59.9: "59.9s", 65: "1m5s", 3725: "1h2m5s"} {
		if got := fmtDuration(sec); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", sec, got, want)
		}
	}
}

func TestSelfTarget(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:9000": "passthrough:///127.0.0.1:9000",
		"[::]:9000":      "passthrough:///[::1]:9000",
		"0.0.0.0:9000":   "passthrough:///127.0.0.1:9000",
		":9000":          "passthrough:///127.0.0.1:9000",
	} {
		if got := selfTarget(addr); got != want {
			t.Errorf("selfTarget(%q) = %q, want %q", addr, got, want)
		}
	}
}

// TestConsolePageEscapes renders the page from hostile data: every value is escaped, and a
// restoring partition shows its progress.
func TestConsolePageEscapes(t *testing.T) {
	evil := `<script>alert("x")</script>`
	eta := 15.0
	st := consoleStatus{
		Node:       consoleNode{ID: evil, App: "app" + evil, Version: "v1", State: "restoring", Partitions: 1, Assigned: []int32{0}, Restoring: 1},
		Time:       time.Unix(1000, 0).UTC(),
		GroupError: `<img src=x onerror="alert(1)">`,
		Nodes:      []consoleMember{{ID: evil, Address: evil, InGroup: true, Self: true}},
		Partitions: []consolePartition{{
			Partition: 0,
			Owner:     &consoleOwner{Node: evil, Address: evil, AcquiredAt: time.Unix(990, 0)},
			Local:     &consoleLocal{Phase: phaseRestoring, RecordsDone: 250, RecordsTotal: 1000, RecordsRate: 50, ETASeconds: eta},
		}},
		Services: []consoleService{{Name: "s", Kind: "value", Methods: []consoleMethod{{Name: "M", FullName: "s/M", Template: `{"a": "</option><script>"}`}}}},
	}
	var b strings.Builder
	if err := consoleTmpl.Execute(&b, st); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if strings.Contains(page, "<script>alert") || strings.Contains(page, "<img") || strings.Contains(page, "</option><script>") {
		t.Errorf("unescaped data in the page:\n%s", page)
	}
	for _, want := range []string{
		"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;",
		"restoring 250 / 1000 records (25%), 50/s, ETA 15s",
		"10s ago",
		`<script src="/console/static/console.js"></script>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
}

func TestFmtRestore(t *testing.T) {
	for _, tc := range []struct {
		l    consoleLocal
		want string
	}{
		{consoleLocal{Phase: phaseAcquiring, ETASeconds: -1}, "acquiring"},
		{consoleLocal{Phase: phaseRestoring, ETASeconds: -1}, "restoring 0 / 0 records"},
		{consoleLocal{Phase: phaseRestoring, RecordsDone: 1, RecordsTotal: 3, RecordsRate: 2.5, ETASeconds: 0.8}, "restoring 1 / 3 records (33%), 2.5/s, ETA 800ms"},
		{consoleLocal{Phase: phaseServing, RecordsTotal: 7, ElapsedSeconds: 2.04}, "serving (restored 7 records in 2s)"},
		{consoleLocal{Phase: "waiting", ETASeconds: -1}, "waiting"},
	} {
		if got := fmtRestore(&tc.l); got != tc.want {
			t.Errorf("fmtRestore(%+v) = %q, want %q", tc.l, got, tc.want)
		}
	}
}

// TestConsoleCallTLSAndToken: the console calls a public port served over TLS with a bearer
// token hook, passing the form's headers; streaming methods return every message.
func TestConsoleCallTLSAndToken(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	ca := testcert.NewCA(t, "public CA")
	cfg := secureConfig(t, brokers, kafkatest.Unique(t, "console-tls"))
	cfg.AdminListenAddr = "127.0.0.1:0"
	n := secureNode(t, cfg,
		WithTLSConfig(&tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "node", "kstate.example").TLS}}),
		WithAuth(BearerTokens("t0k")))
	// The certificate names kstate.example, not the loopback address the console dials: the
	// console accepts it because it is the node's own.
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), ServerName: "kstate.example", MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitServing(t, cc)

	callJSON := func(body string) (int, consoleCallReply) {
		t.Helper()
		code, _, out := consoleDo(t, n, "POST", "/api/v1/call", body, nil)
		var r consoleCallReply
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("call: %d %s", code, out)
		}
		return code, r
	}
	if code, r := callJSON(`{"method": "kstate.test.v1.ActionTest/Unary", "request": {"payload": "x"}}`); code != http.StatusOK || r.Code != "Unauthenticated" {
		t.Errorf("without a token: %d %+v, want Unauthenticated", code, r)
	}
	token := `, "headers": {"Authorization": "Bearer t0k"}`
	if code, r := callJSON(`{"method": "kstate.test.v1.ActionTest/Unary", "request": {"payload": "x"}` + token + `}`); code != http.StatusOK || r.Code != "OK" || len(r.Replies) != 1 || !strings.Contains(string(r.Replies[0]), `"x"`) {
		t.Errorf("unary over TLS with a token: %d %+v", code, r)
	}
	if code, r := callJSON(`{"method": "kstate.test.v1.ActionTest/StreamedOut", "request": {"payload": "s"}` + token + `}`); code != http.StatusOK || r.Code != "OK" || len(r.Replies) != 2 {
		t.Errorf("server streaming: %d %+v, want 2 replies", code, r)
	}
	if code, r := callJSON(`{"method": "kstate.test.v1.ActionTest/StreamedIn", "request": [{"payload": "1"}, {"payload": "2"}]` + token + `}`); code != http.StatusOK || r.Code != "OK" || len(r.Replies) != 1 {
		t.Errorf("client streaming: %d %+v, want 1 reply", code, r)
	}
}

// TestConsoleCallClientCertificates: a public port that requires client certificates cannot be
// called from the console, and the answer says what to use instead.
func TestConsoleCallClientCertificates(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	ca := testcert.NewCA(t, "public CA")
	cfg := secureConfig(t, brokers, kafkatest.Unique(t, "console-mtls"))
	cfg.AdminListenAddr = "127.0.0.1:0"
	n := secureNode(t, cfg, WithTLSConfig(&tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, "node", "127.0.0.1").TLS},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}))
	code, _, body := consoleDo(t, n, "POST", "/api/v1/call", `{"method": "kstate.test.v1.ActionTest/Unary"}`, nil)
	if code != http.StatusNotImplemented || !strings.Contains(body, "kstate call") {
		t.Errorf("call to an mTLS port: %d %s", code, body)
	}
}

// lockedBuffer is a log output tests read while nodes write it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRestoreProgressLog: a restore that runs longer than restoreLogEvery logs its progress,
// and the console shows what it restored.
func TestRestoreProgressLog(t *testing.T) {
	brokers := kafkatest.Kfake(t)
	app := kafkatest.Unique(t, "restore-log")
	a, cc := metricsNode(t, brokers, app, 1, nil)
	for i := range 5 {
		var resp testpb.Response
		if err := cc.Invoke(t.Context(), "/"+esTestService+"/Process", &testpb.Request{Id: "e1", Payload: strconv.Itoa(i)}, &resp); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// Every restore is "long" now: each progress report is due.
	old := restoreLogEvery
	restoreLogEvery = time.Nanosecond
	t.Cleanup(func() { restoreLogEvery = old })
	var out lockedBuffer
	b, _ := metricsNode(t, brokers, app, 1, func(cfg *Config) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	})
	line := regexp.MustCompile(`restoring partition: .*partition=0 records_done=\d+ records_total=([1-9]\d*) percent=\d+ records_per_second=\d+ eta=\S+ elapsed=\S+`)
	if !line.MatchString(out.String()) {
		t.Errorf("no progress line in the log:\n%s", out.String())
	}
	st := consoleStatusOf(t, b)
	if l := st.Partitions[0].Local; l == nil || l.Phase != phaseServing || l.RecordsTotal < 5 || l.RecordsDone != l.RecordsTotal {
		t.Errorf("partition 0 on the new node: %+v, want serving with at least 5 records restored", l)
	}
}
