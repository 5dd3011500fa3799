package tracing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Protocols of the OTLP exporter (OTEL_EXPORTER_OTLP_PROTOCOL).
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// Env is the tracing the standard OpenTelemetry variables ask for (ParseEnv). Its zero value is
// tracing off.
type Env struct {
	// Enabled is true when the variables turn tracing on: see ParseEnv.
	Enabled bool
	// Protocol is the OTLP exporter's transport, ProtocolGRPC or ProtocolHTTP.
	Protocol string
	// Sampler is OTEL_TRACES_SAMPLER's sampler (parentbased_always_on when unset), wrapped so
	// that a commit is recorded whenever a command it carries is (LinkSampler).
	Sampler sdktrace.Sampler
	// ParentBased is true when the sampler is one of the parentbased_ ones (and the default):
	// it never samples a span whose parent is not sampled.
	ParentBased bool
	// EntityIDs is KSTATE_TRACE_ENTITY_IDS: put entity ids on kstate's spans.
	EntityIDs bool
}

// ParseEnv reads the OpenTelemetry variables through getenv (os.Getenv). Tracing is on when
// OTEL_TRACES_EXPORTER is "otlp", or when it is unset and OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
// turn it off. The specification's default exporter is otlp, but kstate exports nothing unless
// asked: a node started with no variable set sends no spans anywhere. The exporter itself reads
// the rest of the OTEL_EXPORTER_OTLP_* variables (headers, timeout, certificates, compression)
// and the batch processor the OTEL_BSP_* ones.
func ParseEnv(getenv func(string) string) (Env, error) {
	var env Env
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	ids, err := boolVar(get, "KSTATE_TRACE_ENTITY_IDS")
	if err != nil {
		return env, err
	}
	env.EntityIDs = ids
	if off, err := boolVar(get, "OTEL_SDK_DISABLED"); err != nil || off {
		return env, err
	}
	switch exp := strings.ToLower(get("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return env, nil
	case "":
		if get("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return env, nil
		}
	case "otlp":
	default:
		return env, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: kstate exports traces with otlp only (or none)", exp)
	}
	env.Protocol = strings.ToLower(get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if env.Protocol == "" {
		env.Protocol = strings.ToLower(get("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch env.Protocol {
	case "":
		env.Protocol = ProtocolHTTP // the specification's default
	case ProtocolHTTP, ProtocolGRPC:
	default:
		return env, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: kstate exports over %s or %s", env.Protocol, ProtocolGRPC, ProtocolHTTP)
	}
	name := strings.ToLower(get("OTEL_TRACES_SAMPLER"))
	s, err := ParseSampler(name, get("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return env, err
	}
	env.ParentBased = name == "" || strings.HasPrefix(name, "parentbased_")
	env.Sampler = LinkSampler(s)
	env.Enabled = true
	return env, nil
}

func boolVar(get func(string) string, k string) (bool, error) {
	v := get(k)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%s: want true or false", k, v)
	}
	return b, nil
}

// ParseSampler is the sampler named by OTEL_TRACES_SAMPLER (name) and OTEL_TRACES_SAMPLER_ARG
// (arg, the ratio of the *traceidratio samplers, 1.0 when empty). An empty name is
// parentbased_always_on, the specification's default.
func ParseSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (sdktrace.Sampler, error) {
		if arg == "" {
			return sdktrace.TraceIDRatioBased(1), nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%s: want a ratio from 0 to 1", arg)
		}
		return sdktrace.TraceIDRatioBased(r), nil
	}
	switch strings.ToLower(name) {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return ratio()
	case "parentbased_traceidratio":
		s, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(s), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%s: kstate supports always_on, always_off, traceidratio and their parentbased_ forms", name)
}

// LinkSampler samples a span that links to a sampled span, and asks base about every other one.
// kstate's commit spans are new roots that link to the commands they carry: with it, the commit
// of every sampled command is recorded too, whatever the ratio of root spans.
func LinkSampler(base sdktrace.Sampler) sdktrace.Sampler { return linkSampler{base} }

type linkSampler struct{ base sdktrace.Sampler }

func (s linkSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	for _, l := range p.Links {
		if l.SpanContext.IsSampled() {
			return sdktrace.SamplingResult{
				Decision:   sdktrace.RecordAndSample,
				Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState(),
			}
		}
	}
	return s.base.ShouldSample(p)
}

func (s linkSampler) Description() string { return "LinkSampler{" + s.base.Description() + "}" }

// Resource names the node in its spans.
type Resource struct {
	// Version is kstate's version (service.version).
	Version string
	// NodeID is the node's id (service.instance.id).
	NodeID string
}

// StartEnv builds a tracer provider as env asks, exporting over OTLP in batches, and returns the
// node's Tracing, which owns the provider: Shutdown flushes and stops it. service.name is
// "kstate" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise.
func StartEnv(ctx context.Context, env Env, res Resource) (*Tracing, error) {
	if !env.Enabled {
		return nil, errors.New("tracing: not enabled by the environment")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch env.Protocol {
	case ProtocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	r, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", "kstate"),
			attribute.String("service.version", res.Version),
			attribute.String("service.instance.id", res.NodeID)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv()) // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: last, so they win
	if err != nil && r == nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(env.Sampler),
		sdktrace.WithResource(r))
	t := New(tp, Options{EntityIDs: env.EntityIDs, ParentBased: env.ParentBased})
	t.owned = tp
	return t, nil
}

// shutdownTimeout bounds the flush of the spans still buffered when a node closes.
const shutdownTimeout = 5 * time.Second
