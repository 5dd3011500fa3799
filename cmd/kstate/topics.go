package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kstatehq/kstate/broker"
)

func newTopicsCmd(lo *logOpts) *cobra.Command {
	var brokers []string
	var namespace string
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "List kstate's topics with partitions, cleanup policy and end offsets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			cfg := broker.DefaultConfig()
			cfg.Brokers = brokers
			cfg.Namespace = namespace
			cfg.Logger = log.Named("kafka")
			adm, err := broker.NewAdmin(cfg)
			if err != nil {
				return err
			}
			defer adm.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			infos, err := adm.ListTopics(ctx, namespace+".")
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TOPIC\tPARTITIONS\tCLEANUP\tRECORDS (end offsets)")
			for _, ti := range infos {
				var sum int64
				offs := make([]string, len(ti.EndOffsets))
				for i, e := range ti.EndOffsets {
					sum += e
					offs[i] = fmt.Sprint(e)
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%d [%s]\n", ti.Name, ti.Partitions, ti.CleanupPolicy, sum, strings.Join(offs, " "))
			}
			if len(infos) == 0 {
				fmt.Fprintf(w, "(no topics with prefix %s.)\n", namespace)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringSliceVar(&brokers, "brokers", []string{"127.0.0.1:9092"}, "Kafka bootstrap servers")
	cmd.Flags().StringVar(&namespace, "namespace", "kstate", "topic prefix")
	return cmd
}
