package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/internal/ops"
)

// statusOpts are `kstate status`' flags.
type statusOpts struct {
	clusterOpts
	json   bool
	admins []string
}

func newStatusCmd(lo *logOpts) *cobra.Command {
	o := &statusOpts{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show an app's nodes and partitions: owner, epoch, state, restore progress",
		Long: `Show an app's nodes (the members of its consumer group) and its partitions: the node the group
assigns each to, its owner in the owners topic (node, peer address, producer epoch, since when),
its state and its end offsets, from Kafka alone.

A partition is serving when the node the group assigns it to has published its ownership,
moving when that node has not yet, unassigned when no node has it, and restoring when a node's
metrics say so: pass the nodes' admin listeners with --admin to read their restore progress
(offsets read of offsets to read).

kstate writes no consumer offsets (a partition's position is in each node's store), so there is no
consumer lag to show; END OFFSETS sums each partition's end offsets over the app's journals (its
events and state topics), and RESTORE is how far a restoring node is behind them.`,
		Example: `  kstate status --brokers kafka-0:9092 --app shop
  kstate status --app shop --admin 127.0.0.1:9090 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			st, err := readStatus(cmd.Context(), o, log)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return st.WriteTable(out)
		},
	}
	o.register(cmd.Flags(), "app", "app name: group <namespace>.<app>")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the status as JSON")
	cmd.Flags().StringSliceVar(&o.admins, "admin", nil, "admin listeners (host:port) of the app's nodes, to read their restore progress from /metrics")
	return cmd
}

// readStatus reads the app's group, owners, claims and topics, and the nodes' metrics.
func readStatus(ctx context.Context, o *statusOpts, log hclog.Logger) (ops.Status, error) {
	cfg, err := o.config(log)
	if err != nil {
		return ops.Status{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	where := func(err error) error { return fmt.Errorf("Kafka at %s: %w", strings.Join(o.brokers, ","), err) }
	adm, err := broker.NewAdmin(cfg)
	if err != nil {
		return ops.Status{}, err
	}
	defer adm.Close()
	infos, err := adm.ListTopics(ctx, o.namespace+".")
	if err != nil {
		return ops.Status{}, where(err)
	}
	byName := map[string]broker.TopicInfo{}
	for _, ti := range infos {
		byName[ti.Name] = ti
	}
	commands, ok := byName[cfg.CommandsTopic()]
	if !ok {
		return ops.Status{}, fmt.Errorf("no app %q in namespace %q: topic %s does not exist (no node of the app has started; check --app and --namespace)", o.app, o.namespace, cfg.CommandsTopic())
	}
	gs, err := adm.DescribeGroup(ctx)
	if err != nil {
		return ops.Status{}, where(err)
	}
	owners, err := broker.ReadOwners(ctx, cfg)
	if err != nil {
		return ops.Status{}, where(err)
	}
	in := ops.StatusInput{
		Namespace: o.namespace, App: o.app, Group: gs.Group, GroupState: gs.State,
		ClientIDPrefix: cfg.ClientID, Partitions: commands.Partitions, Owners: owners,
	}
	if in.ClientIDPrefix == "" {
		in.ClientIDPrefix = broker.DefaultConfig().ClientID
	}
	for _, m := range gs.Members {
		in.Members = append(in.Members, ops.Member{ID: m.MemberID, ClientID: m.ClientID, Host: m.Host, Partitions: m.Partitions})
	}
	if _, ok := byName[cfg.ClaimsTopic()]; ok {
		claims, err := broker.ReadClaims(ctx, cfg)
		if err != nil {
			return ops.Status{}, where(err)
		}
		for _, ti := range infos {
			for pid, app := range claims {
				if app == o.app && (ti.Name == cfg.EventsTopic(pid) || ti.Name == cfg.StateTopic(pid)) {
					in.Topics = append(in.Topics, ops.Topic{Name: ti.Name, EndOffsets: ti.EndOffsets})
				}
			}
		}
	}
	if len(o.admins) > 0 {
		hc := &http.Client{Timeout: 5 * time.Second}
		var all []map[int32]ops.Restore
		for _, a := range o.admins {
			rs, err := ops.ScrapeRestores(ctx, hc, a)
			sc := ops.Scrape{Admin: a}
			if err != nil {
				sc.Error = err.Error()
			}
			in.Scrapes = append(in.Scrapes, sc)
			all = append(all, rs)
		}
		in.Restores = ops.MergeRestores(all...)
	}
	return ops.BuildStatus(in), nil
}
