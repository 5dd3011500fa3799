package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/proto/cloudstate/actionpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
)

// Protocol version this SDK speaks: Cloudstate protocol 0.2.
const (
	ProtocolMajorVersion = 0
	ProtocolMinorVersion = 2
)

// LibraryName is the support_library_name the SDK reports in discovery.
const LibraryName = "kstate-go-sdk"

// Environment variables ListenAndServe reads, the Cloudstate/TCK convention for where a user
// function listens.
const (
	EnvUserFunctionHost = "USER_FUNCTION_HOST"
	EnvUserFunctionPort = "USER_FUNCTION_PORT"
)

// Defaults for EnvUserFunctionHost and EnvUserFunctionPort.
const (
	DefaultUserFunctionHost = "127.0.0.1"
	DefaultUserFunctionPort = "8080"
)

// DefaultShutdownTimeout bounds how long Serve waits, once its context is done, for command
// handlers that are still running before it closes connections.
const DefaultShutdownTimeout = 10 * time.Second

// Server serves entities to a Cloudstate-protocol proxy: it implements the user-function side of
// cloudstate.EntityDiscovery and of the entity protocols (cloudstate.eventsourced.EventSourced,
// cloudstate.valueentity.ValueEntity, cloudstate.crdt.Crdt, cloudstate.action.ActionProtocol).
// Run it standalone with Serve or ListenAndServe, or put its services on a grpc.Server of your
// own (RegisterGRPC), e.g. in process over bufconn.
//
// A Server is safe for concurrent use. Entities may be registered while it serves; the proxy
// learns about them at its next discovery.
type Server struct {
	log             hclog.Logger
	serviceName     string
	serviceVersion  string
	grpcOpts        []grpc.ServerOption
	shutdownTimeout time.Duration

	mu struct {
		sync.RWMutex
		order     []string               // service names in registration order
		byService map[string]entityModel // service full name → definition
	}
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithLogger sets the server's logger. The default discards everything.
func WithLogger(l hclog.Logger) ServerOption {
	return func(s *Server) {
		if l != nil {
			s.log = l
		}
	}
}

// WithServiceInfo sets the service name and version the server reports in discovery
// (ServiceInfo.service_name/service_version). The default name is the program's file name and the
// default version is the main module's version.
func WithServiceInfo(name, version string) ServerOption {
	return func(s *Server) {
		s.serviceName, s.serviceVersion = name, version
	}
}

// WithGRPCServerOptions adds options for the grpc.Server that Serve and ListenAndServe create.
// RegisterGRPC ignores them.
func WithGRPCServerOptions(opts ...grpc.ServerOption) ServerOption {
	return func(s *Server) { s.grpcOpts = append(s.grpcOpts, opts...) }
}

// WithShutdownTimeout sets how long Serve waits for running command handlers once its context
// is done (default DefaultShutdownTimeout); after that it closes connections regardless.
func WithShutdownTimeout(d time.Duration) ServerOption {
	return func(s *Server) {
		if d > 0 {
			s.shutdownTimeout = d
		}
	}
}

// NewServer returns a Server without entities.
func NewServer(opts ...ServerOption) *Server {
	s := &Server{
		log:             hclog.NewNullLogger(),
		serviceName:     filepath.Base(os.Args[0]),
		serviceVersion:  mainVersion(),
		shutdownTimeout: DefaultShutdownTimeout,
	}
	s.mu.byService = make(map[string]entityModel)
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.Named("sdk")
	return s
}

// Register validates entities and adds them to the server. It checks, for each entity, that its
// service is in protoregistry.GlobalFiles, that every method of the service has a handler whose
// input and output types are the method's, that no handler is registered twice, and that no
// other entity serves the same service. Register adds all entities or, on any problem, none; the
// error then lists every problem found (errors.Join of *DefinitionError values).
func (s *Server) Register(entities ...Entity) error {
	models := make([]entityModel, 0, len(entities))
	names := make([]string, 0, len(entities))
	var errs []error
	seen := make(map[string]bool)
	for i, e := range entities {
		if e == nil {
			errs = append(errs, fmt.Errorf("sdk: entity %d of %d is nil", i+1, len(entities)))
			continue
		}
		m, err := e.compile()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := m.spec().GetServiceName()
		if seen[name] {
			errs = append(errs, &DefinitionError{Service: name, Err: fmt.Errorf("%w: two entities in one Register call serve this service", ErrDuplicate)})
			continue
		}
		seen[name] = true
		models = append(models, m)
		names = append(names, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range names {
		if s.mu.byService[name] != nil {
			errs = append(errs, &DefinitionError{Service: name, Err: fmt.Errorf("%w: an entity for this service is already registered", ErrDuplicate)})
		}
	}
	if err := joinErrors(errs); err != nil {
		return err
	}
	for i, m := range models {
		s.mu.byService[names[i]] = m
		s.mu.order = append(s.mu.order, names[i])
		s.log.Debug("registered entity", "service", names[i], "entity_type", m.spec().GetEntityType(), "persistence_id", m.spec().GetPersistenceId())
	}
	return nil
}

// lookup returns the definition serving service, or nil.
func (s *Server) lookup(service string) entityModel {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mu.byService[service]
}

// serviceNames lists the registered services of an entity type, in registration order.
func (s *Server) serviceNames(entityType string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var names []string
	for _, name := range s.mu.order {
		if s.mu.byService[name].spec().GetEntityType() == entityType {
			names = append(names, name)
		}
	}
	return names
}

// models returns the registered definitions in registration order.
func (s *Server) models() []entityModel {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ms := make([]entityModel, len(s.mu.order))
	for i, name := range s.mu.order {
		ms[i] = s.mu.byService[name]
	}
	return ms
}

// RegisterGRPC registers the Cloudstate services the server implements on g:
// cloudstate.EntityDiscovery, cloudstate.eventsourced.EventSourced,
// cloudstate.valueentity.ValueEntity, cloudstate.crdt.Crdt and cloudstate.action.ActionProtocol.
// Streams served this way
// end when the proxy closes them or g stops.
func (s *Server) RegisterGRPC(g grpc.ServiceRegistrar) {
	s.registerGRPC(g, nil)
}

func (s *Server) registerGRPC(g grpc.ServiceRegistrar, quit <-chan struct{}) {
	cloudstatepb.RegisterEntityDiscoveryServer(g, &discoveryService{s: s})
	eventsourcedpb.RegisterEventSourcedServer(g, &eventSourcedService{s: s, quit: quit})
	valueentitypb.RegisterValueEntityServer(g, &valueEntityService{s: s, quit: quit})
	crdtpb.RegisterCrdtServer(g, &crdtService{s: s, quit: quit})
	actionpb.RegisterActionProtocolServer(g, &actionService{s: s, quit: quit})
}

// Serve serves the Cloudstate services on lis until ctx is done, then shuts down: entity streams
// end after the command they are handling (with status UNAVAILABLE, so the proxy reactivates the
// entities elsewhere or later), and connections close after at most the shutdown timeout. Serve
// returns nil after a shutdown caused by ctx, or the error that stopped serving. It closes lis.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := grpc.NewServer(s.grpcOpts...)
	quit := make(chan struct{})
	s.registerGRPC(g, quit)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	select {
	case err := <-served:
		g.Stop()
		return fmt.Errorf("sdk: serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	close(quit)
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(s.shutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.log.Warn("command handlers still running after the shutdown timeout; closing connections", "timeout", s.shutdownTimeout)
		g.Stop()
		<-stopped
	}
	if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("sdk: serve: %w", err)
	}
	return nil
}

// ListenAndServe listens on UserFunctionAddress() and serves there, like Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	addr := UserFunctionAddress()
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("sdk: listen on %s: %w", addr, err)
	}
	s.log.Info("serving user function", "address", lis.Addr().String(), "entities", len(s.models()))
	return s.Serve(ctx, lis)
}

// ListenAndServe runs entities as a standalone user-function process: it registers them on a new
// Server that logs to stderr, listens on UserFunctionAddress() and serves until ctx is done.
func ListenAndServe(ctx context.Context, entities ...Entity) error {
	log := hclog.New(&hclog.LoggerOptions{Name: "user-function", Level: hclog.Info, Output: os.Stderr})
	s := NewServer(WithLogger(log))
	if err := s.Register(entities...); err != nil {
		return err
	}
	return s.ListenAndServe(ctx)
}

// UserFunctionAddress returns host:port from USER_FUNCTION_HOST (default 127.0.0.1) and
// USER_FUNCTION_PORT (default 8080).
func UserFunctionAddress() string {
	host, port := os.Getenv(EnvUserFunctionHost), os.Getenv(EnvUserFunctionPort)
	if host == "" {
		host = DefaultUserFunctionHost
	}
	if port == "" {
		port = DefaultUserFunctionPort
	}
	return net.JoinHostPort(host, port)
}

// discoveryService implements cloudstate.EntityDiscovery.
type discoveryService struct {
	cloudstatepb.UnimplementedEntityDiscoveryServer
	s *Server
}

// Discover answers the proxy's discovery with the registered entities and their descriptors.
func (d *discoveryService) Discover(_ context.Context, info *cloudstatepb.ProxyInfo) (*cloudstatepb.EntitySpec, error) {
	return d.s.spec(info)
}

// ReportError logs an error the proxy found in the user function (a bad spec, an unknown forward
// target).
func (d *discoveryService) ReportError(_ context.Context, e *cloudstatepb.UserFunctionError) (*emptypb.Empty, error) {
	d.s.log.Error("the proxy reported an error in this user function", "message", e.GetMessage())
	return &emptypb.Empty{}, nil
}

func (s *Server) spec(info *cloudstatepb.ProxyInfo) (*cloudstatepb.EntitySpec, error) {
	log := s.log.With("proxy", info.GetProxyName(), "proxy_version", info.GetProxyVersion(),
		"protocol", fmt.Sprintf("%d.%d", info.GetProtocolMajorVersion(), info.GetProtocolMinorVersion()))
	if info.GetProtocolMajorVersion() != ProtocolMajorVersion {
		log.Warn("the proxy speaks another major protocol version; this SDK speaks 0.2 and may not work with it")
	} else {
		log.Info("discovery")
	}
	models := s.models()
	if len(models) == 0 {
		log.Warn("discovery: no entities are registered")
	}
	spec := &cloudstatepb.EntitySpec{
		Entities: make([]*cloudstatepb.Entity, 0, len(models)),
		ServiceInfo: &cloudstatepb.ServiceInfo{
			ServiceName:           s.serviceName,
			ServiceVersion:        s.serviceVersion,
			ServiceRuntime:        runtime.Version(),
			SupportLibraryName:    LibraryName,
			SupportLibraryVersion: LibraryVersion(),
			ProtocolMajorVersion:  ProtocolMajorVersion,
			ProtocolMinorVersion:  ProtocolMinorVersion,
		},
	}
	var files []protoreflect.FileDescriptor
	supported := make(map[string]bool)
	for _, t := range info.GetSupportedEntityTypes() {
		supported[t] = true
	}
	for _, m := range models {
		ent := m.spec()
		if len(supported) > 0 && !supported[ent.GetEntityType()] {
			log.Warn("the proxy does not list this entity type as supported", "service", ent.GetServiceName(), "entity_type", ent.GetEntityType())
		}
		spec.Entities = append(spec.Entities, ent)
		files = append(files, m.files()...)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(fileSet(files))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode descriptors: %v", err)
	}
	spec.Proto = b
	return spec, nil
}

// fileSet returns files and their transitive imports, each once, every file after its imports.
func fileSet(files []protoreflect.FileDescriptor) *descriptorpb.FileDescriptorSet {
	set := &descriptorpb.FileDescriptorSet{}
	seen := make(map[string]bool)
	var visit func(fd protoreflect.FileDescriptor)
	visit = func(fd protoreflect.FileDescriptor) {
		if fd == nil || fd.IsPlaceholder() || seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			visit(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, fd := range files {
		visit(fd)
	}
	return set
}

// eventSourcedService implements cloudstate.eventsourced.EventSourced.
type eventSourcedService struct {
	eventsourcedpb.UnimplementedEventSourcedServer
	s    *Server
	quit <-chan struct{} // closed when Serve shuts down; nil under RegisterGRPC
}

// valueEntityService implements cloudstate.valueentity.ValueEntity.
type valueEntityService struct {
	valueentitypb.UnimplementedValueEntityServer
	s    *Server
	quit <-chan struct{} // closed when Serve shuts down; nil under RegisterGRPC
}

// Handle serves one value entity's stream: init with the stored value, then commands, one at a
// time.
func (v *valueEntityService) Handle(stream valueentitypb.ValueEntity_HandleServer) error {
	sess := v.s.NewValueSession(stream.Context())
	return serveEntityStream(stream, v.quit, single(sess.Step))
}

// Handle serves one entity's stream: init, replayed events, then commands, one at a time.
func (e *eventSourcedService) Handle(stream eventsourcedpb.EventSourced_HandleServer) error {
	sess := e.s.NewEventSourcedSession(stream.Context())
	return serveEntityStream(stream, e.quit, single(sess.Step))
}

// crdtService implements cloudstate.crdt.Crdt.
type crdtService struct {
	crdtpb.UnimplementedCrdtServer
	s    *Server
	quit <-chan struct{} // closed when Serve shuts down; nil under RegisterGRPC
}

// Handle serves one CRDT entity's stream: init with the state, then commands, deltas,
// cancellations and deletes, one at a time, each answered with the messages it causes.
func (c *crdtService) Handle(stream crdtpb.Crdt_HandleServer) error {
	sess := c.s.NewCrdtSession(stream.Context())
	return serveEntityStream(stream, c.quit, sess.Step)
}

// single adapts a step function with at most one output to serveEntityStream.
func single[In, Out any](step func(*In) (*Out, error)) func(*In) ([]*Out, error) {
	return func(in *In) ([]*Out, error) {
		out, err := step(in)
		if out == nil {
			return nil, err
		}
		return []*Out{out}, err
	}
}

// recvResult is one result of a stream's Recv.
type recvResult[T any] struct {
	msg *T
	err error
}

// entityStream is the server side of an entity protocol's bidirectional stream.
type entityStream[In, Out any] interface {
	Context() context.Context
	Recv() (*In, error)
	Send(*Out) error
}

// serveEntityStream runs an entity stream through a session's step function, one message at a
// time (sending the messages each one produces, in order), until the proxy closes the stream (nil), the stream breaks (its error), step reports a
// stream failure (after sending its failure message; FAILED_PRECONDITION for protocol errors,
// INTERNAL otherwise) or quit is closed (UNAVAILABLE, between two messages).
func serveEntityStream[In, Out any](stream entityStream[In, Out], quit <-chan struct{}, step func(*In) ([]*Out, error)) error {
	// Receiving runs in its own goroutine so that the loop below can stop between commands when
	// the server shuts down. The goroutine belongs to this call: it ends when Recv fails, which
	// happens at the latest when this function returns and gRPC ends the stream.
	msgs := make(chan recvResult[In])
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			in, err := stream.Recv()
			select {
			case msgs <- recvResult[In]{in, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var r recvResult[In]
		select {
		case <-quit:
			return status.Error(codes.Unavailable, "user function is shutting down")
		case r = <-msgs:
		}
		if errors.Is(r.err, io.EOF) {
			return nil
		}
		if r.err != nil {
			return r.err
		}
		outs, err := step(r.msg)
		for _, out := range outs {
			if serr := stream.Send(out); serr != nil {
				return serr
			}
		}
		if err != nil {
			code := codes.Internal
			if errors.Is(err, ErrProtocol) || errors.Is(err, ErrServiceNotFound) {
				code = codes.FailedPrecondition
			}
			return status.Error(code, err.Error())
		}
	}
}

// LibraryVersion returns the SDK's version: the version of module github.com/kstatehq/kstate in
// the running program's build information, or "devel" when it has none.
func LibraryVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if bi.Main.Path == modulePath {
		return versionOrDevel(bi.Main.Version)
	}
	for _, d := range bi.Deps {
		if d.Path == modulePath {
			if d.Replace != nil {
				return versionOrDevel(d.Replace.Version)
			}
			return versionOrDevel(d.Version)
		}
	}
	return "devel"
}

const modulePath = "github.com/kstatehq/kstate"

func mainVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return versionOrDevel(bi.Main.Version)
	}
	return "devel"
}

func versionOrDevel(v string) string {
	if v == "" || v == "(devel)" {
		return "devel"
	}
	return v
}

// joinErrors is errors.Join; it keeps the single-error case unwrapped so errors.As works on it
// directly.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errors.Join(errs...)
}

// goPackageOf returns the Go package name from a file's go_package option, or "".
func goPackageOf(opts protoreflect.ProtoMessage) string {
	fo, ok := opts.(*descriptorpb.FileOptions)
	if !ok {
		return ""
	}
	gp := fo.GetGoPackage()
	if gp == "" {
		return ""
	}
	if i := strings.LastIndexByte(gp, ';'); i >= 0 {
		return gp[i+1:]
	}
	return filepath.Base(gp)
}
