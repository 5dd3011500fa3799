// Command chat-uf serves the chat sample's presence and friends entities as a standalone
// Cloudstate user function: a gRPC server on USER_FUNCTION_HOST:USER_FUNCTION_PORT (default
// 127.0.0.1:8080) that a kstate node, or any Cloudstate protocol 0.2 proxy, discovers and
// calls. It stops on SIGINT or SIGTERM, after the commands it is handling.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kstatehq/kstate/examples/chat"
	"github.com/kstatehq/kstate/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sdk.ListenAndServe(ctx, chat.Entities()...); err != nil {
		fmt.Fprintln(os.Stderr, "chat-uf:", err)
		os.Exit(1)
	}
}
