package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/domainpb"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/internal/logging"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// refEventType is the type URL of the reference's event, as kstate's header carries it.
var refEventType = []byte("type.googleapis.com/" + string((&domainpb.ItemAdded{}).ProtoReflect().Descriptor().FullName()))

// refMaxBatch caps the records of one transaction, as kstate's MaxBatchRecords default does.
const refMaxBatch = 2000

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
	f.StringSliceVar(&brokers, "brokers", []string{"127.0.0.1:9092"}, "Kafka bootstrap servers")
	f.StringVar(&namespace, "namespace", "kstate", "topic and transactional-id prefix")
	f.StringVar(&app, "app", "ref", "app name (transactional ids <namespace>.<app>.p<N>)")
	f.StringVar(&listen, "listen", "127.0.0.1:9000", "gRPC address")
	f.Int32Var(&partitions, "partitions", 16, "partitions of the events topic")
	return cmd
}

// refServer is the bare reference: a hand-written com.example.shoppingcart.ShoppingCart whose
// AddItem produces one event record (the same bytes and headers an event of kstate's cart has)
// to the events topic partition of the user id, in a transaction of that partition's fenced
// producer, with kstate's group commit: the calls that arrive while a transaction is in flight go
// into the next one, and each call is answered after its transaction committed. There is no
// entity state, no user function and no Pebble.
type refServer struct {
	shoppingcartpb.UnimplementedShoppingCartServer
	cfg    broker.Config
	topic  string
	parts  []*refPartition
	cmdSeq atomic.Uint64
}

// refPartition is one partition's producer and the queue of calls waiting for a transaction.
type refPartition struct {
	p    int32
	prod *broker.TxnProducer
	in   chan *refCall
	seq  int64 // owned by run
}

// refCall is one AddItem waiting for its record to commit.
type refCall struct {
	rec  broker.Record
	done chan error // buffered(1)
}

// runRefServer creates the topics, acquires every partition (fencing earlier producers), serves
// gRPC on listen until ctx ends, and stops.
func runRefServer(ctx context.Context, cfg broker.Config, listen string, log hclog.Logger) error {
	log = logging.OrDiscard(log)
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
	defer func() {
		for _, rp := range s.parts {
			rp.prod.Close()
		}
	}()
	for p := range cfg.Partitions {
		prod, err := broker.NewTxnProducer(cfg, p)
		if err != nil {
			return err
		}
		s.parts = append(s.parts, &refPartition{p: p, prod: prod, in: make(chan *refCall, 4096)})
	}
	// Acquire every partition at once, as a node's partition supervisors do.
	acqErrs := make([]error, len(s.parts))
	var acq sync.WaitGroup
	for i, rp := range s.parts {
		acq.Add(1)
		go func() {
			defer acq.Done()
			acqErrs[i] = s.acquire(ctx, rp)
		}()
	}
	acq.Wait()
	if err := errors.Join(acqErrs...); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := grpc.NewServer()
	shoppingcartpb.RegisterShoppingCartServer(srv, s)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	failed := make(chan error, len(s.parts))
	for _, rp := range s.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rp.run(runCtx); err != nil {
				failed <- err
			}
		}()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("bare reference serving", "addr", lis.Addr().String(), "topic", s.topic, "partitions", cfg.Partitions)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-failed:
	case runErr = <-served:
	}
	hs.Shutdown()
	srv.GracefulStop()
	stop()
	wg.Wait()
	return runErr
}

// acquire fences partition p's earlier producers and publishes ownership, as a kstate node does.
func (s *refServer) acquire(ctx context.Context, rp *refPartition) error {
	v, err := proto.Marshal(&kstatev1.OwnerRecord{Partition: rp.p, NodeId: "bare-reference", AcquiredAt: timestamppb.Now()})
	if err != nil {
		return err
	}
	owner := broker.Record{Topic: s.cfg.OwnersTopic(), Key: []byte(strconv.Itoa(int(rp.p))), Value: v}
	if err := rp.prod.Acquire(ctx, owner); err != nil {
		return fmt.Errorf("partition %d: acquire: %w", rp.p, err)
	}
	if _, err := rp.prod.Commit(ctx, nil); err != nil {
		return fmt.Errorf("partition %d: publish ownership: %w", rp.p, err)
	}
	return nil
}

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
	call := &refCall{
		rec: broker.Record{
			Topic:     s.topic,
			Partition: p,
			Key:       []byte(in.GetUserId()),
			Value:     ev,
			Headers: []broker.Header{
				{Key: kstatev1.HeaderType, Value: refEventType},
				{Key: kstatev1.HeaderCommandID, Value: []byte("bare-" + strconv.Itoa(int(p)) + "-" + strconv.FormatUint(s.cmdSeq.Add(1), 10))},
				{Key: kstatev1.HeaderEntityType, Value: []byte(shoppingcart.ServiceName)},
			},
		},
		done: make(chan error, 1),
	}
	rp := s.parts[p]
	select {
	case rp.in <- call:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	default:
		return nil, status.Errorf(codes.ResourceExhausted, "partition %d has %d calls waiting", p, cap(rp.in))
	}
	select {
	case err := <-call.done:
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "commit: %v", err)
		}
		return &emptypb.Empty{}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// run is the partition's group-commit loop: it takes every call waiting (up to refMaxBatch)
// into one transaction, commits, answers them, and repeats. Calls arriving during a commit wait
// for the next one. It returns when ctx ends (answering what is queued) or the producer is
// fenced or its outcome unknown.
func (rp *refPartition) run(ctx context.Context) error {
	defer func() {
		for {
			select {
			case c := <-rp.in:
				c.done <- errors.New("server stopping")
			default:
				return
			}
		}
	}()
	batch := make([]*refCall, 0, 64)
	recs := make([]broker.Record, 0, 64)
	for {
		batch, recs = batch[:0], recs[:0]
		select {
		case c := <-rp.in:
			batch = append(batch, c)
		case <-ctx.Done():
			return nil
		}
	drain:
		for len(batch) < refMaxBatch {
			select {
			case c := <-rp.in:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		for _, c := range batch {
			rp.seq++
			c.rec.Headers = append(c.rec.Headers, broker.Header{Key: kstatev1.HeaderSequence, Value: []byte(strconv.FormatInt(rp.seq, 10))})
			recs = append(recs, c.rec)
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := rp.prod.Commit(tctx, recs)
		cancel()
		for _, c := range batch {
			c.done <- err
		}
		if err != nil && !errors.Is(err, broker.ErrAborted) {
			return fmt.Errorf("partition %d: %w", rp.p, err)
		}
	}
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
