package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/broker/kafkatest"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// The console's browser test drives the page in a real headless Chromium (Debian's chromium
// package) with chromedp. Without a Chromium binary it is skipped, unless
// KSTATE_CONSOLE_REQUIRED=1 (CI sets it; scripts/test.sh installs chromium there), which makes
// the missing browser a failure.
//
//	KSTATE_CHROMIUM        the browser binary (default: chromium, chromium-browser,
//	                       google-chrome or headless-shell on PATH)
//	KSTATE_CONSOLE_OUT     folder for the screenshots (default: the test's temporary folder)
//	KSTATE_CONSOLE_REQUIRED=1  fail instead of skipping when no browser is found

// chromiumPath finds the browser, or skips (fails, when required) the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KSTATE_CHROMIUM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("KSTATE_CHROMIUM=%s: %v", p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (chromium, chromium-browser, google-chrome or headless-shell on PATH, or KSTATE_CHROMIUM): " +
		"the console's browser test needs one; on Debian/Ubuntu: apt-get install -y chromium"
	if os.Getenv("KSTATE_CONSOLE_REQUIRED") == "1" {
		t.Fatal(msg + "; KSTATE_CONSOLE_REQUIRED=1 forbids skipping")
	}
	t.Skip(msg)
	return ""
}

// ownersTopic reads the app's owners topic from Kafka, independently of any node: partition →
// owner node id, the latest record of each partition (a released partition has none).
func ownersTopic(t *testing.T, bc broker.Config) map[int32]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	owners := make(map[int32]string)
	_, err := broker.ReadToEnd(ctx, bc, []broker.TopicPartitionFrom{{Topic: bc.OwnersTopic(), Partition: 0, From: -1}}, func(r broker.Record) error {
		var rec kstatev1.OwnerRecord
		if err := proto.Unmarshal(r.Value, &rec); err != nil {
			return err
		}
		if rec.GetReleased() {
			delete(owners, rec.GetPartition())
		} else {
			owners[rec.GetPartition()] = rec.GetNodeId()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the owners topic: %v", err)
	}
	return owners
}

// settled waits until the nodes' assignments split the partitions between them, every node
// serves, and the owners topic names each partition's assigned node; it returns the owners.
func settled(t *testing.T, bc broker.Config, nodes ...*Node) map[int32]string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		want := make(map[int32]string)
		ok := true
		for _, n := range nodes {
			st := consoleStatusOf(t, n)
			if st.Node.State != "serving" {
				ok = false
			}
			for _, p := range st.Node.Assigned {
				if _, dup := want[p]; dup {
					ok = false
				}
				want[p] = n.cfg.NodeID
			}
		}
		var got map[int32]string
		if ok && len(want) == int(bc.Partitions) {
			got = ownersTopic(t, bc)
			if fmt.Sprint(got) == fmt.Sprint(want) {
				return got
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("partitions did not settle within 60s: assigned %v, owners topic %v", want, got)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a bounded wait
	}
}

// ownersJSON is how the page's partition table is compared: [[partition, owner], ...] in
// partition order.
func ownersJSON(owners map[int32]string, partitions int32) string {
	rows := make([][]string, 0, partitions)
	for p := range partitions {
		rows = append(rows, []string{strconv.Itoa(int(p)), owners[p]})
	}
	b, _ := json.Marshal(rows)
	return string(b)
}

// pageOwners reads the partition table of the page: every row's partition and owner, the owner
// as the cell shows it.
const pageOwners = `JSON.stringify(Array.from(document.querySelectorAll('#partitions tbody tr')).map(tr => [tr.dataset.partition, tr.querySelector('td.owner').classList.contains('none') ? '' : tr.querySelector('td.owner').textContent]))`

// TestConsoleBrowser runs the console in headless Chromium against a two-node app on kfake: the
// partition table matches the owners topic, closing one node moves its partitions to the other
// (the page follows by itself), and the call form returns the entity's reply, before and after
// the move. Screenshots are saved; the page must throw no script error.
func TestConsoleBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	out := os.Getenv("KSTATE_CONSOLE_OUT")
	if out == "" {
		out = t.TempDir()
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	brokers := kafkatest.Kfake(t)
	const partitions = 4
	a, _ := metricsNode(t, brokers, "console-browser", partitions, nil)
	b, _ := metricsNode(t, brokers, "console-browser", partitions, nil)
	bc := a.cfg.Broker
	owners := settled(t, bc, a, b)
	if !slices.Contains(mapValues(owners), a.cfg.NodeID) || !slices.Contains(mapValues(owners), b.cfg.NodeID) {
		t.Fatalf("owners %v: want partitions on both nodes", owners)
	}

	// The browser: a fresh profile, no network but the page's, no sandbox (CI runs as root).
	profile, err := os.MkdirTemp("", "kstate-chromium")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Chromium's helpers may write to the profile briefly after the browser stopped.
		deadline := time.Now().Add(10 * time.Second)
		for os.RemoveAll(profile) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelTab()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no deadline on it
		t.Fatalf("start %s: %v", chromium, err)
	}

	// Script errors and console messages of the page, checked at the end.
	var (
		msgMu sync.Mutex
		msgs  []chromedp.ConsoleMessage
		msgWG sync.WaitGroup
	)
	msgCtx, stopMsgs := context.WithCancel(ctx)
	messages := chromedp.Console(msgCtx)
	msgWG.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			msgMu.Lock()
			msgs = append(msgs, m)
			msgMu.Unlock()
		}
	})
	defer func() {
		stopMsgs()
		msgWG.Wait()
	}()

	step := func(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			shot(t, ctx, out, "failed")
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, expr string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	// waitFor polls expr in the page until it is true, failing with the value of show.
	waitFor := func(what, expr, show string, timeout time.Duration) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
		defer cancel()
		_, err := chromedp.Run(sctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond)))
		if err != nil {
			shot(t, ctx, out, "failed")
			t.Fatalf("%s: %v; the page shows %s", what, err, eval("show", show))
		}
	}

	// B's console: the partition table matches the owners topic, after the script's refresh.
	step("open the console", 20*time.Second, chromedp.Navigate("http://"+b.AdminAddr()+"/"))
	want := ownersJSON(owners, partitions)
	waitFor("partition table = owners topic "+want,
		`Number(document.body.dataset.refreshed) >= 1 && `+pageOwners+` === `+strconv.Quote(want),
		pageOwners, 20*time.Second)
	if got := eval("node", `document.getElementById('node-id').textContent + ' ' + document.getElementById('node-state').textContent`); got != b.cfg.NodeID+" serving" {
		t.Errorf("header shows %q, want %q", got, b.cfg.NodeID+" serving")
	}
	nodesExpr := `JSON.stringify(Array.from(document.querySelectorAll('#nodes tbody tr')).map(tr => [tr.dataset.node, tr.cells[2].textContent]))`
	wantNodes, _ := json.Marshal([][]string{{a.cfg.NodeID, "yes"}, {b.cfg.NodeID, "yes"}})
	waitFor("nodes table lists both nodes in the group", nodesExpr+` === `+strconv.Quote(string(wantNodes)), nodesExpr, 10*time.Second)
	if got := eval("services", `Array.from(document.querySelectorAll('#services tbody tr')).map(tr => tr.dataset.service + '/' + tr.cells[1].textContent).join(' ')`); !strings.Contains(got, esTestService+"/event-sourced") || !strings.Contains(got, valueTestService+"/value") {
		t.Errorf("services table: %s", got)
	}
	shot(t, ctx, out, "console-two-nodes")

	// An entity on one of A's partitions: the first call is forwarded from B to A, and after the
	// move B restores its events.
	entity, entityPart := "", int32(-1)
	for i := 0; entity == ""; i++ {
		id := "cart-" + strconv.Itoa(i)
		if p := broker.Partition([]byte(id), partitions); owners[p] == a.cfg.NodeID {
			entity, entityPart = id, p
		}
	}

	// A call from the form: pick the method (its template fills the body), type the request,
	// click, and read the reply.
	call := func(payload, wantReply string) {
		t.Helper()
		eval("select the method", `(() => { const s = document.getElementById('call-method'); s.value = `+strconv.Quote(esTestService+"/Process")+`; s.dispatchEvent(new Event('change')); return s.value })()`)
		if tmpl := eval("template", `document.getElementById('call-body').value`); !strings.Contains(tmpl, `"payload"`) && payload == "hello" {
			t.Errorf("the method's template was not filled in: %q", tmpl)
		}
		step("call "+payload, 20*time.Second,
			chromedp.SetValue(chromedp.ID("call-body"), `{"id": "`+entity+`", "payload": "`+payload+`"}`),
			chromedp.Click(chromedp.ID("call-submit")))
		state := `document.getElementById('call-result').dataset.state + ' ' + document.getElementById('call-code').textContent + ' ' + document.getElementById('call-reply').textContent`
		waitFor("the call's reply", `document.getElementById('call-result').dataset.state === 'done'`, state, 20*time.Second)
		code := eval("code", `document.getElementById('call-code').textContent`)
		reply := eval("reply", `document.getElementById('call-reply').textContent`)
		var r struct{ Message string }
		if err := json.Unmarshal([]byte(reply), &r); code != "OK" || err != nil || r.Message != wantReply {
			t.Fatalf("call %s: code %s, reply %s (%v); want OK and message %q", payload, code, reply, err, wantReply)
		}
	}
	call("hello", "hello")
	shot(t, ctx, out, "console-call")

	// Close A: its partitions move to B, and the page shows it by itself.
	if err := a.Close(); err != nil {
		t.Fatalf("close %s: %v", a.cfg.NodeID, err)
	}
	allB := make(map[int32]string)
	for p := range int32(partitions) {
		allB[p] = b.cfg.NodeID
	}
	want = ownersJSON(allB, partitions)
	waitFor("every partition moves to "+b.cfg.NodeID,
		pageOwners+` === `+strconv.Quote(want)+` && Array.from(document.querySelectorAll('#partitions td.local')).every(td => td.textContent.startsWith('serving'))`,
		pageOwners, 60*time.Second)
	if got := ownersTopic(t, bc); ownersJSON(got, partitions) != want {
		t.Errorf("the page shows %s, but the owners topic says %v", want, got)
	}
	// B restored the entity's partition from the journal A wrote, and says so.
	restored := eval("restore", `document.querySelector('#partitions tr[data-partition="`+strconv.Itoa(int(entityPart))+`"] td.local').textContent`)
	if !regexp.MustCompile(`^serving \(restored [1-9][0-9]* records in [0-9.]+m?s\)$`).MatchString(restored) {
		t.Errorf("partition %d after the move: %q, want it serving with its records restored", entityPart, restored)
	}
	wantNodes, _ = json.Marshal([][]string{{b.cfg.NodeID, "yes"}})
	waitFor("nodes table lists only "+b.cfg.NodeID, nodesExpr+` === `+strconv.Quote(string(wantNodes)), nodesExpr, 30*time.Second)

	// The entity answers from B, with the state A's call wrote.
	call("again", "hello,again")
	shot(t, ctx, out, "console-after-failover")

	msgMu.Lock()
	defer msgMu.Unlock()
	for _, m := range msgs {
		if m.IsException() || m.Type == "error" {
			t.Errorf("page console: %s", m)
		}
	}
}

// shot saves a PNG screenshot of the page as out/name.png.
func shot(t *testing.T, ctx context.Context, out, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(out, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", path)
}

func mapValues(m map[int32]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
