package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/internal/grpccall"
	"github.com/kstatehq/kstate/internal/ops"
)

// inspectOpts are `kstate inspect`' flags.
type inspectOpts struct {
	clusterOpts
	persistenceID string
	descriptors   []string
	node          string
	nodeTLS       callTLS
	headers       []string
	json          bool
}

func newInspectCmd(lo *logOpts) *cobra.Command {
	o := &inspectOpts{}
	cmd := &cobra.Command{
		Use:   "inspect SERVICE ENTITY_ID",
		Short: "Show an entity's events or state from Kafka, decoded as JSON",
		Long: `Show one entity as Kafka holds it: the events of an event-sourced entity (its journal, with
sequence numbers, offsets and times) and its latest snapshot, or the latest state of a value
entity, and how many command outcomes are remembered for its idempotency keys.

SERVICE is the entity's service (full name, or the simple name when unambiguous). The entity's
records are read from its partition of every events, snapshots and state topic of the namespace,
and the persistence id is the one whose records carry SERVICE as their entity type; name it with
--persistence-id to read that persistence id's topics only. Kafka has no index by key, so this
reads whole partitions: it costs what restoring one partition does.

Values are decoded by the type URL in their headers, with the descriptors of --descriptor-set
(protoc --include_imports --descriptor_set_out=FILE, or buf build -o FILE), else over gRPC
reflection from a running node (--node host:port), else those built into kstate (the examples).
A value without its descriptor is shown as its type and bytes (base64).`,
		Example: `  kstate inspect com.example.shoppingcart.ShoppingCart alice
  kstate inspect ShoppingCart alice --node localhost:9000 --json
  kstate inspect shop.v1.Cart c-42 --brokers kafka-0:9092 --persistence-id cart --descriptor-set cart.binpb`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			e, err := readEntity(cmd.Context(), o, args[0], args[1], log)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(e)
			}
			return e.WriteText(out)
		},
	}
	o.register(cmd.Flags(), "", "only this app's idempotency topic (default: every app's of the namespace)")
	f := cmd.Flags()
	f.StringVar(&o.persistenceID, "persistence-id", "", "the entity's persistence id (default: found from the records' entity type)")
	f.StringSliceVar(&o.descriptors, "descriptor-set", nil, "FileDescriptorSet files to decode values with (repeatable)")
	f.StringVar(&o.node, "node", "", "a running node (host:port) whose gRPC reflection describes the values")
	f.StringArrayVarP(&o.headers, "header", "H", nil, "metadata for --node's reflection as key=value (repeatable), e.g. authorization=Bearer t0k")
	f.BoolVar(&o.nodeTLS.enabled, "node-tls", false, "connect to --node with TLS")
	f.StringVar(&o.nodeTLS.caFile, "node-tls-ca", "", "PEM CAs to verify --node against (implies --node-tls)")
	f.BoolVar(&o.json, "json", false, "print the entity as JSON")
	return cmd
}

// readEntity reads and decodes one entity.
func readEntity(ctx context.Context, o *inspectOpts, service, id string, log hclog.Logger) (ops.Entity, error) {
	cfg, err := o.config(log)
	if err != nil {
		return ops.Entity{}, err
	}
	if id == "" {
		return ops.Entity{}, fmt.Errorf("the entity id is empty")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	where := func(err error) error { return fmt.Errorf("Kafka at %s: %w", strings.Join(o.brokers, ","), err) }
	adm, err := broker.NewAdmin(cfg)
	if err != nil {
		return ops.Entity{}, err
	}
	defer adm.Close()
	infos, err := adm.ListTopics(ctx, o.namespace+".")
	if err != nil {
		return ops.Entity{}, where(err)
	}
	var entity, idem []broker.TopicInfo
	var names []string
	for _, ti := range infos {
		kind := topicKind(ti.Name)
		switch {
		case kind == "idempotency" && (o.app == "" || ti.Name == cfg.IdempotencyTopic()):
			idem = append(idem, ti)
		case kind == "events" || kind == "snapshots" || kind == "state":
			if o.persistenceID != "" && ti.Name != cfg.EventsTopic(o.persistenceID) && ti.Name != cfg.SnapshotsTopic(o.persistenceID) && ti.Name != cfg.StateTopic(o.persistenceID) {
				continue
			}
			entity = append(entity, ti)
			names = append(names, ti.Name)
		}
	}
	recs, err := broker.ReadKey(ctx, cfg, append(entity, idem...), []byte(id))
	if err != nil {
		return ops.Entity{}, where(err)
	}
	in := ops.EntityInput{Service: service, EntityID: id, Namespace: o.namespace, PersistenceID: o.persistenceID, Topics: names, Now: time.Now()}
	for _, r := range recs {
		or := opsRecord(r)
		if topicKind(r.Topic) == "idempotency" {
			in.Idempotency = append(in.Idempotency, or)
		} else {
			in.Records = append(in.Records, or)
		}
	}
	res, err := o.resolver(ctx, ops.TypeNames(in.Records))
	if err != nil {
		return ops.Entity{}, err
	}
	return ops.BuildEntity(in, res)
}

// resolver finds the values' descriptors: --descriptor-set files, then --node's reflection, then
// those linked into kstate.
func (o *inspectOpts) resolver(ctx context.Context, typeNames []string) (ops.Resolver, error) {
	var rs ops.Resolvers
	for _, path := range o.descriptors {
		types, err := ops.LoadDescriptorSet(path)
		if err != nil {
			return nil, fmt.Errorf("--descriptor-set: %w", err)
		}
		rs = append(rs, types)
	}
	if o.node != "" {
		md, err := parseHeaders(o.headers)
		if err != nil {
			return nil, err
		}
		creds, err := o.nodeTLS.credentials()
		if err != nil {
			return nil, fmt.Errorf("--node: %w", err)
		}
		conn, err := grpc.NewClient(o.node, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("--node %s: %w", o.node, err)
		}
		defer func() { _ = conn.Close() }()
		if len(md) > 0 {
			ctx = metadata.NewOutgoingContext(ctx, md)
		}
		c, err := grpccall.New(ctx, conn)
		if err != nil {
			return nil, fmt.Errorf("--node %s: %w", o.node, err)
		}
		types, err := c.Types(ctx, typeNames...)
		if err != nil {
			return nil, fmt.Errorf("--node %s: %w", o.node, err)
		}
		rs = append(rs, types)
	}
	return append(rs, protoregistry.GlobalTypes), nil
}

// opsRecord adapts a broker record for ops.
func opsRecord(r broker.Record) ops.Record {
	hs := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		if _, ok := hs[h.Key]; !ok {
			hs[h.Key] = string(h.Value)
		}
	}
	return ops.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp, Key: r.Key, Value: r.Value, Headers: hs}
}
