package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kstatehq/kstate/broker/kafkatest"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Namespace != "kstate" || cfg.App != "app" || cfg.Partitions != 16 || cfg.ReplicationFactor != -1 ||
		cfg.TransactionTimeout != 10*time.Second || cfg.SessionTimeout != 6*time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
	// Zero values mean defaults: only the brokers are required.
	if err := (Config{Brokers: []string{"k:9092"}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Brokers is empty"},
		{"bad address", func(c *Config) { c.Brokers = []string{"localhost"} }, `"localhost": want host:port`},
		{"bad port", func(c *Config) { c.Brokers = []string{"h:x"} }, "port"},
		{"namespace chars", func(c *Config) { c.Namespace = "my ns" }, `Namespace "my ns": character ' '`},
		{"app chars", func(c *Config) { c.App = "a/b" }, "App"},
		{"partitions", func(c *Config) { c.Partitions = -3 }, "Partitions is -3"},
		{"replication", func(c *Config) { c.ReplicationFactor = -2 }, "ReplicationFactor is -2"},
		{"long names", func(c *Config) { c.App = strings.Repeat("a", 250) }, "too long"},
		{"half mtls", func(c *Config) { c.TLS.CertFile = "x.pem" }, "TLS.CertFile and TLS.KeyFile"},
		{"missing CA", func(c *Config) { c.TLS.CAFile = filepath.Join(dir, "nope.pem") }, "TLS.CAFile"},
		{"sasl mechanism", func(c *Config) { c.SASL = SASLConfig{Mechanism: "GSSAPI", Username: "u"} }, `SASL.Mechanism "GSSAPI"`},
		{"sasl user", func(c *Config) { c.SASL = SASLConfig{Mechanism: "PLAIN"} }, "SASL.Username is empty"},
		{"sasl no mechanism", func(c *Config) { c.SASL = SASLConfig{Username: "u", Password: "p"} }, "SASL.Mechanism is empty"},
		{"txn timeout", func(c *Config) { c.TransactionTimeout = time.Hour }, "TransactionTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to mention %q", err, tc.want)
			}
			if _, err := NewAdmin(cfg); err == nil {
				t.Fatal("NewAdmin accepted an invalid config")
			}
		})
	}
}

