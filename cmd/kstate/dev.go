package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

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
	if err := os.MkdirAll(o.node.dataDir, 0o755); err != nil {
		return fmt.Errorf("data dir %s: %w", o.node.dataDir, err)
	}
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
	return runNode(ctx, cfg, opts, func(n *processor.Node) { printBanner(out, n, emb.Addrs(), o) })
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
	if o.node.example == "shoppingcart" {
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
		fmt.Fprintf(out, `
try it:
  go run ./cmd/kstate call --addr %[1]s%[3]s com.example.shoppingcart.ShoppingCart/AddItem '{"user_id":"alice","product_id":"apple","name":"Apple","quantity":3}'
  go run ./cmd/kstate call --addr %[1]s%[3]s com.example.shoppingcart.ShoppingCart/GetCart '{"user_id":"alice"}'
  curl -XPOST %[2]s://%[1]s/cart/alice/items/add -H 'content-type: application/json'%[4]s -d '{"product_id":"pear","name":"Pear","quantity":2}'
  curl%[4]s %[2]s://%[1]s/carts/alice
`, addr, scheme, callFlags, curlFlags)
	}
	fmt.Fprintln(out, "\nCtrl-C stops it; the data stays in", o.node.dataDir)
}
