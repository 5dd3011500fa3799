package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/domainpb"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/internal/bench"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// refEventType is the type URL of the reference's event, as kstate's header carries it.
var refEventType = []byte("type.googleapis.com/" + string((&domainpb.ItemAdded{}).ProtoReflect().Descriptor().FullName()))

// newBenchRefServerCmd is `kstate bench ref-server`, the bare reference of `kstate bench --mode
// bare`: the floor kstate's overhead is measured against.
func newBenchRefServerCmd(lo *logOpts) *cobra.Command {
	var (
		brokers    []string
		namespace  string
		app        string
		listen     string
		partitions int32
	)
	cmd := &cobra.Command{
		Use:    "ref-server",
		Short:  "Serve the bare reference: ShoppingCart/AddItem as one Kafka record per call, group-committed per partition",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			cfg := broker.DefaultConfig()
			cfg.Brokers, cfg.Namespace, cfg.App, cfg.Partitions = brokers, namespace, app, partitions
			cfg.Logger = log.Named("kafka")
			if err := cfg.Validate(); err != nil {
				return err
			}
			return runRefServer(cmd.Context(), cfg, listen, log.Named("ref"))
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", []string{"127.0.0.1:9092"}, brokersHelp)
	f.StringVar(&namespace, "namespace", "kstate", "topic and transactional-id prefix")
	f.StringVar(&app, "app", "ref", "app name (transactional ids <namespace>.<app>.p<N>)")
	f.StringVar(&listen, "listen", "127.0.0.1:9000", "gRPC address")
	f.Int32Var(&partitions, "partitions", 16, "partitions of the events topic")
	return cmd
}

// runRefServer creates the topics and serves the bare reference (bench.ServeRef) on listen until
// ctx ends: a hand-written com.example.shoppingcart.ShoppingCart whose AddItem produces one event
// record (the same bytes and headers an event of kstate's cart has) to the events topic partition
// of the user id, in a transaction of that partition's fenced producer, group-committed.
func runRefServer(ctx context.Context, cfg broker.Config, listen string, log hclog.Logger) error {
	adm, err := broker.NewAdmin(cfg)
	if err != nil {
		return err
	}
	err = adm.EnsureTopics(ctx, cfg.AppTopics(map[string]broker.EntityKind{shoppingcart.PersistenceID: broker.EventSourced}))
	adm.Close()
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	s := &refServer{cfg: cfg, topic: cfg.EventsTopic(shoppingcart.PersistenceID)}
	return bench.ServeRef(ctx, bench.RefConfig[broker.Record]{
		Partitions: cfg.Partitions,
		Listen:     listen,
		Topic:      s.topic,
		Logger:     log,
		NewProducer: func(p int32) (bench.RefProducer[broker.Record], error) {
			prod, err := broker.NewTxnProducer(cfg, p)
			if err != nil {
				return nil, err
			}
			return &refProducer{cfg: cfg, p: p, prod: prod}, nil
		},
		Sequence: func(r broker.Record, seq int64) broker.Record {
			r.Headers = append(r.Headers, broker.Header{Key: kstatev1.HeaderSequence, Value: []byte(strconv.FormatInt(seq, 10))})
			return r
		},
		Aborted: func(err error) bool { return errors.Is(err, broker.ErrAborted) },
		Register: func(srv *grpc.Server, add func(context.Context, int32, broker.Record) error) {
			s.add = add
			shoppingcartpb.RegisterShoppingCartServer(srv, s)
		},
	})
}

// refServer is the reference's ShoppingCart: AddItem only.
type refServer struct {
	shoppingcartpb.UnimplementedShoppingCartServer
	cfg    broker.Config
	topic  string
	add    func(ctx context.Context, p int32, r broker.Record) error
	cmdSeq atomic.Uint64
}

// refProducer is one partition's broker.TxnProducer as a bench.RefProducer.
type refProducer struct {
	cfg  broker.Config
	p    int32
	prod *broker.TxnProducer
}

// Acquire fences partition p's earlier producers and publishes ownership, as a kstate node does.
func (rp *refProducer) Acquire(ctx context.Context) error {
	v, err := proto.Marshal(&kstatev1.OwnerRecord{Partition: rp.p, NodeId: "bare-reference", AcquiredAt: timestamppb.Now()})
	if err != nil {
		return err
	}
	owner := broker.Record{Topic: rp.cfg.OwnersTopic(), Key: []byte(strconv.Itoa(int(rp.p))), Value: v}
	if err := rp.prod.Acquire(ctx, owner); err != nil {
		return fmt.Errorf("partition %d: acquire: %w", rp.p, err)
	}
	if _, err := rp.prod.Commit(ctx, nil); err != nil {
		return fmt.Errorf("partition %d: publish ownership: %w", rp.p, err)
	}
	return nil
}

// Commit produces recs in one transaction and commits it.
func (rp *refProducer) Commit(ctx context.Context, recs []broker.Record) error {
	_, err := rp.prod.Commit(ctx, recs)
	return err
}

// Close closes the producer.
func (rp *refProducer) Close() { rp.prod.Close() }

// AddItem produces one ItemAdded record and answers once its transaction committed.
func (s *refServer) AddItem(ctx context.Context, in *shoppingcartpb.AddLineItem) (*emptypb.Empty, error) {
	if in.GetUserId() == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is empty")
	}
	ev, err := proto.Marshal(&domainpb.ItemAdded{Item: &domainpb.LineItem{
		ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity(),
	}})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p := broker.Partition([]byte(in.GetUserId()), s.cfg.Partitions)
	rec := broker.Record{
		Topic:     s.topic,
		Partition: p,
		Key:       []byte(in.GetUserId()),
		Value:     ev,
		Headers: []broker.Header{
			{Key: kstatev1.HeaderType, Value: refEventType},
			{Key: kstatev1.HeaderCommandID, Value: []byte("bare-" + strconv.Itoa(int(p)) + "-" + strconv.FormatUint(s.cmdSeq.Add(1), 10))},
			{Key: kstatev1.HeaderEntityType, Value: []byte(shoppingcart.ServiceName)},
		},
	}
	if err := s.add(ctx, p, rec); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// newBenchBrokerCmd is `kstate bench broker`: the embedded broker of `kstate dev` on its own, so
// that the bench can kill nodes while the broker lives on, and measure the broker apart.
func newBenchBrokerCmd(lo *logOpts) *cobra.Command {
	var addr, dataDir string
	cmd := &cobra.Command{
		Use:    "broker",
		Short:  "Run the embedded broker alone until interrupted",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lo.logger()
			if err != nil {
				return err
			}
			emb, err := broker.StartEmbedded(broker.EmbeddedConfig{DataDir: dataDir, Addr: addr, Logger: log.Named("embedded-kafka")})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "embedded broker listening on %s\n", strings.Join(emb.Addrs(), ","))
			<-cmd.Context().Done()
			return emb.Close()
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9092", "listen address")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "folder for the broker's data (empty: memory only)")
	return cmd
}
