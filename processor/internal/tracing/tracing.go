// Package tracing is a node's OpenTelemetry tracing: the gRPC stats handlers of its servers and
// clients, kstate's own spans (routing, the command at its partition, entity activation, the
// partition commit) and the W3C trace context a command's Kafka records and user-function
// messages carry. docs/operations.md lists the spans, their attributes and the variables.
//
// Every Node has its own Tracing, made from a TracerProvider the embedder passes or from the
// OTEL_* variables (StartEnv), with its own propagator (W3C tracecontext and baggage): nothing
// here reads or sets OpenTelemetry's globals. A nil *Tracing is tracing off: every method does
// nothing and returns its input unchanged, so the runtime's hooks cost a nil check, allocate
// nothing and add no stats handler, span or header.
package tracing

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// ScopeName is the instrumentation scope of kstate's own spans.
const ScopeName = "github.com/kstatehq/kstate/processor"

// Span names.
const (
	SpanRoute    = "kstate.route"    // routing one entity command: local or forwarded, with retries
	SpanCommand  = "kstate.command"  // one command at the partition that owns its entity
	SpanActivate = "kstate.activate" // an entity's activation: state from Pebble, stream, replay
	SpanCommit   = "kstate.commit"   // one partition transaction (a new root, linked to its commands)
)

// Attribute keys of kstate's spans.
const (
	AttrService        = attribute.Key("kstate.service")           // the command's service, from the catalog
	AttrMethod         = attribute.Key("kstate.method")            // the command's method name
	AttrPartition      = attribute.Key("kstate.partition")         // the entity's (or commit's) partition
	AttrRoute          = attribute.Key("kstate.route")             // local or forwarded (metrics.Route*)
	AttrAttempts       = attribute.Key("kstate.route.attempts")    // routing attempts, retries included
	AttrEntityID       = attribute.Key("kstate.entity.id")         // only with Options.EntityIDs
	AttrCommitRecords  = attribute.Key("kstate.commit.records")    // records in the transaction
	AttrCommitCommands = attribute.Key("kstate.commit.commands")   // commands whose writes it holds
	AttrCommitOutcome  = attribute.Key("kstate.commit.outcome")    // metrics.Outcome*
	AttrCode           = attribute.Key("rpc.response.status_code") // the caller's gRPC code, as otelgrpc writes it
)

// W3C trace context keys: HTTP headers, gRPC metadata, Kafka record headers and Cloudstate
// metadata entries.
const (
	TraceParent = "traceparent"
	TraceState  = "tracestate"
)

// Options tune a Tracing.
type Options struct {
	// EntityIDs puts entity ids on kstate's spans (kstate.entity.id). Off by default: ids are
	// often personal data, and spans leave for a tracing backend.
	EntityIDs bool
	// ParentBased says the provider's sampler never samples a child of an unsampled span (the
	// parentbased_ samplers, with their defaults). kstate then starts none of its own spans in an
	// unsampled trace: its records and metadata carry the unsampled parent's context instead,
	// which says as much (the trace id, not sampled) at a fraction of the cost.
	ParentBased bool
}

// Tracing is one node's tracing.
type Tracing struct {
	tracer    trace.Tracer
	grpcOpts  []otelgrpc.Option
	prop      propagation.TextMapPropagator // gRPC: tracecontext and baggage
	entityIDs bool
	skip      bool                     // Options.ParentBased
	owned     *sdktrace.TracerProvider // built by StartEnv: flushed and shut down by Shutdown
}

// New returns tracing that starts its spans with tp. The caller keeps tp: Shutdown does not stop
// it.
func New(tp trace.TracerProvider, o Options) *Tracing {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	return &Tracing{
		tracer: tp.Tracer(ScopeName),
		grpcOpts: []otelgrpc.Option{
			otelgrpc.WithTracerProvider(tp),
			otelgrpc.WithPropagators(prop),
			otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()), // metrics are Prometheus'
		},
		prop:      prop,
		entityIDs: o.EntityIDs,
		skip:      o.ParentBased,
	}
}

// Shutdown flushes and stops the provider StartEnv built; it does nothing for one passed to New.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.owned == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	return t.owned.Shutdown(ctx)
}

// ServerOptions instrument a gRPC server: a server span per call, continuing the caller's trace.
// Health checks, which probes send every few seconds, are left out.
func (t *Tracing) ServerOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	opts := append(t.grpcOpts[:len(t.grpcOpts):len(t.grpcOpts)], otelgrpc.WithFilter(filters.Not(filters.HealthCheck())))
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(opts...))}
}

// DialOptions instrument a gRPC client connection: a client span per call, its trace context
// sent in the call's metadata.
func (t *Tracing) DialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(t.grpcOpts...))}
}

// UserFunctionDialOptions instrument the connection to the user function. An entity's protocol
// stream lives as long as the entity (minutes), so it gets no span of its own: each command on
// it carries its span's trace context in its metadata instead (Metadata). Unary calls (actions,
// discovery) get client spans as on any connection.
func (t *Tracing) UserFunctionDialOptions(entityStreams ...string) []grpc.DialOption {
	if t == nil {
		return nil
	}
	fs := make([]otelgrpc.Filter, len(entityStreams))
	for i, m := range entityStreams {
		fs[i] = filters.FullMethodName(m)
	}
	opts := append(t.grpcOpts[:len(t.grpcOpts):len(t.grpcOpts)], otelgrpc.WithFilter(filters.None(fs...)))
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(opts...))}
}

// Span is a span kstate started. A nil *Span does nothing.
type Span struct {
	s trace.Span
}

// start starts a span of kstate's, or none (nil) when the trace is not sampled and the sampler
// would not sample the span either (Options.ParentBased).
func (t *Tracing) start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, *Span) {
	if sc := trace.SpanContextFromContext(ctx); t.skip && sc.IsValid() && !sc.IsSampled() {
		return ctx, nil
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(kind))
	return ctx, &Span{s}
}

// command sets the attributes every span of one command has.
func (t *Tracing) command(s *Span, service, method, entityID string, p int32) {
	if s == nil || !s.s.IsRecording() {
		return
	}
	s.s.SetAttributes(AttrService.String(service), AttrPartition.Int(int(p)))
	if method != "" {
		s.s.SetAttributes(AttrMethod.String(method))
	}
	if t.entityIDs {
		s.s.SetAttributes(AttrEntityID.String(entityID))
	}
}

// StartRoute starts the span of routing a command for entity entityID, in partition p, of
// service's method; ctx carries it to the attempts (Routed).
func (t *Tracing) StartRoute(ctx context.Context, service, method, entityID string, p int32) (context.Context, *Span) {
	if t == nil {
		return ctx, nil
	}
	ctx, s := t.start(ctx, SpanRoute, trace.SpanKindInternal)
	t.command(s, service, method, entityID, p)
	return ctx, s
}

// Routed records a routing attempt by route (local, forwarded) on the route span of ctx.
func (t *Tracing) Routed(ctx context.Context, route string) {
	if t == nil {
		return
	}
	if s := trace.SpanFromContext(ctx); s.IsRecording() {
		s.SetAttributes(AttrRoute.String(route))
		s.AddEvent("attempt", trace.WithAttributes(AttrRoute.String(route)))
	}
}

// StartCommand starts the span of a command at its partition: from its arrival there until its
// answer (the queue, the user function, the commit it waits for). Its records carry its trace
// context (TraceContext), and the commit that holds them links to it.
func (t *Tracing) StartCommand(ctx context.Context, service, method, entityID string, p int32) (context.Context, *Span) {
	if t == nil {
		return ctx, nil
	}
	ctx, s := t.start(ctx, SpanCommand, trace.SpanKindInternal)
	t.command(s, service, method, entityID, p)
	return ctx, s
}

// StartActivation starts the span of an entity's activation, a child of the command (ctx) that
// activates it.
func (t *Tracing) StartActivation(ctx context.Context, service, entityID string, p int32) *Span {
	if t == nil {
		return nil
	}
	_, s := t.start(ctx, SpanActivate, trace.SpanKindInternal)
	t.command(s, service, "", entityID, p)
	return s
}

// StartCommit starts the span of a transaction of partition p holding records of commands. It
// is a new root: it links to the commands (links, from Link), since one transaction serves many
// commands of many traces. A transaction none of whose commands is sampled gets no span (the
// commit metrics cover it).
func (t *Tracing) StartCommit(p int32, commands, records int, links []trace.Link) *Span {
	if t == nil || len(links) == 0 {
		return nil
	}
	_, s := t.tracer.Start(context.Background(), SpanCommit, trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(links...))
	if s.IsRecording() {
		s.SetAttributes(AttrPartition.Int(int(p)), AttrCommitCommands.Int(commands), AttrCommitRecords.Int(records),
			attribute.String("messaging.system", "kafka"))
	}
	return &Span{s}
}

// Link appends to links a link to a command's span sc (from SpanContext) if it is sampled: a link
// to a span that is never exported leads nowhere.
func (t *Tracing) Link(links []trace.Link, sc trace.SpanContext) []trace.Link {
	if t == nil || !sc.IsSampled() {
		return links
	}
	return append(links, trace.Link{SpanContext: sc})
}

// SpanContext is the span context of ctx (zero with tracing off).
func (t *Tracing) SpanContext(ctx context.Context) trace.SpanContext {
	if t == nil {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(ctx)
}

// End ends the span with the gRPC code its command's caller gets; any code but OK marks it
// failed, with err's message.
func (s *Span) End(code grpccodes.Code, err error) {
	if s == nil {
		return
	}
	if s.s.IsRecording() {
		s.s.SetAttributes(AttrCode.String(canonical(code)))
		if code != grpccodes.OK && err != nil {
			s.s.SetStatus(codes.Error, err.Error())
		}
	}
	s.s.End()
}

// Attempts records how many routing attempts a route span took.
func (s *Span) Attempts(n int) {
	if s != nil && s.s.IsRecording() {
		s.s.SetAttributes(AttrAttempts.Int(n))
	}
}

// EndCommit ends a commit span with the transaction's outcome (a metrics.Outcome* value).
func (s *Span) EndCommit(outcome string, err error) {
	if s == nil {
		return
	}
	if s.s.IsRecording() {
		s.s.SetAttributes(AttrCommitOutcome.String(outcome))
		if err != nil {
			s.s.SetStatus(codes.Error, err.Error())
		}
	}
	s.s.End()
}

// TraceContext returns the W3C traceparent and tracestate of ctx's span, for the Kafka records a
// command writes; "" when there is no valid span (or tracing is off). Baggage is not written: it
// is the caller's, and records live as long as the journal.
func (t *Tracing) TraceContext(ctx context.Context) (traceparent, tracestate string) {
	if t == nil {
		return "", ""
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return "", ""
	}
	return string(appendTraceParent(make([]byte, 0, traceParentLen), sc)), sc.TraceState().String()
}

// HeaderValues are TraceContext as the values of Kafka record headers (nil when there is none).
func (t *Tracing) HeaderValues(ctx context.Context) (traceparent, tracestate []byte) {
	if t == nil {
		return nil, nil
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil, nil
	}
	if ts := sc.TraceState(); ts.Len() > 0 {
		tracestate = []byte(ts.String())
	}
	return appendTraceParent(make([]byte, 0, traceParentLen), sc), tracestate
}

// traceParentLen is the length of a version 00 traceparent.
const traceParentLen = len("00-") + 32 + len("-") + 16 + len("-00")

// appendTraceParent appends sc's W3C traceparent, version 00, as propagation.TraceContext writes
// it (in one allocation rather than its several: this runs for every command).
func appendTraceParent(b []byte, sc trace.SpanContext) []byte {
	tid, sid := sc.TraceID(), sc.SpanID()
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	return hex.AppendEncode(b, []byte{byte(sc.TraceFlags() & trace.FlagsSampled)})
}

// Extract returns ctx with the remote span context of a W3C traceparent and tracestate (the
// headers of a record kstate wrote): how a consumer of the journal continues its trace.
func Extract(ctx context.Context, traceparent, tracestate string) context.Context {
	return propagation.TraceContext{}.Extract(ctx, &pair{parent: traceparent, state: tracestate})
}

// Metadata returns md with the traceparent and tracestate of ctx's span in place of any the
// client sent, for a command on an entity's stream to the user function; md itself is not
// changed. With tracing off, or no valid span, it returns md.
func (t *Tracing) Metadata(ctx context.Context, md *cloudstatepb.Metadata) *cloudstatepb.Metadata {
	if t == nil {
		return md
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return md
	}
	// One allocation for the metadata, its two entries and (usually) its entry list: this runs
	// for every command.
	c := new(commandMetadata)
	c.md.Entries = c.list[:0]
	if n := len(md.GetEntries()) + 2; n > len(c.list) {
		c.md.Entries = make([]*cloudstatepb.MetadataEntry, 0, n)
	}
	for _, e := range md.GetEntries() {
		if k := e.GetKey(); k != TraceParent && k != TraceState {
			c.md.Entries = append(c.md.Entries, e)
		}
	}
	var buf [traceParentLen]byte
	c.parentValue.StringValue = string(appendTraceParent(buf[:0], sc))
	c.parent.Key, c.parent.Value = TraceParent, &c.parentValue
	c.md.Entries = append(c.md.Entries, &c.parent)
	if ts := sc.TraceState(); ts.Len() > 0 {
		c.stateValue.StringValue = ts.String()
		c.state.Key, c.state.Value = TraceState, &c.stateValue
		c.md.Entries = append(c.md.Entries, &c.state)
	}
	return &c.md
}

// commandMetadata is a command's rewritten metadata in one allocation (Metadata).
type commandMetadata struct {
	md                      cloudstatepb.Metadata
	parent, state           cloudstatepb.MetadataEntry
	parentValue, stateValue cloudstatepb.MetadataEntry_StringValue
	list                    [6]*cloudstatepb.MetadataEntry
}

// Follow returns base (the node's lifetime) with ctx's span as its parent, for work that
// outlives the call that started it (an asynchronous side effect).
func (t *Tracing) Follow(base, ctx context.Context) context.Context {
	if t == nil {
		return base
	}
	return trace.ContextWithSpanContext(base, trace.SpanContextFromContext(ctx))
}

// pair is a TextMapCarrier of the two W3C trace context keys.
type pair struct{ parent, state string }

func (c *pair) Get(k string) string {
	switch k {
	case TraceParent:
		return c.parent
	case TraceState:
		return c.state
	}
	return ""
}

func (c *pair) Set(k, v string) {
	switch k {
	case TraceParent:
		c.parent = v
	case TraceState:
		c.state = v
	}
}

func (c *pair) Keys() []string { return []string{TraceParent, TraceState} }

// codeNames are the gRPC codes as OpenTelemetry's RPC conventions (and otelgrpc) write them.
var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func canonical(c grpccodes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return c.String()
}
