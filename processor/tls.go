package processor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"

	"google.golang.org/grpc/credentials"
)

// TLSConfig serves the public port over TLS. Files are PEM encoded and read once, when the node is
// built (a changed file takes effect at the next start). The zero value serves plaintext.
type TLSConfig struct {
	// CertFile holds the server's certificate, followed by any intermediates; KeyFile its private
	// key. Set both to serve TLS (flags --tls-cert, --tls-key).
	CertFile string
	KeyFile  string
	// ClientCAFile, when set, turns on mutual TLS: every client must present a certificate that
	// chains to one of the file's CAs (and is valid for client authentication), else the handshake
	// is refused before any request is read (flag --tls-client-ca). The verified chain reaches the
	// authentication hook as AuthCall.VerifiedChain.
	ClientCAFile string
}

// enabled reports whether any field is set.
func (t TLSConfig) enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" }

// Validate reports a missing, unreadable or mismatched file in words naming the field and its
// flag. The zero value is valid.
func (t TLSConfig) Validate() error {
	_, err := t.build()
	return err
}

// build returns the public port's server configuration, nil when TLS is off: TLS 1.2 or later,
// ALPN h2 and http/1.1, and with ClientCAFile client certificates required and verified.
func (t TLSConfig) build() (*tls.Config, error) {
	if !t.enabled() {
		return nil, nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("processor: TLS.CertFile (--tls-cert) and TLS.KeyFile (--tls-key): set both to serve TLS")
	}
	cert, err := loadKeyPair("TLS.CertFile (--tls-cert)", t.CertFile, "TLS.KeyFile (--tls-key)", t.KeyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if t.ClientCAFile != "" {
		if cfg.ClientCAs, err = loadPool("TLS.ClientCAFile (--tls-client-ca)", t.ClientCAFile); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// WithTLSConfig serves the public port over TLS with cfg, for embedders that hold their
// certificates in memory or rotate them (GetCertificate, GetConfigForClient). The node uses a
// clone of cfg and adds "h2" and "http/1.1" to its NextProtos when missing; client certificate
// policy is cfg's own (ClientAuth, ClientCAs). cfg must provide a certificate (Certificates,
// GetCertificate or GetConfigForClient); nil has no effect. It cannot be combined with
// Config.TLS.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(n *Node) { n.tlsOpt = cfg }
}

// publicTLS returns the public port's TLS configuration, nil for plaintext.
func (n *Node) publicTLS() (*tls.Config, error) {
	if n.tlsOpt == nil {
		return n.cfg.TLS.build()
	}
	if n.cfg.TLS.enabled() {
		return nil, errors.New("processor: both Config.TLS and WithTLSConfig given; choose one")
	}
	if len(n.tlsOpt.Certificates) == 0 && n.tlsOpt.GetCertificate == nil && n.tlsOpt.GetConfigForClient == nil {
		return nil, errors.New("processor: WithTLSConfig: the tls.Config has no server certificate (Certificates, GetCertificate or GetConfigForClient)")
	}
	cfg := n.tlsOpt.Clone()
	for _, p := range []string{"h2", "http/1.1"} {
		if !slices.Contains(cfg.NextProtos, p) {
			cfg.NextProtos = append(cfg.NextProtos, p)
		}
	}
	return cfg, nil
}

// PeerTLSConfig secures node-to-node forwarding (the peer listener and the connections to other
// nodes) with mutual TLS. Files are PEM encoded and read when the node is built. The zero value is
// plaintext; otherwise set all three files.
//
// The model is a cluster CA that issues every node a certificate usable as server and client
// certificate (extended key usages serverAuth and clientAuth, or none). A node's peer listener
// requires a client certificate that chains to CAFile, and a node dialling a peer verifies the
// peer's certificate chains to CAFile. Neither side checks the certificate against the address it
// dialled: nodes advertise host:port addresses, usually pod IPs that change with every restart, so
// a SAN per address would tie the certificates to the scheduler. Membership in the cluster is what
// forwarding needs (any node may own any partition), and the CA proves it — provided the CA signs
// certificates for this cluster's nodes only. With a CA shared with other services, set ServerName:
// both sides then also require that name among the other side's SANs.
type PeerTLSConfig struct {
	// CertFile and KeyFile are this node's certificate (and intermediates) and private key,
	// presented to peers both as server and as client (flags --peer-tls-cert, --peer-tls-key).
	CertFile string
	KeyFile  string
	// CAFile holds the CA (or CAs) that sign every node's certificate (flag --peer-tls-ca).
	CAFile string
	// ServerName, when set, must be a DNS SAN of every peer's certificate, checked by the dialling
	// node and by the peer listener alike (flag --peer-tls-server-name). Optional.
	ServerName string
}

// enabled reports whether any field is set.
func (p PeerTLSConfig) enabled() bool {
	return p.CertFile != "" || p.KeyFile != "" || p.CAFile != "" || p.ServerName != ""
}

// Validate reports an incomplete configuration or a missing, unreadable or mismatched file in
// words naming the field and its flag. The zero value is valid.
func (p PeerTLSConfig) Validate() error {
	_, _, err := p.build()
	return err
}

// build returns the peer listener's and the dialler's configurations, nil and nil for plaintext.
// Both sides require TLS 1.3: only kstate nodes speak on the peer port.
func (p PeerTLSConfig) build() (server, client *tls.Config, err error) {
	if !p.enabled() {
		return nil, nil, nil
	}
	if p.CertFile == "" || p.KeyFile == "" || p.CAFile == "" {
		return nil, nil, errors.New("processor: PeerTLS.CertFile (--peer-tls-cert), PeerTLS.KeyFile (--peer-tls-key) and PeerTLS.CAFile (--peer-tls-ca): set all three for peer mutual TLS, or none")
	}
	cert, err := loadKeyPair("PeerTLS.CertFile (--peer-tls-cert)", p.CertFile, "PeerTLS.KeyFile (--peer-tls-key)", p.KeyFile)
	if err != nil {
		return nil, nil, err
	}
	pool, err := loadPool("PeerTLS.CAFile (--peer-tls-ca)", p.CAFile)
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	if name := p.ServerName; name != "" {
		server.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
				return errors.New("kstate peer: no verified client certificate")
			}
			if err := cs.VerifiedChains[0][0].VerifyHostname(name); err != nil {
				return fmt.Errorf("kstate peer: client certificate: %w", err)
			}
			return nil
		}
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// The standard check would compare the dialled address (an IP) with the SANs; the chain
		// to the cluster CA (and ServerName, when set) is verified in VerifyConnection instead.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection:   verifyPeerServer(pool, p.ServerName),
	}
	return server, client, nil
}

