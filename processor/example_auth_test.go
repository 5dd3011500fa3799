package processor_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/processor"
)

// BearerTokens checks the "authorization" header of every call on the public port. A node
// installs it with processor.New(cfg, processor.WithAuth(check)); here it is called as the node
// calls it, once per call, before the request is read.
func ExampleBearerTokens() {
	check := processor.BearerTokens("s3cret", "rotated-in")
	for _, header := range []string{"Bearer s3cret", "bearer rotated-in", "Bearer guess", "Basic czNjcmV0", ""} {
		call := processor.AuthCall{Method: "/shop.v1.Cart/AddItem", Header: metadata.MD{}}
		if header != "" {
			call.Header.Set("authorization", header)
		}
		fmt.Printf("%-20q %v\n", header, status.Code(check(context.Background(), call)))
	}
	// Output:
	// "Bearer s3cret"      OK
	// "bearer rotated-in"  OK
	// "Bearer guess"       Unauthenticated
	// "Basic czNjcmV0"     Unauthenticated
	// ""                   Unauthenticated
}

// A hook of one's own: services called by a client certificate of the billing team pass, as does
// reflection (so grpcurl and `kstate call` can list the services); everything else needs a bearer
// token, and one method is closed to everyone (PERMISSION_DENIED, HTTP 403).
func ExampleWithAuth() {
	tokens := processor.BearerTokens("s3cret")
	hook := func(ctx context.Context, call processor.AuthCall) error {
		switch {
		case call.Method == "/shop.v1.Cart/DeleteEverything":
			return status.Error(codes.PermissionDenied, "nobody may call DeleteEverything")
		case strings.HasPrefix(call.Method, "/grpc.reflection."):
			return nil
		case len(call.VerifiedChain) > 0 && call.VerifiedChain[0].Subject.CommonName == "billing":
			return nil
		}
		return tokens(ctx, call)
	}

	cfg := processor.DefaultConfig()
	cfg.DataDir = "/var/lib/kstate"
	cfg.UserFunction = "localhost:8080"
	cfg.Broker.Brokers = []string{"kafka:9092"}
	cfg.TLS = processor.TLSConfig{
		CertFile:     "/etc/kstate/tls/tls.crt",
		KeyFile:      "/etc/kstate/tls/tls.key",
		ClientCAFile: "/etc/kstate/tls/clients-ca.crt", // every client presents a certificate
	}
	n, err := processor.New(cfg, processor.WithAuth(hook))
	if err != nil {
		log.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer n.Close()
}
