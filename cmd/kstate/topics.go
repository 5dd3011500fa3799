package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/kstatehq/kstate/broker"
)

// topicsOpts are `kstate topics`' flags.
type topicsOpts struct {
	brokers   []string
	namespace string
	// app, when set, limits the listing to the app's own topics (<ns>.<app>.commands and .owners).
	app     string
	timeout time.Duration
}

// config maps the flags onto a broker.Config and checks them, so a bad value is reported with the
// flag to fix rather than as a connection failure.
func (o *topicsOpts) config(log hclog.Logger) (broker.Config, error) {
	cfg := broker.DefaultConfig()
	cfg.Brokers = o.brokers
	cfg.Namespace = o.namespace
	if o.app != "" {
		cfg.App = o.app
	}
	cfg.Logger = log.Named("kafka")
	if len(o.brokers) == 0 {
		return cfg, fmt.Errorf("--brokers is empty: give the Kafka bootstrap servers, e.g. --brokers 127.0.0.1:9092")
	}
	if o.timeout <= 0 {
		return cfg, fmt.Errorf("--timeout is %v: want a positive duration, e.g. 30s", o.timeout)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("check --brokers, --namespace and --app: %w", err)
	}
	return cfg, nil
}

// prefix is the topic-name prefix the listing is limited to.
func (o *topicsOpts) prefix() string {
	if o.app != "" {
		return o.namespace + "." + o.app + "."
	}
	return o.namespace + "."
}

func newTopicsCmd(lo *logOpts) *cobra.Command {
	o := &topicsOpts{}
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "List kstate's topics with kind, partitions, cleanup policy and end offsets",
		Long: `List the topics in kstate's namespace: their kind (events, snapshots, state, crdt, crdt-state,
commands, owners), partition count, cleanup policy, and per-partition end offsets.

With --app, only the app's own topics (<namespace>.<app>.commands and .owners) are listed; entity
topics are named by persistence id (<namespace>.<persistence id>.<kind>) and shared by every app
that declares that entity type.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			return runTopics(cmd.Context(), o, log, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringSliceVar(&o.brokers, "brokers", []string{"127.0.0.1:9092"}, "Kafka bootstrap servers")
	cmd.Flags().StringVar(&o.namespace, "namespace", "kstate", "topic prefix")
	cmd.Flags().StringVar(&o.app, "app", "", "only this app's topics (commands, owners)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline for talking to Kafka")
	return cmd
}

// topicRow is one line of `kstate topics`.
type topicRow struct {
	broker.TopicInfo
	Kind string
}

// listTopics returns the topics `kstate topics` shows for o.
func listTopics(ctx context.Context, o *topicsOpts, log hclog.Logger) ([]topicRow, error) {
	cfg, err := o.config(log)
	if err != nil {
		return nil, err
	}
	adm, err := broker.NewAdmin(cfg)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	infos, err := adm.ListTopics(ctx, o.prefix())
	if err != nil {
		return nil, fmt.Errorf("list topics on %s: %w", strings.Join(o.brokers, ","), err)
	}
	rows := make([]topicRow, len(infos))
	for i, ti := range infos {
		rows[i] = topicRow{TopicInfo: ti, Kind: topicKind(ti.Name)}
	}
	return rows, nil
}

// topicKind is the kind a topic's name ends in, or "-" for a name outside kstate's layout.
func topicKind(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "-"
	}
	suffix := name[i+1:]
	for k := broker.Events; k <= broker.Idempotency; k++ {
		if k.String() == suffix {
			return suffix
		}
	}
	return "-"
}

// runTopics prints the table of `kstate topics`.
func runTopics(ctx context.Context, o *topicsOpts, log hclog.Logger, out io.Writer) error {
	rows, err := listTopics(ctx, o, log)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TOPIC\tKIND\tPARTITIONS\tCLEANUP\tRECORDS (end offsets)")
	for _, r := range rows {
		var sum int64
		offs := make([]string, len(r.EndOffsets))
		for i, e := range r.EndOffsets {
			sum += e
			offs[i] = fmt.Sprint(e)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d [%s]\n", r.Name, r.Kind, r.Partitions, r.CleanupPolicy, sum, strings.Join(offs, " "))
	}
	if len(rows) == 0 {
		fmt.Fprintf(w, "(no topics with prefix %s)\n", o.prefix())
	}
	return w.Flush()
}