// verifyPeerServer verifies a peer's server certificate: a chain to roots, valid for server
// authentication, and with name among its DNS SANs when name is set.
func verifyPeerServer(roots *x509.CertPool, name string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("kstate peer: the peer sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			DNSName:       name,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("kstate peer: server certificate: %w", err)
		}
		return nil
	}
}

// credentials returns the transport credentials of the peer listener and of the dialler, nil
// and nil for plaintext.
func (p PeerTLSConfig) credentials() (server, client credentials.TransportCredentials, err error) {
	s, c, err := p.build()
	if err != nil || s == nil {
		return nil, nil, err
	}
	return credentials.NewTLS(s), credentials.NewTLS(c), nil
}

// loadKeyPair loads a certificate and its key, naming the fields (and flags) in errors.
func loadKeyPair(certField, certFile, keyField, keyFile string) (tls.Certificate, error) {
	// Read both first, so a missing or unreadable file is named as such.
	if _, err := os.ReadFile(certFile); err != nil {
		return tls.Certificate{}, fmt.Errorf("processor: %s: %w", certField, err)
	}
	if _, err := os.ReadFile(keyFile); err != nil {
		return tls.Certificate{}, fmt.Errorf("processor: %s: %w", keyField, err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("processor: %s %s and %s %s: %w", certField, certFile, keyField, keyFile, err)
	}
	return cert, nil
}

// loadPool loads a PEM file of CA certificates, naming the field (and flag) in errors.
func loadPool(field, file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("processor: %s: %w", field, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("processor: %s %s: no PEM certificates found", field, file)
	}
	return pool, nil
}
