// Command kstate is the kstate runtime: `kstate dev` (embedded broker + node + example),
// `kstate serve` (a node against a Kafka cluster), `kstate call`, `kstate topics`, `kstate bench`
// and `kstate version`. Flags and configuration live here only; every package below takes a
// Config struct.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/grpclog"

	"github.com/kstatehq/kstate/internal/logging"
)

// logOpts are the root command's logging flags.
type logOpts struct {
	level string
	json  bool
}

func (o *logOpts) logger() (hclog.Logger, error) {
	l, err := logging.New(logging.Config{Level: o.level, JSON: o.json})
	if err != nil {
		return nil, err
	}
	// grpclog's logger is process-wide and must not change while gRPC runs: the first command's
	// logger wins (in tests several commands run in one process).
	grpcLogOnce.Do(func() { grpclog.SetLoggerV2(logging.GRPC{L: l.Named("grpc")}) })
	return l, nil
}

var grpcLogOnce sync.Once

func newRootCmd() *cobra.Command {
	lo := &logOpts{}
	root := &cobra.Command{
		Use:   "kstate",
		Short: "kstate: stateful serverless on Kafka (Cloudstate protocol 0.2)",
		Long: `kstate: stateful serverless on Kafka (Cloudstate protocol 0.2).

Every flag can also be set with an environment variable, KSTATE_ and the flag's name in upper
snake case (--kafka-sasl-user: KSTATE_KAFKA_SASL_USER), or in a YAML config file (--config);
the command line wins over the environment, the environment over the file, the file over the
default. --bootstrap-server is another name of --brokers. See docs/configuration.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyConfig(cmd)
		},
	}
	root.PersistentFlags().StringVar(&lo.level, "log-level", "info", "log level: trace, debug, info, warn, error, off")
	root.PersistentFlags().BoolVar(&lo.json, "log-json", false, "log one JSON object per line")
	root.PersistentFlags().String(configFlag, "", "YAML file of flag values: top-level keys for every command, a section per command (serve:, dev:, …); flags and KSTATE_* variables win over it")
	call := newCallCmd()
	// `kstate call` prints its own "ERROR: ..." line; main must not print the error again.
	run := call.RunE
	call.RunE = func(cmd *cobra.Command, args []string) error {
		if err := run(cmd, args); err != nil {
			return &reportedError{err}
		}
		return nil
	}
	root.AddCommand(newVersionCmd(), newTopicsCmd(lo), newDevCmd(lo), newServeCmd(lo), call)
	root.AddCommand(newStatusCmd(lo), newInspectCmd(lo), newBenchCmd(lo))
	root.SetGlobalNormalizationFunc(normalizeFlag)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		var quiet *reportedError
		if !errors.As(err, &quiet) {
			fmt.Fprintln(os.Stderr, "kstate:", err)
		}
		os.Exit(1)
	}
}

// reportedError is an error already shown to the user.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }
