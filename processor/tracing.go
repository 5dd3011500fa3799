package processor

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/trace"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/processor/internal/tracing"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// A node's OpenTelemetry tracing lives in processor/internal/tracing; the runtime starts and ends
// its spans with one call at each place something happens, as it reports metrics. This file holds
// the options, the setup, and the small translations those calls need. Tracing is off unless
// WithTracerProvider or the OTEL_* variables turn it on; then n.tr is nil and every hook is a nil
// check (no stats handler, span, header or allocation).

// WithTracerProvider traces the node with tp: spans for the public port's calls (gRPC, and
// HTTP/JSON, gRPC-Web and Connect, which reach it transcoded), node-to-node forwards, calls to
// the user function, routing, entity activation and partition commits, and W3C trace context
// in the headers of every record a command writes. The node propagates W3C tracecontext and
// baggage itself and never touches OpenTelemetry's global provider or propagator. The caller
// owns tp: the node does not shut it down. Without this option the node reads the OTEL_*
// variables (docs/operations.md); a nil tp is the same as no option.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(n *Node) { n.tp = tp }
}

// WithTracingEntityIDs puts entity ids on the node's spans (attribute kstate.entity.id). They
// are left out by default: entity ids are often personal data (a user, an account), and spans
// leave the cluster for a tracing backend. KSTATE_TRACE_ENTITY_IDS=true does the same.
func WithTracingEntityIDs() Option {
	return func(n *Node) { n.traceIDs = true }
}

// entityStreams are the user function's per-entity protocol streams: they live as long as their
// entity, so each command on them carries its trace context in its metadata instead of the
// stream getting a span.
var entityStreams = []string{
	eventsourcedpb.EventSourced_Handle_FullMethodName,
	valueentitypb.ValueEntity_Handle_FullMethodName,
	crdtpb.Crdt_Handle_FullMethodName,
}

// parseTracing reads the OTEL_* variables in New, so that a bad value fails New, not Start.
func (n *Node) parseTracing() error {
	env, err := tracing.ParseEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("processor: tracing: %w", err)
	}
	n.traceEnv = env
	return nil
}

// startTracing sets up the node's tracing at Start: the embedder's provider, or one built from
// the environment (owned by the node and flushed at Close), or none.
func (n *Node) startTracing(ctx context.Context) error {
	opts := tracing.Options{EntityIDs: n.traceIDs || n.traceEnv.EntityIDs}
	switch {
	case n.tp != nil:
		n.tr = tracing.New(n.tp, opts)
	case n.traceEnv.Enabled:
		env := n.traceEnv
		env.EntityIDs = opts.EntityIDs
		tr, err := tracing.StartEnv(ctx, env, tracing.Resource{Version: Version, NodeID: n.cfg.NodeID})
		if err != nil {
			return err
		}
		n.tr = tr
		n.log.Info("tracing on", "exporter", "otlp", "protocol", env.Protocol, "sampler", env.Sampler.Description())
	}
	return nil
}

// stopTracing flushes the spans of a provider the node built (Close).
func (n *Node) stopTracing() {
	if err := n.tr.Shutdown(context.Background()); err != nil {
		n.log.Warn("tracing: flushing spans at close", "error", err)
	}
}

// traceRecords adds the W3C trace context of the command span in ctx to every record of a write,
// so a consumer of the journal continues the command's trace. Restore ignores the headers.
func (n *Node) traceRecords(ctx context.Context, recs []broker.Record) {
	parent, state := n.tr.HeaderValues(ctx) // shared by the records: header values are read only
	if parent == nil {
		return
	}
	add := []broker.Header{{Key: kstatev1.HeaderTraceParent, Value: parent}, {Key: kstatev1.HeaderTraceState, Value: state}}
	if state == nil {
		add = add[:1]
	}
	// The records' new header lists share one array (each capped at its own end).
	total := 0
	for i := range recs {
		total += len(recs[i].Headers) + len(add)
	}
	all := make([]broker.Header, 0, total)
	for i := range recs {
		from := len(all)
		all = append(append(all, recs[i].Headers...), add...)
		recs[i].Headers = all[from:len(all):len(all)]
	}
}

// endSpan ends a span of a command with the code its caller gets.
func endSpan(s *tracing.Span, err error) {
	if s != nil {
		s.End(commandCode(err), err)
	}
}
