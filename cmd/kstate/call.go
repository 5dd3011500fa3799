package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/internal/grpccall"
)

// newCallCmd returns `kstate call`: call any method of a kstate node (or of any gRPC server with
// reflection) with a JSON request and print the replies as JSON, with no grpcurl or protoc.
//
// Every failure is printed to stderr as "ERROR: <what>" (for a gRPC status "ERROR: <code>:
// <message>"), and the command returns the error with SilenceErrors set, so cobra does not print it
// a second time; main exits non-zero on it.
func newCallCmd() *cobra.Command {
	var (
		addr    string
		timeout time.Duration
		headers []string
		useTLS  bool
		tlsOpts callTLS
		list    bool
	)
	cmd := &cobra.Command{
		Use:   "call [flags] SERVICE/METHOD [JSON]",
		Short: "Call a gRPC method with a JSON request, using server reflection",
		Long: `Call a method of a kstate node (or any gRPC server with reflection) and print the reply as JSON.

SERVICE is the service's full name; the method may also be written /pkg.Service/Method or
pkg.Service.Method. JSON is the request in protobuf's JSON mapping (field names in lowerCamelCase
or as in the .proto; 64-bit integers as strings or numbers); it defaults to {} and "-" reads it
from stdin. A client-streaming or bidirectional method takes several JSON objects one after
another, one per message.

Each reply message is printed as indented JSON as soon as it arrives, so server-streaming methods
print one object per message. A failed call prints "ERROR: <code>: <message>" to stderr and exits
with status 1. An unknown service or method prints what the server has.

With --list, prints the server's services, or the methods of SERVICE.`,
		Example: `  kstate call com.example.shoppingcart.ShoppingCart/AddItem \
      '{"userId": "ann", "productId": "p1", "name": "Pen", "quantity": 2}'
  kstate call com.example.shoppingcart.ShoppingCart/GetCart '{"userId": "ann"}'
  echo '{"userId": "ann"}' | kstate call --addr node-1:9000 -H authorization='Bearer t0k' \
      /com.example.shoppingcart.ShoppingCart/GetCart -
  kstate call --list
  kstate call --list com.example.shoppingcart.ShoppingCart`,
		Args: func(cmd *cobra.Command, args []string) error {
			if list {
				return cobra.MaximumNArgs(1)(cmd, args)
			}
			return cobra.RangeArgs(1, 2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true // from here on, errors are not about usage
			tlsOpts.enabled = useTLS
			if err := runCall(cmd, args, addr, timeout, headers, tlsOpts, list); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "ERROR: %v\n", err)
				cmd.SilenceErrors = true
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "localhost:9000", "gRPC address of the node (host:port)")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "deadline for the whole call, reflection included (0: none, e.g. to follow a stream)")
	f.StringArrayVarP(&headers, "header", "H", nil, `request metadata as key=value (repeatable); a key ending in "-bin" takes base64`)
	f.BoolVar(&useTLS, "tls", false, "connect with TLS, verifying the server against the system's roots (default plaintext)")
	f.StringVar(&tlsOpts.caFile, "tls-ca", "", "PEM CAs to verify the server against instead of the system's roots (implies --tls)")
	f.StringVar(&tlsOpts.certFile, "tls-cert", "", "PEM client certificate, for a port that requires one (with --tls-key; implies --tls)")
	f.StringVar(&tlsOpts.keyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.BoolVarP(&list, "list", "l", false, "list the server's services, or the methods of SERVICE, instead of calling")
	return cmd
}

// callTLS are the TLS flags of `kstate call`.
type callTLS struct {
	enabled                   bool
	caFile, certFile, keyFile string
}

// credentials returns the transport credentials the flags ask for: plaintext unless --tls or a
// file is given.
func (c callTLS) credentials() (credentials.TransportCredentials, error) {
	if !c.enabled && c.caFile == "" && c.certFile == "" && c.keyFile == "" {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificates found", c.caFile)
		}
	}
	if c.certFile != "" || c.keyFile != "" {
		if c.certFile == "" || c.keyFile == "" {
			return nil, errors.New("--tls-cert and --tls-key: give both for a client certificate")
		}
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

func runCall(cmd *cobra.Command, args []string, addr string, timeout time.Duration, headers []string, tlsOpts callTLS, list bool) error {
	md, err := parseHeaders(headers)
	if err != nil {
		return err
	}
	creds, err := tlsOpts.credentials()
	if err != nil {
		return err
	}
	var req []byte
	if len(args) == 2 {
		req = []byte(args[1])
		if args[1] == "-" {
			if req, err = io.ReadAll(cmd.InOrStdin()); err != nil {
				return fmt.Errorf("read request from stdin: %w", err)
			}
		}
	}

	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()

	// Reflection gets the headers too: a server that wants a token for calls usually wants it for
	// reflection as well.
	rctx := ctx
	if len(md) > 0 {
		rctx = metadata.NewOutgoingContext(ctx, md)
	}
	c, err := grpccall.New(rctx, conn)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	out := cmd.OutOrStdout()
	if list {
		return listCall(rctx, c, args, out)
	}
	if _, err := c.Method(rctx, args[0]); err != nil { // fetches the descriptors with the headers
		return err
	}
	return c.Call(ctx, args[0], req, md, out)
}

// listCall prints the services, or the methods of args[0] with their types.
func listCall(ctx context.Context, c *grpccall.Client, args []string, out io.Writer) error {
	if len(args) == 0 {
		for _, s := range c.Services() {
			if _, err := fmt.Fprintln(out, s); err != nil {
				return err
			}
		}
		return nil
	}
	sd, err := c.Service(ctx, strings.TrimPrefix(args[0], "/"))
	if err != nil {
		return err
	}
	for i := range sd.Methods().Len() {
		if _, err := fmt.Fprintln(out, methodSignature(sd.Methods().Get(i))); err != nil {
			return err
		}
	}
	return nil
}

// methodSignature renders a method as in a .proto file: "AddItem(pkg.In) returns (stream pkg.Out)".
func methodSignature(m protoreflect.MethodDescriptor) string {
	stream := func(on bool) string {
		if on {
			return "stream "
		}
		return ""
	}
	return fmt.Sprintf("%s(%s%s) returns (%s%s)", m.Name(),
		stream(m.IsStreamingClient()), m.Input().FullName(), stream(m.IsStreamingServer()), m.Output().FullName())
}

// parseHeaders turns key=value pairs into outgoing metadata. Keys are lower-cased, as gRPC
// requires; "key: value" (curl's and grpcurl's form) is accepted too. Values of "-bin" keys are
// base64 (padded or not) and are sent as the decoded bytes.
func parseHeaders(headers []string) (metadata.MD, error) {
	md := metadata.MD{}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, "=")
		if i := strings.IndexByte(h, ':'); i >= 0 && (!ok || i < len(k)) {
			k, v, ok = h[:i], h[i+1:], true
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			return nil, fmt.Errorf("header %q: want key=value", h)
		}
		v = strings.TrimSpace(v)
		if strings.HasSuffix(k, "-bin") {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				b, err = base64.RawStdEncoding.DecodeString(v)
			}
			if err != nil {
				return nil, fmt.Errorf("header %q: a -bin value must be base64: %w", h, err)
			}
			v = string(b)
		}
		md.Append(k, v)
	}
	return md, nil
}
