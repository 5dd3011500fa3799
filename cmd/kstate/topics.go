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
	"github.com/spf13/pflag"

	"github.com/kstatehq/kstate/broker"
)

// clusterOpts are the flags of the commands that read an app from Kafka: topics, status,
// inspect.
type clusterOpts struct {
	brokers   []string
	namespace string
	app       string
	timeout   time.Duration
	kafka     kafkaOpts
}

// register adds the flags; appDefault and appHelp describe --app, which each command uses its
// own way.
func (o *clusterOpts) register(f *pflag.FlagSet, appDefault, appHelp string) {
	f.StringSliceVar(&o.brokers, "brokers", []string{"127.0.0.1:9092"}, brokersHelp)
	f.StringVar(&o.namespace, "namespace", "kstate", "topic prefix")
	f.StringVar(&o.app, "app", appDefault, appHelp)
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline for talking to Kafka")
	o.kafka.register(f)
}

// topicsOpts are `kstate topics`' flags.
type topicsOpts struct {
	clusterOpts
	// count reads every record to count them (records without transaction markers).
	count bool
}

// config maps the flags onto a broker.Config and checks them, so a bad value is reported with the
// flag to fix rather than as a connection failure.
func (o *clusterOpts) config(log hclog.Logger) (broker.Config, error) {
	cfg := broker.DefaultConfig()
	cfg.Brokers = o.brokers
	cfg.Namespace = o.namespace
	if o.app != "" {
		cfg.App = o.app
	}
	cfg.Logger = log.Named("kafka")
	o.kafka.apply(&cfg)
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
func (o *clusterOpts) prefix() string {
	if o.app != "" {
		return o.namespace + "." + o.app + "."
	}
	return o.namespace + "."
}

func newTopicsCmd(lo *logOpts) *cobra.Command {
	o := &topicsOpts{}
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "List kstate's topics with kind, partitions, cleanup policy, records and end offsets",
		Long: `List the topics in kstate's namespace: their kind (events, snapshots, state, crdt, crdt-state,
commands, owners, claims, dead-letters, idempotency), partition count, cleanup policy, records
and per-partition end offsets.

RECORDS counts the records a read_committed consumer gets (it reads every partition; --count=false
skips it). An end offset is the offset the next record will get: it also counts one transaction
marker per partition per transaction (kstate writes everything in transactions), aborted records,
and records compaction or retention removed, so it is usually higher than the records.

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
	o.register(cmd.Flags(), "", "only this app's topics (commands, owners, dead-letters, idempotency)")
	cmd.Flags().BoolVar(&o.count, "count", true, "read every record to count them (false: end offsets only, for very large topics)")
	return cmd
}

// topicRow is one line of `kstate topics`.
type topicRow struct {
	broker.TopicInfo
	Kind string
	// Records per partition (read_committed), nil without --count.
	Records []int64
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
		return nil, fmt.Errorf("Kafka at %s: %w", strings.Join(o.brokers, ","), err)
	}
	var counts map[string][]int64
	if o.count && len(infos) > 0 {
		if counts, err = broker.CountRecords(ctx, cfg, infos); err != nil {
			return nil, fmt.Errorf("Kafka at %s: %w", strings.Join(o.brokers, ","), err)
		}
	}
	rows := make([]topicRow, len(infos))
	for i, ti := range infos {
		rows[i] = topicRow{TopicInfo: ti, Kind: topicKind(ti.Name), Records: counts[ti.Name]}
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
	fmt.Fprintln(w, "TOPIC\tKIND\tPARTITIONS\tCLEANUP\tRECORDS\tEND OFFSETS")
	for _, r := range rows {
		records := "-"
		if r.Records != nil {
			records = fmt.Sprint(sum(r.Records))
		}
		offs := make([]string, len(r.EndOffsets))
		for i, e := range r.EndOffsets {
			offs[i] = fmt.Sprint(e)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%d [%s]\n", r.Name, r.Kind, r.Partitions, r.CleanupPolicy, records, sum(r.EndOffsets), strings.Join(offs, " "))
	}
	if len(rows) == 0 {
		fmt.Fprintf(w, "(no topics with prefix %s)\n", o.prefix())
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(rows) > 0 {
		_, err := fmt.Fprintln(out, "\nRECORDS: records a read_committed consumer reads. END OFFSETS: the offset the next record gets, summed [per partition];\nit also counts a transaction marker per partition per transaction and records compaction or retention removed.")
		return err
	}
	return nil
}

// sum adds xs up.
func sum(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return n
}
