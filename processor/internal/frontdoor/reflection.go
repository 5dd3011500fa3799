package frontdoor

import (
	"errors"
	"io"
	"sort"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/kstatehq/kstate/processor/internal/catalog"
)

// Full names of the two reflection services.
const (
	reflectionV1      = "grpc.reflection.v1.ServerReflection"
	reflectionV1Alpha = "grpc.reflection.v1alpha.ServerReflection"
)

// Reflection serves gRPC server reflection, v1 and v1alpha, for a Catalog's services: what grpcurl,
// Postman and Cloudstate's TCK use to discover the user's API. Descriptors are looked up in the
// catalog's own registry first, then in the descriptors linked into the binary (kstate's own
// services, health, reflection itself).
//
// It follows Cloudstate's proxy, which the TCK checks exactly:
//   - ListServices returns the reflection service itself first, then the catalog's services and any
//     extra names, sorted; the filter is ignored.
//   - A symbol, file or extension that is not known yields an empty FileDescriptorResponse, not an
//     error.
//
// A file is returned with those of its transitive imports not yet sent on the same stream.
type Reflection struct {
	cat   atomic.Pointer[catalog.Catalog]
	extra []string
	cache sync.Map // protoreflect.FileDescriptor → []byte (serialized FileDescriptorProto)
}

// RegisterReflection registers the v1 and v1alpha reflection services on s, serving cat. extra
// names more services to list, such as "grpc.health.v1.Health" or "kstate.v1.Node"; their
// descriptors must be linked into the binary. Cloudstate's TCK expects exactly the reflection
// service plus the user's services, so pass none there.
func RegisterReflection(s grpc.ServiceRegistrar, cat *catalog.Catalog, extra ...string) *Reflection {
	r := NewReflection(cat, extra...)
	rpb.RegisterServerReflectionServer(s, reflectionV1Server{r: r})
	rpbalpha.RegisterServerReflectionServer(s, reflectionV1AlphaServer{r: r})
	return r
}

// NewReflection returns a Reflection serving cat (which may be nil: then only extra services and
// linked-in descriptors are served) without registering it.
func NewReflection(cat *catalog.Catalog, extra ...string) *Reflection {
	r := &Reflection{extra: append([]string(nil), extra...)}
	r.cat.Store(cat)
	return r
}

// SetCatalog replaces the served catalog, e.g. after the user function was rediscovered.
func (r *Reflection) SetCatalog(cat *catalog.Catalog) { r.cat.Store(cat) }

// ListServices returns what ListServices answers for the reflection service named self.
func (r *Reflection) ListServices(self string) []string {
	seen := map[string]bool{self: true}
	var names []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if cat := r.cat.Load(); cat != nil {
		for _, s := range cat.Services() {
			add(s.Name)
		}
	}
	for _, n := range r.extra {
		add(n)
	}
	sort.Strings(names)
	return append([]string{self}, names...)
}

// reflectionV1Server adapts Reflection to the v1 service.
type reflectionV1Server struct {
	rpb.UnimplementedServerReflectionServer
	r *Reflection
}

// ServerReflectionInfo answers each request of the stream in order.
func (s reflectionV1Server) ServerReflectionInfo(stream grpc.BidiStreamingServer[rpb.ServerReflectionRequest, rpb.ServerReflectionResponse]) error {
	sent := make(map[string]bool)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(s.r.answer(req, reflectionV1, sent)); err != nil {
			return err
		}
	}
}

// reflectionV1AlphaServer adapts Reflection to the v1alpha service. Its messages are wire-identical
// to v1's, so requests and responses are converted by re-encoding.
type reflectionV1AlphaServer struct {
	rpbalpha.UnimplementedServerReflectionServer
	r *Reflection
}

// ServerReflectionInfo answers each request of the stream in order.
func (s reflectionV1AlphaServer) ServerReflectionInfo(stream grpc.BidiStreamingServer[rpbalpha.ServerReflectionRequest, rpbalpha.ServerReflectionResponse]) error {
	sent := make(map[string]bool)
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		req := &rpb.ServerReflectionRequest{}
		if err := reencode(in, req); err != nil {
			return err
		}
		resp := s.r.answer(req, reflectionV1Alpha, sent)
		out := &rpbalpha.ServerReflectionResponse{}
		if err := reencode(resp, out); err != nil {
			return err
		}
		out.OriginalRequest = in
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

// reencode copies src into dst, a wire-compatible message of another type.
func reencode(src, dst proto.Message) error {
	b, err := proto.Marshal(src)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, dst)
}

