package grpccall

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// reflectionStream is one ServerReflectionInfo stream, v1 or v1alpha, seen through v1's messages.
type reflectionStream interface {
	Send(*rpb.ServerReflectionRequest) error
	Recv() (*rpb.ServerReflectionResponse, error)
}

// alphaStream adapts a v1alpha stream to v1 messages. The two versions' messages are identical on
// the wire, so a marshal/unmarshal round trip converts them exactly.
type alphaStream struct {
	s grpc.BidiStreamingClient[rpbalpha.ServerReflectionRequest, rpbalpha.ServerReflectionResponse]
}

func (a alphaStream) Send(req *rpb.ServerReflectionRequest) error {
	var out rpbalpha.ServerReflectionRequest
	if err := convert(req, &out); err != nil {
		return err
	}
	return a.s.Send(&out)
}

func (a alphaStream) Recv() (*rpb.ServerReflectionResponse, error) {
	in, err := a.s.Recv()
	if err != nil {
		return nil, err
	}
	var out rpb.ServerReflectionResponse
	if err := convert(in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func convert(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return fmt.Errorf("reflection v1alpha: %w", err)
	}
	if err := proto.Unmarshal(b, to); err != nil {
		return fmt.Errorf("reflection v1alpha: %w", err)
	}
	return nil
}

// openReflection opens a reflection stream of the given version. The stream lives until ctx is
// cancelled; callers cancel it when they are done.
func openReflection(ctx context.Context, conn grpc.ClientConnInterface, alpha bool) (reflectionStream, error) {
	if alpha {
		s, err := rpbalpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		return alphaStream{s: s}, nil
	}
	return rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
}

// roundTrip sends one request and returns its answer, turning an ErrorResponse into a gRPC status
// error and a transport failure into *RPCError.
func roundTrip(s reflectionStream, req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
	if err := s.Send(req); err != nil {
		// Send reports io.EOF when the stream broke; Recv then has the real status.
		if _, rerr := s.Recv(); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, err
	}
	if e := resp.GetErrorResponse(); e != nil {
		return nil, status.Error(codes.Code(e.GetErrorCode()), e.GetErrorMessage())
	}
	return resp, nil
}

// listServices asks for the server's services.
func listServices(s reflectionStream) ([]string, error) {
	resp, err := roundTrip(s, &rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	})
	if err != nil {
		return nil, err
	}
	lr := resp.GetListServicesResponse()
	if lr == nil {
		return nil, fmt.Errorf("reflection: ListServices answered with %T", resp.GetMessageResponse())
	}
	names := make([]string, 0, len(lr.GetService()))
	for _, s := range lr.GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

// fileRequest asks for files: by symbol when symbol is set, else by file name.
func fileRequest(s reflectionStream, symbol, filename string) ([]*descriptorpb.FileDescriptorProto, error) {
	req := &rpb.ServerReflectionRequest{}
	if symbol != "" {
		req.MessageRequest = &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}
	} else {
		req.MessageRequest = &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: filename}
	}
	resp, err := roundTrip(s, req)
	if err != nil {
		return nil, err
	}
	fr := resp.GetFileDescriptorResponse()
	if fr == nil {
		return nil, fmt.Errorf("reflection: file request answered with %T", resp.GetMessageResponse())
	}
	files := make([]*descriptorpb.FileDescriptorProto, 0, len(fr.GetFileDescriptorProto()))
	for _, b := range fr.GetFileDescriptorProto() {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fd); err != nil {
			return nil, fmt.Errorf("reflection: bad file descriptor: %w", err)
		}
		files = append(files, fd)
	}
	return files, nil
}

