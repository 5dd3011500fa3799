package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kstatehq/kstate/internal/ops"
)

// runRoot runs the root command with args and returns its output and error.
func runRoot(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.Execute()
	return out.String(), err
}

// TestStatusAndInspect runs `kstate dev --example all`, sends commands, and checks what `kstate
// status` says of the app and what `kstate inspect` shows of an event-sourced and a value entity.
func TestStatusAndInspect(t *testing.T) {
	r := startDev(t, "--data-dir", t.TempDir(), "--kafka-addr", freeAddr(t), "--listen", "127.0.0.1:0",
		"--example", "all", "--app", "shop", "--partitions", "3")
	call(t, r.grpcAddr, "com.example.shoppingcart.ShoppingCart/AddItem", `{"user_id":"ann","product_id":"pen","name":"Pen","quantity":2}`)
	call(t, r.grpcAddr, "com.example.shoppingcart.ShoppingCart/AddItem", `{"user_id":"ann","product_id":"ink","name":"Ink","quantity":1}`)
	if _, errOut, err := runCallCmd(t, "", "--addr", r.grpcAddr, "--timeout", "30s", "-H", "idempotency-key: once",
		"com.example.valueentity.shoppingcart.ShoppingCart/AddItem", `{"user_id":"bob","product_id":"cup","name":"Cup","quantity":4}`); err != nil {
		t.Fatalf("value cart AddItem: %v %s", err, errOut)
	}
	call(t, r.grpcAddr, "com.example.valueentity.shoppingcart.ShoppingCart/AddItem", `{"user_id":"cid","product_id":"cup","name":"Cup","quantity":1}`)
	call(t, r.grpcAddr, "com.example.valueentity.shoppingcart.ShoppingCart/RemoveCart", `{"user_id":"cid"}`)
	admin := strings.TrimSuffix(strings.TrimPrefix(r.metricsURL, "http://"), "/metrics")
	kafka := []string{"--log-level", "error", "--bootstrap-server", r.kafkaAddr}

	// status: one node owning the 3 partitions, all serving; the table and the JSON agree.
	out, err := runRoot(t, append([]string{"status", "--app", "shop", "--admin", admin, "--json"}, kafka...)...)
	if err != nil {
		t.Fatalf("kstate status --json: %v\n%s", err, out)
	}
	var st ops.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if st.GroupState != "Stable" || len(st.Nodes) != 1 || len(st.Partitions) != 3 || st.States[ops.StateServing] != 3 {
		t.Fatalf("status = %+v", st)
	}
	node := st.Nodes[0]
	var ends int64
	for _, p := range st.Partitions {
		if p.Owner != node.Node || p.Assigned != node.Node || p.Address == "" || p.Address != node.Address || p.AcquiredAt == nil {
			t.Errorf("partition %+v, node %+v", p, node)
		}
		ends += p.EndOffsets
	}
	// 2 events and 2 state records in 4 transactions, plus the delete's tombstone and its marker.
	if ends != 10 {
		t.Errorf("end offsets sum to %d over %v, want 10", ends, st.Topics)
	}
	if len(st.Scrapes) != 1 || st.Scrapes[0].Error != "" {
		t.Errorf("metrics of %s: %+v", admin, st.Scrapes)
	}
	out, err = runRoot(t, append([]string{"status", "--app", "shop"}, kafka...)...)
	if err != nil || !strings.Contains(out, "group kstate.shop: Stable, 1 nodes; partitions: 3 serving") || !strings.Contains(out, "PARTITION  STATE") {
		t.Fatalf("kstate status: %v\n%s", err, out)
	}
	if _, err := runRoot(t, append([]string{"status", "--app", "nosuch"}, kafka...)...); err == nil || !strings.Contains(err.Error(), `no app "nosuch"`) {
		t.Fatalf("status of an app that never ran: %v", err)
	}

	// inspect, event-sourced: both events in order, decoded with the descriptors built in.
	out, err = runRoot(t, append([]string{"inspect", "com.example.shoppingcart.ShoppingCart", "ann", "--json"}, kafka...)...)
	if err != nil {
		t.Fatalf("kstate inspect: %v\n%s", err, out)
	}
	var e ops.Entity
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("inspect JSON: %v\n%s", err, out)
	}
	if e.Kind != ops.KindEventSourced || e.PersistenceID != "shopping-cart" || len(e.Events) != 2 ||
		e.Events[0].Seq != 1 || e.Events[1].Seq != 2 || !strings.Contains(string(e.Events[1].JSON), `"productId": "ink"`) ||
		e.Events[0].Type != "com.example.shoppingcart.persistence.ItemAdded" {
		t.Fatalf("inspect ann = %s", out)
	}
	// The same decoded over the node's reflection, as text.
	out, err = runRoot(t, append([]string{"inspect", "com.example.shoppingcart.ShoppingCart", "ann", "--node", r.grpcAddr}, kafka...)...)
	if err != nil || !strings.Contains(out, "journal: kstate.shopping-cart.events") || !strings.Contains(out, `{"item":{"productId":"pen","name":"Pen","quantity":2}}`) {
		t.Fatalf("kstate inspect --node: %v\n%s", err, out)
	}

	// inspect, value entities: the latest state and the remembered outcome; a deleted one.
	out, err = runRoot(t, append([]string{"inspect", "com.example.valueentity.shoppingcart.ShoppingCart", "bob", "--json"}, kafka...)...)
	if err != nil {
		t.Fatalf("kstate inspect bob: %v\n%s", err, out)
	}
	e = ops.Entity{}
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Kind != ops.KindValue || e.State == nil || e.State.Message == nil ||
		!strings.Contains(string(e.State.JSON), `"productId": "cup"`) || e.Idempotency.Remembered != 1 {
		t.Fatalf("inspect bob = %s (%v)", out, err)
	}
	out, err = runRoot(t, append([]string{"inspect", "com.example.valueentity.shoppingcart.ShoppingCart", "cid"}, kafka...)...)
	if err != nil || !strings.Contains(out, "state: deleted (tombstone at offset") || !strings.Contains(out, "2 updates") {
		t.Fatalf("kstate inspect cid: %v\n%s", err, out)
	}
	if _, err := runRoot(t, append([]string{"inspect", "com.example.shoppingcart.ShoppingCart", "nobody"}, kafka...)...); err == nil || !strings.Contains(err.Error(), "no records") {
		t.Fatalf("inspect of an entity without records: %v", err)
	}
	r.stop(t)
}