// answer computes the response to one request. sent tracks the files already sent on the stream.
func (r *Reflection) answer(req *rpb.ServerReflectionRequest, self string, sent map[string]bool) *rpb.ServerReflectionResponse {
	resp := &rpb.ServerReflectionResponse{ValidHost: req.GetHost(), OriginalRequest: req}
	cat := r.cat.Load()
	var files *protoregistry.Files
	var types *protoregistry.Types
	if cat != nil {
		files, types = cat.Files(), cat.Types()
	}
	switch mr := req.GetMessageRequest().(type) {
	case *rpb.ServerReflectionRequest_ListServices:
		names := r.ListServices(self)
		out := &rpb.ListServiceResponse{Service: make([]*rpb.ServiceResponse, len(names))}
		for i, n := range names {
			out.Service[i] = &rpb.ServiceResponse{Name: n}
		}
		resp.MessageResponse = &rpb.ServerReflectionResponse_ListServicesResponse{ListServicesResponse: out}
	case *rpb.ServerReflectionRequest_FileByFilename:
		resp.MessageResponse = r.filesResponse(findFile(files, mr.FileByFilename), sent)
	case *rpb.ServerReflectionRequest_FileContainingSymbol:
		resp.MessageResponse = r.filesResponse(findSymbolFile(files, mr.FileContainingSymbol), sent)
	case *rpb.ServerReflectionRequest_FileContainingExtension:
		ext := mr.FileContainingExtension
		resp.MessageResponse = r.filesResponse(findExtensionFile(types, ext.GetContainingType(), ext.GetExtensionNumber()), sent)
	case *rpb.ServerReflectionRequest_AllExtensionNumbersOfType:
		resp.MessageResponse = &rpb.ServerReflectionResponse_AllExtensionNumbersResponse{
			AllExtensionNumbersResponse: &rpb.ExtensionNumberResponse{
				BaseTypeName:    mr.AllExtensionNumbersOfType,
				ExtensionNumber: extensionNumbers(types, mr.AllExtensionNumbersOfType),
			},
		}
	default:
		resp.MessageResponse = &rpb.ServerReflectionResponse_ErrorResponse{ErrorResponse: &rpb.ErrorResponse{
			ErrorCode:    int32(codes.InvalidArgument),
			ErrorMessage: "the request sets no message_request",
		}}
	}
	return resp
}

// findFile looks a file up by path in files, then among the linked-in files.
func findFile(files *protoregistry.Files, path string) protoreflect.FileDescriptor {
	if files != nil {
		if fd, err := files.FindFileByPath(path); err == nil {
			return fd
		}
	}
	if fd, err := protoregistry.GlobalFiles.FindFileByPath(path); err == nil {
		return fd
	}
	return nil
}

// findSymbolFile returns the file declaring a fully-qualified symbol (message, enum, service,
// method, field, extension…), looked up in files, then among the linked-in files.
func findSymbolFile(files *protoregistry.Files, symbol string) protoreflect.FileDescriptor {
	name := protoreflect.FullName(symbol)
	if !name.IsValid() {
		return nil
	}
	if files != nil {
		if d, err := files.FindDescriptorByName(name); err == nil {
			return d.ParentFile()
		}
	}
	if d, err := protoregistry.GlobalFiles.FindDescriptorByName(name); err == nil {
		return d.ParentFile()
	}
	return nil
}

// findExtensionFile returns the file declaring extension number num of message container.
func findExtensionFile(types *protoregistry.Types, container string, num int32) protoreflect.FileDescriptor {
	name := protoreflect.FullName(container)
	if !name.IsValid() {
		return nil
	}
	if types != nil {
		if xt, err := types.FindExtensionByNumber(name, protoreflect.FieldNumber(num)); err == nil {
			return xt.TypeDescriptor().ParentFile()
		}
	}
	if xt, err := protoregistry.GlobalTypes.FindExtensionByNumber(name, protoreflect.FieldNumber(num)); err == nil {
		return xt.TypeDescriptor().ParentFile()
	}
	return nil
}

// extensionNumbers lists the known extension numbers of a message, sorted and without duplicates.
func extensionNumbers(types *protoregistry.Types, container string) []int32 {
	name := protoreflect.FullName(container)
	if !name.IsValid() {
		return nil
	}
	seen := make(map[int32]bool)
	var nums []int32
	collect := func(xt protoreflect.ExtensionType) bool {
		n := int32(xt.TypeDescriptor().Number())
		if !seen[n] {
			seen[n] = true
			nums = append(nums, n)
		}
		return true
	}
	if types != nil {
		types.RangeExtensionsByMessage(name, collect)
	}
	protoregistry.GlobalTypes.RangeExtensionsByMessage(name, collect)
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	return nums
}

// filesResponse returns fd (nil: none) and its transitive imports not yet in sent.
func (r *Reflection) filesResponse(fd protoreflect.FileDescriptor, sent map[string]bool) *rpb.ServerReflectionResponse_FileDescriptorResponse {
	out := &rpb.FileDescriptorResponse{}
	if fd != nil {
		var visit func(f protoreflect.FileDescriptor, first bool)
		visit = func(f protoreflect.FileDescriptor, first bool) {
			if !first && sent[f.Path()] {
				return
			}
			sent[f.Path()] = true
			out.FileDescriptorProto = append(out.FileDescriptorProto, r.encode(f))
			imports := f.Imports()
			for i := 0; i < imports.Len(); i++ {
				visit(imports.Get(i).FileDescriptor, false)
			}
		}
		visit(fd, true)
	}
	return &rpb.ServerReflectionResponse_FileDescriptorResponse{FileDescriptorResponse: out}
}

// encode returns the serialized FileDescriptorProto of fd, cached.
func (r *Reflection) encode(fd protoreflect.FileDescriptor) []byte {
	if b, ok := r.cache.Load(fd); ok {
		return b.([]byte)
	}
	// Marshaling a descriptor proto built from a valid descriptor cannot fail.
	b, _ := proto.Marshal(protodesc.ToFileDescriptorProto(fd))
	r.cache.Store(fd, b)
	return b
}
