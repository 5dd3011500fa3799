package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/processor"
)

// devOpts are `kstate dev`'s own flags.
type devOpts struct {
	node      nodeOpts
	kafkaAddr string
	sync      bool
}

func newDevCmd(lo *logOpts) *cobra.Command {
	o := &devOpts{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run kstate on an embedded broker with an example or your user function",
		Long: `Start an embedded Kafka-compatible broker (data kept in --data-dir, so it survives restarts),
one kstate node, and either an in-process example (--example shoppingcart) or your user
function (--user-function host:port). Any Kafka client can connect to the broker at --kafka-addr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), o, lo, cmd.OutOrStdout())
		},
	}
	// dev listens on loopback only: a development node is not for the network.
	o.node.register(cmd, "shop", "127.0.0.1:9000")
	cmd.Flags().StringVar(&o.kafkaAddr, "kafka-addr", "127.0.0.1:9092", "address of the embedded broker")
	cmd.Flags().BoolVar(&o.sync, "kafka-sync", false, "fsync every batch the embedded broker writes")
	cmd.Flags().StringVar(&o.node.adminListen, "admin-listen", "127.0.0.1:9090", adminListenHelp+" (empty: off)")
	return cmd
}

// runDev is `kstate dev`: embedded broker, node, banner; until ctx ends.
func runDev(ctx context.Context, o *devOpts, lo *logOpts, out io.Writer) error {
	log, err := lo.logger()
	if err != nil {
		return err
	}
	// Check every flag before anything starts: the broker addresses are filled in below.
	if _, _, err := net.SplitHostPort(o.kafkaAddr); err != nil {
		return fmt.Errorf("--kafka-addr %q: want host:port, e.g. 127.0.0.1:9092", o.kafkaAddr)
	}
	if _, _, err := o.node.config(nil, filepath.Join(o.node.dataDir, "node"), log); err != nil {
		return err
	}
	if err := checkPorts(append(o.node.ports(), portFlag{"kafka-addr", o.kafkaAddr})...); err != nil {
		return err
	}
	if err := os.MkdirAll(o.node.dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir %s: %w", o.node.dataDir, err)
	}
	release, err := lockDataDir(o.node.dataDir)
	if err != nil {
		return err
	}
	defer release()
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{
		DataDir: filepath.Join(o.node.dataDir, "kafka"),
		Addr:    o.kafkaAddr,
		Sync:    o.sync,
		Logger:  log.Named("embedded-kafka"),
	})
	if err != nil {
		return fmt.Errorf("embedded broker on %s: %w (is another kstate dev or Kafka running? use --kafka-addr)", o.kafkaAddr, err)
	}
	defer emb.Close()
	cfg, opts, err := o.node.config(emb.Addrs(), filepath.Join(o.node.dataDir, "node"), log)
	if err != nil {
		return err
	}
	return runNode(ctx, cfg, opts, o.node.startTimeout, func(n *processor.Node) {
		if waitServing(ctx, n, func(line string) { fmt.Fprintln(out, line) }) {
			printBanner(out, n, emb.Addrs(), o)
		}
	})
}

// waitServing waits until n serves every partition it was assigned (what its health says), showing
// what it waits for, at most once a second and only when that changed: the group, the user
// function, the partitions still restoring with their progress. It returns false when ctx ends
// first.
func waitServing(ctx context.Context, n *processor.Node, show func(string)) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// The first line after a second: a node that serves at once shows none.
	last, shown := "", time.Now()
	for {
		r := n.Readiness()
		if r.Serving {
			return true
		}
		if line := readinessLine(r); line != last && time.Since(shown) >= time.Second {
			show(line)
			last, shown = line, time.Now()
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// readinessLine says what a node that does not serve yet waits for.
func readinessLine(r processor.Readiness) string {
	switch {
	case r.UserFunctionDown:
		return "waiting for the user function (unreachable)"
	case !r.Joined:
		return "waiting for the group to assign partitions"
	}
	var done, total int64
	for _, p := range r.Restoring {
		done += p.Done
		total += p.Total
	}
	line := fmt.Sprintf("restoring: %d of %d partitions serve", r.Restored, r.Assigned)
	if total > 0 {
		line += fmt.Sprintf(", %d of %d offsets read (%d%%)", done, total, done*100/total)
	}
	return line
}

func printBanner(out io.Writer, n *processor.Node, kafka []string, o *devOpts) {
	addr := n.Addr()
	if host, port, err := net.SplitHostPort(addr); err == nil && (host == "::" || host == "0.0.0.0" || host == "") {
		addr = net.JoinHostPort("localhost", port) // listening on every interface
	}
	sec := o.node.security
	port := "reflection on"
	switch {
	case sec.tlsClientCA != "":
		port += ", TLS, client certificates required"
	case sec.tlsCert != "":
		port += ", TLS"
	}
	if sec.bearerFile != "" {
		port += ", bearer tokens required"
	}
	fmt.Fprintf(out, "\nkstate dev is up\n  gRPC + HTTP/JSON: %s (%s)\n  Kafka:  %s (embedded; data in %s)\n",
		addr, port, kafka[0], o.node.dataDir)
	if a := n.AdminAddr(); a != "" {
		fmt.Fprintf(out, "  console: http://%s/ (ownership, restores, services, a call form)\n", a)
		fmt.Fprintf(out, "  metrics: http://%s/metrics (pprof: http://%[1]s/debug/pprof/)\n", a)
	}
	fmt.Fprintf(out, "  app:    %s, %d partitions\n\nservices:\n", o.node.app, o.node.partitions)
	for _, s := range n.Services() {
		fmt.Fprintf(out, "  %s (%s", s.Name, s.Kind)
		if s.PersistenceID != "" {
			fmt.Fprintf(out, ", persistence id %s", s.PersistenceID)
		}
		fmt.Fprintln(out, ")")
	}
	if lines := tryIt(o.node.example); len(lines) > 0 {
		// With TLS or tokens the commands carry the flags they need; a private CA adds
		// --tls-ca FILE (kstate call) or --cacert FILE (curl).
		scheme, callFlags, curlFlags := "http", "", ""
		if sec.tlsCert != "" {
			scheme, callFlags = "https", " --tls"
		}
		if sec.bearerFile != "" {
			callFlags += " -H 'authorization: Bearer <token>'"
			curlFlags = " -H 'authorization: Bearer <token>'"
		}
		r := strings.NewReplacer("{call}", "go run ./cmd/kstate call --addr "+addr+callFlags, "{curl}", "curl"+curlFlags,
			"{url}", scheme+"://"+addr, "{kafka}", kafka[0], "{app}", o.node.app)
		fmt.Fprintln(out, "\ntry it:")
		for _, l := range lines {
			fmt.Fprintln(out, "  "+r.Replace(l))
		}
	}
	fmt.Fprintln(out, "\nCtrl-C stops it; the data stays in", o.node.dataDir)
}

// tryIt returns the "try it" commands of an example ({call}, {curl}, {url}, {kafka} and {app}
// are filled in by printBanner): a write, a read over gRPC and HTTP, and what Kafka holds.
func tryIt(example string) []string {
	const (
		esAdd  = `{call} com.example.shoppingcart.ShoppingCart/AddItem '{"user_id":"alice","product_id":"apple","name":"Apple","quantity":3}'`
		esGet  = `{call} com.example.shoppingcart.ShoppingCart/GetCart '{"user_id":"alice"}'`
		esCurl = `{curl} -XPOST {url}/cart/alice/items/add -H 'content-type: application/json' -d '{"product_id":"pear","name":"Pear","quantity":2}'`
		esRead = `{curl} {url}/carts/alice`
		esLook = `go run ./cmd/kstate inspect com.example.shoppingcart.ShoppingCart alice --brokers {kafka}`
		veAdd  = `{call} com.example.valueentity.shoppingcart.ShoppingCart/AddItem '{"user_id":"bob","product_id":"cup","name":"Cup","quantity":1}'`
		veGet  = `{call} com.example.valueentity.shoppingcart.ShoppingCart/GetCart '{"user_id":"bob"}'`
		veCurl = `{curl} -XPOST {url}/ve/cart/bob/items/add -H 'content-type: application/json' -d '{"product_id":"mug","name":"Mug","quantity":2}'`
		veRead = `{curl} {url}/ve/carts/bob`
		veLook = `go run ./cmd/kstate inspect com.example.valueentity.shoppingcart.ShoppingCart bob --brokers {kafka}`
		vaAdd  = `{call} com.example.validator.CartValidator/AddItem '{"user_id":"carol","product_id":"pen","name":"Pen","quantity":2}'`
		vaBad  = `{call} com.example.validator.CartValidator/AddItem '{"user_id":"carol","product_id":"pen","name":"Pen","quantity":0}'   # refused by the validator`
		vaCurl = `{curl} -XPOST {url}/validated/cart/carol/items/add -H 'content-type: application/json' -d '{"product_id":"ink","name":"Ink","quantity":1}'`
		vaRead = `{curl} {url}/carts/carol`
		status = `go run ./cmd/kstate status --brokers {kafka} --app {app}`
	)
	switch example {
	case "shoppingcart":
		return []string{esAdd, esGet, esCurl, esRead, esLook, status}
	case "valuecart":
		return []string{veAdd, veGet, veCurl, veRead, veLook, status}
	case "validator":
		return []string{vaAdd, vaBad, vaCurl, vaRead, status}
	case "chat": // examples/chat (on main): its README's commands
		return []string{
			`{curl} -XPOST {url}/friends/alice/add -H 'content-type: application/json' -d '{"user":"bob"}'`,
			`{curl} {url}/friends/alice`,
			`{call} com.example.chat.Friends/GetFriends '{"name":"alice"}'`,
			`{call} --timeout 0 com.example.chat.Presence/Monitor '{"name":"alice"}'   # streams each change; Connect in another terminal`,
			status,
		}
	case "all":
		return []string{esAdd, esCurl, esRead, veAdd, veRead, vaAdd, vaBad, esLook, status}
	}
	return nil
}