// words splits a shell line into words: single quotes group, a # starts a comment.
func words(line string) (ws []string, comment string) {
	var cur strings.Builder
	in, have := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			in, have = !in, true
		case !in && c == '#':
			return ws, strings.TrimSpace(line[i+1:])
		case !in && c == ' ':
			if have {
				ws = append(ws, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		ws = append(ws, cur.String())
	}
	return ws, ""
}

// TestTryItLines runs every "try it" line the banner of `kstate dev --example all` prints, as a
// user would paste them: each succeeds, and the one marked as refused is refused.
func TestTryItLines(t *testing.T) {
	for _, ex := range []string{"shoppingcart", "valuecart", "validator", "all"} {
		if len(tryIt(ex)) < 4 {
			t.Errorf("example %s has %d try-it lines", ex, len(tryIt(ex)))
		}
	}
	r := startDev(t, "--data-dir", t.TempDir(), "--kafka-addr", freeAddr(t), "--listen", "127.0.0.1:0", "--example", "all", "--partitions", "2")
	banner := r.out.String()
	_, after, ok := strings.Cut(banner, "try it:\n")
	if !ok {
		t.Fatalf("no try-it lines:\n%s", banner)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	ran := 0
	for _, line := range strings.Split(after, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		ws, comment := words(line)
		refused := strings.Contains(comment, "refused")
		var err error
		switch {
		case len(ws) > 3 && ws[0] == "go" && ws[2] == "./cmd/kstate":
			var out string
			out, err = runRoot(t, append(ws[3:], "--log-level", "error")...)
			if err != nil {
				err = fmt.Errorf("%w: %s", err, out)
			}
		case ws[0] == "curl":
			method, url, body := http.MethodGet, "", ""
			for i := 1; i < len(ws); i++ {
				switch {
				case ws[i] == "-XPOST":
					method = http.MethodPost
				case ws[i] == "-H":
					i++
				case ws[i] == "-d":
					i++
					body = ws[i]
				default:
					url = ws[i]
				}
			}
			req, _ := http.NewRequest(method, url, strings.NewReader(body))
			req.Header.Set("content-type", "application/json")
			resp, herr := hc.Do(req)
			if herr == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					herr = fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
				}
			}
			err = herr
		default:
			t.Fatalf("cannot run %q", line)
		}
		switch {
		case refused && err == nil:
			t.Errorf("%s: succeeded, want it refused", line)
		case !refused && err != nil:
			t.Errorf("%s: %v", line, err)
		}
		ran++
	}
	if ran != len(tryIt("all")) {
		t.Errorf("ran %d lines, the banner has %d", ran, len(tryIt("all")))
	}
	r.stop(t)
}
