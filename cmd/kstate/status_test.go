package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

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