// fetchFiles fetches the file that defines symbol and every file it imports, transitively, that
// known does not already hold, and returns a new registry holding known's files plus the new ones.
// known itself is never modified. A well-known-type file (google/protobuf/...) the server cannot
// serve is taken from the descriptors linked into this binary, since protoc ships them with every
// compiler and they never differ.
func fetchFiles(s reflectionStream, known *protoregistry.Files, symbol string) (*protoregistry.Files, bool, error) {
	fetched := map[string]*descriptorpb.FileDescriptorProto{}
	add := func(fds []*descriptorpb.FileDescriptorProto) {
		for _, fd := range fds {
			if _, err := known.FindFileByPath(fd.GetName()); err == nil {
				continue
			}
			if _, ok := fetched[fd.GetName()]; !ok {
				fetched[fd.GetName()] = fd
			}
		}
	}
	fds, err := fileRequest(s, symbol, "")
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return known, false, nil
		}
		return nil, false, fmt.Errorf("reflection: file containing %s: %w", symbol, err)
	}
	if len(fds) == 0 {
		// kstate's own reflection answers an unknown symbol with an empty response.
		return known, false, nil
	}
	add(fds)
	for {
		var missing []string
		for _, fd := range fetched {
			for _, dep := range fd.GetDependency() {
				if _, ok := fetched[dep]; ok {
					continue
				}
				if _, err := known.FindFileByPath(dep); err == nil {
					continue
				}
				missing = append(missing, dep)
			}
		}
		if len(missing) == 0 {
			break
		}
		for _, name := range missing {
			if _, ok := fetched[name]; ok {
				continue
			}
			fds, err := fileRequest(s, "", name)
			if err == nil && !containsFile(fds, name) {
				err = status.Error(codes.NotFound, "not served")
			}
			if err != nil {
				if wkt := linkedWellKnown(name); wkt != nil {
					fetched[name] = wkt
					continue
				}
				return nil, false, fmt.Errorf("reflection: file %s: %w", name, err)
			}
			add(fds)
		}
	}

	files := &protoregistry.Files{}
	var copyErr error
	known.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if err := files.RegisterFile(fd); err != nil {
			copyErr = err
			return false
		}
		return true
	})
	if copyErr != nil {
		return nil, false, fmt.Errorf("reflection: %w", copyErr)
	}
	state := map[string]int{} // 1: in progress, 2: done
	var register func(name string) error
	register = func(name string) error {
		fd, ok := fetched[name]
		if !ok || state[name] == 2 {
			return nil // already known, or done
		}
		if state[name] == 1 {
			return fmt.Errorf("import cycle through %s", name)
		}
		state[name] = 1
		for _, dep := range fd.GetDependency() {
			if err := register(dep); err != nil {
				return err
			}
		}
		d, err := protodesc.NewFile(fd, files)
		if err != nil {
			return fmt.Errorf("file %s: %w", name, err)
		}
		if err := files.RegisterFile(d); err != nil {
			return fmt.Errorf("file %s: %w", name, err)
		}
		state[name] = 2
		return nil
	}
	for name := range fetched {
		if err := register(name); err != nil {
			return nil, false, fmt.Errorf("reflection: %w", err)
		}
	}
	return files, true, nil
}

func containsFile(fds []*descriptorpb.FileDescriptorProto, name string) bool {
	for _, fd := range fds {
		if fd.GetName() == name {
			return true
		}
	}
	return false
}

// linkedWellKnown returns the linked-in descriptor of a well-known-type file, or nil.
func linkedWellKnown(name string) *descriptorpb.FileDescriptorProto {
	if !strings.HasPrefix(name, "google/protobuf/") {
		return nil
	}
	fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
	if err != nil {
		return nil
	}
	return protodesc.ToFileDescriptorProto(fd)
}

// isUnimplemented reports whether err says the server lacks the called service.
func isUnimplemented(err error) bool {
	var rerr *RPCError
	if errors.As(err, &rerr) {
		return rerr.Code() == codes.Unimplemented
	}
	return status.Code(err) == codes.Unimplemented
}

// Types fetches, over reflection, the files declaring the named messages (full names) and what
// they import, and returns the types of every file fetched so far. A name the server does not
// know is skipped: its messages are simply not in the result.
func (c *Client) Types(ctx context.Context, names ...string) (*dynamicpb.Types, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := openReflection(ctx, c.conn, c.alpha)
	if err != nil {
		return nil, fmt.Errorf("reflection: %w", asRPC(err))
	}
	files := c.files.Load()
	for _, name := range names {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err == nil {
			continue
		}
		next, _, err := fetchFiles(s, files, name)
		if err != nil {
			return nil, asRPC(err)
		}
		files = next
	}
	c.files.Store(files)
	return dynamicpb.NewTypes(files), nil
}