func TestNames(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Namespace, cfg.App = "prod", "shop"
	for got, want := range map[string]string{
		cfg.EventsTopic("cart"):    "prod.cart.events",
		cfg.SnapshotsTopic("cart"): "prod.cart.snapshots",
		cfg.StateTopic("cart"):     "prod.cart.state",
		cfg.CrdtTopic("cart"):      "prod.cart.crdt",
		cfg.CrdtStateTopic("cart"): "prod.cart.crdt-state",
		cfg.CommandsTopic():        "prod.shop.commands",
		cfg.OwnersTopic():          "prod.shop.owners",
		cfg.GroupID():              "prod.shop",
		cfg.TransactionalID(12):    "prod.shop.p12",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if got := (Config{}).EventsTopic("x"); got != "kstate.x.events" {
		t.Errorf("zero config: %q", got)
	}
}

func TestAppTopics(t *testing.T) {
	cfg := DefaultConfig()
	specs := cfg.AppTopics(map[string]EntityKind{"es": EventSourced, "v": Value, "c": CRDT, "act": Action})
	type want struct {
		kind     TopicKind
		parts    int32
		policy   string
		retainMs string
	}
	wants := map[string]want{
		"kstate.es.events":        {Events, 16, "delete", "-1"},
		"kstate.es.snapshots":     {Snapshots, 16, "compact", ""},
		"kstate.v.state":          {State, 16, "compact", ""},
		"kstate.c.crdt":           {Crdt, 16, "delete", "604800000"},
		"kstate.c.crdt-state":     {CrdtState, 16, "compact", ""},
		"kstate.app.commands":     {Commands, 16, "delete", ""},
		"kstate.app.owners":       {Owners, 1, "compact", ""},
		"kstate.claims":           {Claims, 1, "delete", "-1"},
		"kstate.app.dead-letters": {DeadLetters, 16, "delete", "-1"},
		"kstate.app.idempotency":  {Idempotency, 16, "delete", "691200000"},
	}
	if len(specs) != len(wants) {
		t.Fatalf("%d specs: %+v", len(specs), specs)
	}
	if !slices.IsSortedFunc(specs, func(a, b TopicSpec) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatal("specs not sorted by name")
	}
	for _, s := range specs {
		w, ok := wants[s.Name]
		if !ok {
			t.Fatalf("unexpected topic %s", s.Name)
		}
		if s.Kind != w.kind || s.Partitions != w.parts || s.Configs["cleanup.policy"] != w.policy || s.Configs["retention.ms"] != w.retainMs || s.ReplicationFactor != -1 {
			t.Errorf("%s: %+v, want %+v", s.Name, s, w)
		}
		if !strings.HasSuffix(s.Name, "."+s.Kind.String()) {
			t.Errorf("%s: kind %s does not match the name", s.Name, s.Kind)
		}
	}
}

// TestSASL connects with each mechanism to a kfake cluster that requires SASL: the right
// credentials work, wrong ones fail with an authentication error.
func TestSASL(t *testing.T) {
	brokers := kafkatest.Kfake(t, kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plainuser", "plainpass"),
		kfake.Superuser("SCRAM-SHA-256", "scram256", "pass256"),
		kfake.Superuser("SCRAM-SHA-512", "scram512", "pass512"))
	for _, tc := range []struct{ mech, user, pass string }{
		{SASLPlain, "plainuser", "plainpass"},
		{SASLScramSHA256, "scram256", "pass256"},
		{SASLScramSHA512, "scram512", "pass512"},
	} {
		t.Run(tc.mech, func(t *testing.T) {
			cfg := testConfig(t, target{brokers: brokers})
			cfg.RequestTimeout = 2 * time.Second
			cfg.SASL = SASLConfig{Mechanism: tc.mech, Username: tc.user, Password: tc.pass}
			if err := listTopics(t, cfg); err != nil {
				t.Fatalf("right credentials: %v", err)
			}
			cfg.SASL.Password = "wrong"
			err := listTopics(t, cfg)
			if err == nil || !strings.Contains(strings.ToUpper(err.Error()), "SASL") {
				t.Fatalf("wrong password: want a SASL authentication error, got %v", err)
			}
			cfg.SASL = SASLConfig{}
			if err := listTopics(t, cfg); err == nil {
				t.Fatal("no SASL: connected to a SASL-only cluster")
			}
		})
	}
}

func listTopics(t *testing.T, cfg Config) error {
	adm, err := NewAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = adm.ListTopics(ctx, "")
	return err
}

// TestTLS connects to a kfake cluster serving TLS with a certificate from a test CA: trusting
// the CA file works, the system pool does not, and mutual TLS with a client certificate works
// when the cluster requires one.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCA(t, dir)
	serverCert := issue(t, ca, caKey, "server", dir, true)
	issue(t, ca, caKey, "client", dir, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	brokers := kafkatest.Kfake(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}))
	cfg := testConfig(t, target{brokers: brokers})
	cfg.RequestTimeout = 2 * time.Second
	cfg.TLS = TLSConfig{Enabled: true, CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")}
	if err := listTopics(t, cfg); err != nil {
		t.Fatalf("mutual TLS with the test CA: %v", err)
	}
	noClientCert := cfg
	noClientCert.TLS.CertFile, noClientCert.TLS.KeyFile = "", ""
	if err := listTopics(t, noClientCert); err == nil {
		t.Fatal("connected without the client certificate the cluster requires")
	}
	systemPool := cfg
	systemPool.TLS.CAFile = ""
	if err := listTopics(t, systemPool); err == nil {
		t.Fatal("connected although the server certificate is not from a trusted CA")
	}
	plain := cfg
	plain.TLS = TLSConfig{}
	if err := listTopics(t, plain); err == nil {
		t.Fatal("connected in plaintext to a TLS listener")
	}
	bad := cfg
	bad.TLS.CAFile = filepath.Join(dir, "client-key.pem") // exists, holds no certificate
	if _, err := NewAdmin(bad); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Fatalf("CA file without certificates: %v", err)
	}
}

func writeCA(t *testing.T, dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kstate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", der)
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name, dir string, server bool) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, name+"-key.pem"), "EC PRIVATE KEY", keyDER)
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEnsureTopicsRejectsBadSpecs: specs Kafka would refuse are rejected before any request.
func TestEnsureTopicsRejectsBadSpecs(t *testing.T) {
	adm, err := NewAdmin(Config{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ctx := ctxFor(t, 5*time.Second)
	for _, tc := range []struct {
		specs []TopicSpec
		want  string
	}{
		{[]TopicSpec{{Name: "bad name", Partitions: 1}}, `character ' '`},
		{[]TopicSpec{{Name: strings.Repeat("x", 250), Partitions: 1}}, "250 characters"},
		{[]TopicSpec{{Name: "ok", Partitions: 0}}, "partitions 0"},
		{[]TopicSpec{{Name: "ok", Partitions: 1}, {Name: "ok", Partitions: 1}}, "listed twice"},
	} {
		if err := adm.EnsureTopics(ctx, tc.specs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("EnsureTopics(%v) = %v, want it to mention %q", tc.specs, err, tc.want)
		}
	}
	if err := adm.EnsureTopics(ctx, nil); err != nil {
		t.Errorf("no specs: %v", err)
	}
}
