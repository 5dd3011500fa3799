package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kstatehq/kstate/internal/testcert"
	"github.com/kstatehq/kstate/processor"
)

func TestNodeConfigUserFunctionFromEnv(t *testing.T) {
	t.Setenv("USER_FUNCTION_HOST", "")
	t.Setenv("USER_FUNCTION_PORT", "")
	o := &nodeOpts{listen: ":9000", namespace: "kstate", app: "a", partitions: 4}
	if _, _, err := o.config([]string{"b:9092"}, t.TempDir(), hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "USER_FUNCTION_HOST") {
		t.Fatalf("want an error naming the ways to give a user function, got %v", err)
	}
	t.Setenv("USER_FUNCTION_PORT", "8090")
	cfg, _, err := o.config([]string{"b:9092"}, t.TempDir(), hclog.NewNullLogger())
	if err != nil || cfg.UserFunction != "127.0.0.1:8090" {
		t.Fatalf("user function %q (%v), want 127.0.0.1:8090 (the TCK's interceptor port)", cfg.UserFunction, err)
	}
}

func TestNodeConfigKafkaSecurity(t *testing.T) {
	t.Setenv("KSTATE_KAFKA_PASSWORD", "s3cret")
	o := &nodeOpts{listen: ":9000", namespace: "kstate", app: "a", partitions: 4, example: "shoppingcart",
		kafka: kafkaOpts{caFile: "/ca.pem", saslMechanism: "scram-sha-512", saslUser: "kstate"}}
	cfg, _, err := o.config([]string{"b:9093"}, t.TempDir(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker.TLS.CAFile != "/ca.pem" || cfg.Broker.SASL.Mechanism != "SCRAM-SHA-512" || cfg.Broker.SASL.Username != "kstate" || cfg.Broker.SASL.Password != "s3cret" {
		t.Fatalf("TLS %+v SASL %+v", cfg.Broker.TLS, cfg.Broker.SASL)
	}
}

func TestNodeConfigUnknownExample(t *testing.T) {
	o := &nodeOpts{listen: ":9000", namespace: "kstate", app: "a", partitions: 4, example: "nope"}
	if _, _, err := o.config([]string{"b:9092"}, t.TempDir(), hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "shoppingcart") {
		t.Fatalf("want an error listing the examples, got %v", err)
	}
}

// TestNodeConfigSecurityFlags: the TLS and token flags reach processor.Config (and an auth
// option), and every mistake is reported before anything starts, naming the flag.
func TestNodeConfigSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "CA")
	cert, key := ca.Issue(t, "node", "127.0.0.1").WriteFiles(t, dir, "node")
	_, otherKey := ca.Issue(t, "other").WriteFiles(t, dir, "other")
	caFile := ca.WriteFile(t, dir, "ca.crt")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("# ops\ns3cret\n\n  rotated  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := func(s securityOpts) *nodeOpts {
		return &nodeOpts{listen: ":9000", namespace: "kstate", app: "a", partitions: 4, example: "shoppingcart", security: s}
	}

	o := base(securityOpts{tlsCert: cert, tlsKey: key, tlsClientCA: caFile, peerCert: cert, peerKey: key, peerCA: caFile, peerSNI: "peers", bearerFile: tokens})
	cfg, opts, err := o.config([]string{"b:9092"}, dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS != (processor.TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: caFile}) ||
		cfg.PeerTLS != (processor.PeerTLSConfig{CertFile: cert, KeyFile: key, CAFile: caFile, ServerName: "peers"}) {
		t.Fatalf("TLS %+v, PeerTLS %+v", cfg.TLS, cfg.PeerTLS)
	}
	if len(opts) != 2 { // the auth hook and the example's entities
		t.Fatalf("%d options, want the auth hook and the entities", len(opts))
	}
	if got, err := readTokens(tokens); err != nil || strings.Join(got, ",") != "s3cret,rotated" {
		t.Fatalf("tokens %q, %v", got, err)
	}

	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name string
		s    securityOpts
		want string
	}{
		{"cert without key", securityOpts{tlsCert: cert}, "--tls-key"},
		{"key without cert", securityOpts{tlsKey: key}, "--tls-cert"},
		{"client CA without cert", securityOpts{tlsClientCA: caFile}, "--tls-cert"},
		{"missing cert", securityOpts{tlsCert: missing, tlsKey: key}, "(--tls-cert): open " + missing},
		{"mismatched key", securityOpts{tlsCert: cert, tlsKey: otherKey}, "(--tls-key)"},
		{"client CA not PEM", securityOpts{tlsCert: cert, tlsKey: key, tlsClientCA: write("junk.pem", "junk")}, "(--tls-client-ca)"},
		{"peer cert and key without CA", securityOpts{peerCert: cert, peerKey: key}, "--peer-tls-ca"},
		{"peer CA alone", securityOpts{peerCA: caFile}, "--peer-tls-cert"},
		{"peer server name alone", securityOpts{peerSNI: "peers"}, "--peer-tls-key"},
		{"peer key missing", securityOpts{peerCert: cert, peerKey: missing, peerCA: caFile}, "(--peer-tls-key): open " + missing},
		{"token file missing", securityOpts{bearerFile: missing}, "--auth-bearer-file: open " + missing},
		{"token file empty", securityOpts{bearerFile: write("empty", "# nothing\n\n")}, "no tokens"},
		{"token with a space", securityOpts{bearerFile: write("spaced", "ok\nnot ok\n")}, "line 2: a token cannot contain spaces"},
	} {
		if _, _, err := base(tc.s).config([]string{"b:9092"}, dir, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
