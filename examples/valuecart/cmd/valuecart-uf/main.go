// Command valuecart-uf serves the value-entity shopping cart as a standalone Cloudstate user
// function: a gRPC server on USER_FUNCTION_HOST:USER_FUNCTION_PORT (default 127.0.0.1:8080) that
// a kstate node, or any Cloudstate protocol 0.2 proxy, discovers and calls. It stops on SIGINT or
// SIGTERM, after the commands it is handling.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kstatehq/kstate/examples/valuecart"
	"github.com/kstatehq/kstate/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sdk.ListenAndServe(ctx, valuecart.NewEntity()); err != nil {
		fmt.Fprintln(os.Stderr, "valuecart-uf:", err)
		os.Exit(1)
	}
}
