// Package grpccall calls any method of a gRPC server with a JSON request, learning the server's
// schema through gRPC server reflection: the engine of `kstate call`, so a newcomer needs neither
// protoc, generated code nor grpcurl to talk to a kstate node or a user function.
//
//	c, err := grpccall.New(ctx, conn) // lists the services (reflection v1, else v1alpha)
//	err = c.Call(ctx, "com.example.shoppingcart.ShoppingCart/AddItem",
//		[]byte(`{"cartId": "c1", "productId": "p1", "quantity": 2}`), nil, os.Stdout)
//
// Descriptors fetched from the server live in the Client's own registry, never in
// protoregistry.GlobalFiles, so a server's files cannot clash with those linked into the binary.
// Requests are built with dynamicpb and protojson; replies are printed as indented protojson, one
// JSON value per response message, written as each message arrives.
//
// Errors: *LookupError (ErrUnknownService, ErrUnknownMethod) lists what the server does have;
// *RequestError (ErrBadRequest) names the input type and quotes protojson; *RPCError carries the
// gRPC status the call ended with.
package grpccall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Client calls methods on one gRPC connection, using the server's reflection service to learn the
// methods' types. Descriptors are fetched per service on first use and cached. A Client is safe
// for concurrent use; it starts no goroutines that outlive a call and does not own conn.
type Client struct {
	conn     grpc.ClientConnInterface
	alpha    bool     // the server only serves grpc.reflection.v1alpha
	services []string // as listed by the server, sorted

	mu    sync.Mutex                          // serializes descriptor fetches
	files atomic.Pointer[protoregistry.Files] // immutable once published; replaced, never mutated
}

// New asks the server behind conn for its services over gRPC reflection, v1 first, then v1alpha
// when the server does not implement v1. ctx bounds this exchange (and carries any outgoing
// metadata the server's reflection service requires). It fails with ErrNoReflection when the
// server implements neither version, and with *RPCError when the exchange fails otherwise, e.g.
// Unavailable when nothing listens.
func New(ctx context.Context, conn grpc.ClientConnInterface) (*Client, error) {
	c := &Client{conn: conn}
	c.files.Store(&protoregistry.Files{})
	names, err := c.listServices(ctx, false)
	if isUnimplemented(err) {
		c.alpha = true
		names, err = c.listServices(ctx, true)
		if isUnimplemented(err) {
			return nil, fmt.Errorf("%w (neither grpc.reflection.v1 nor v1alpha): %w", ErrNoReflection, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reflection: list services: %w", err)
	}
	slices.Sort(names)
	c.services = slices.Compact(names)
	return c, nil
}

func (c *Client) listServices(ctx context.Context, alpha bool) ([]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := openReflection(ctx, c.conn, alpha)
	if err != nil {
		return nil, asRPC(err)
	}
	names, err := listServices(s)
	if err != nil {
		return nil, asRPC(err)
	}
	return names, nil
}

// Services returns the full names of the services the server listed, sorted. The list includes
// the reflection service itself.
func (c *Client) Services() []string { return slices.Clone(c.services) }

// Service returns the descriptor of the named service (a full name such as
// "kstate.test.v1.ActionTest"), fetching its file and the files it imports on first use. A service
// the server cannot describe yields *LookupError (ErrUnknownService) listing Services.
func (c *Client) Service(ctx context.Context, name string) (protoreflect.ServiceDescriptor, error) {
	if sd := findService(c.files.Load(), name); sd != nil {
		return sd, nil
	}
	unknown := &LookupError{Kind: ErrUnknownService, Name: name, Available: c.Services()}
	if !protoreflect.FullName(name).IsValid() {
		return nil, unknown
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	known := c.files.Load()
	if sd := findService(known, name); sd != nil {
		return sd, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := openReflection(ctx, c.conn, c.alpha)
	if err != nil {
		return nil, fmt.Errorf("reflection: %w", asRPC(err))
	}
	files, found, err := fetchFiles(s, known, name)
	if err != nil {
		return nil, asRPC(err)
	}
	if !found {
		return nil, unknown
	}
	c.files.Store(files)
	if sd := findService(files, name); sd != nil {
		return sd, nil
	}
	return nil, unknown // the name is a message, enum or field, not a service
}

func findService(files *protoregistry.Files, name string) protoreflect.ServiceDescriptor {
	d, err := files.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil
	}
	sd, _ := d.(protoreflect.ServiceDescriptor)
	return sd
}

// Method returns the descriptor of a method named in any form ParseMethod accepts. An unknown
// service yields *LookupError (ErrUnknownService), an unknown method *LookupError
// (ErrUnknownMethod) listing the service's methods.
func (c *Client) Method(ctx context.Context, name string) (protoreflect.MethodDescriptor, error) {
	svc, m, err := ParseMethod(name)
	if err != nil {
		return nil, err
	}
	sd, err := c.Service(ctx, svc)
	if err != nil {
		return nil, err
	}
	if md := sd.Methods().ByName(protoreflect.Name(m)); md != nil {
		return md, nil
	}
	methods := make([]string, 0, sd.Methods().Len())
	for i := range sd.Methods().Len() {
		methods = append(methods, string(sd.Methods().Get(i).Name()))
	}
	slices.Sort(methods)
	return nil, &LookupError{Kind: ErrUnknownMethod, Name: svc + "/" + m, Available: methods}
}

// ParseMethod splits a method name into the service's full name and the method's name. It accepts
// "pkg.Service/Method", the gRPC path "/pkg.Service/Method" and the dotted "pkg.Service.Method".
func ParseMethod(name string) (service, method string, err error) {
	t := strings.TrimPrefix(name, "/")
	i := strings.LastIndexByte(t, '/')
	if i < 0 {
		i = strings.LastIndexByte(t, '.')
	}
	if i > 0 {
		service, method = t[:i], t[i+1:]
	}
	if !protoreflect.FullName(service).IsValid() || !protoreflect.Name(method).IsValid() {
		return "", "", fmt.Errorf("%w %q: want pkg.Service/Method", ErrMethodName, name)
	}
	return service, method, nil
}

// Call invokes method (any form ParseMethod accepts) with the request in jsonReq, adds md to the
// call's outgoing metadata, and writes each response message to out as indented protojson
// (unpopulated fields omitted; 64-bit integers as strings, as protojson does) followed by a
// newline, as soon as it arrives.
//
// jsonReq holds one JSON object in protojson's mapping; empty or blank input means {}. For a
// client-streaming or bidirectional method it may hold several objects one after another (any
// whitespace between them), each sent as one message; their sending runs alongside the printing
// of replies. Unary and server-streaming methods take exactly one.
//
// A request that does not fit the input type yields *RequestError and nothing is sent. A call
// that ends with a non-OK status yields *RPCError, after any messages received before it were
// written. ctx bounds the whole call, including any descriptor fetch.
func (c *Client) Call(ctx context.Context, method string, jsonReq []byte, md metadata.MD, out io.Writer) error {
	m, err := c.Method(ctx, method)
	if err != nil {
		return err
	}
	types := dynamicpb.NewTypes(c.files.Load()) // this snapshot already holds m's files
	reqs, err := decodeRequests(m, jsonReq, types)
	if err != nil {
		return err
	}
	if len(md) > 0 {
		if prev, ok := metadata.FromOutgoingContext(ctx); ok {
			md = metadata.Join(prev, md)
		}
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sd := m.Parent().(protoreflect.ServiceDescriptor)
	desc := &grpc.StreamDesc{
		StreamName:    string(m.Name()),
		ServerStreams: m.IsStreamingServer(),
		ClientStreams: m.IsStreamingClient(),
	}
	stream, err := c.conn.NewStream(ctx, desc, "/"+string(sd.FullName())+"/"+string(m.Name()))
	if err != nil {
		return rpcError(err)
	}

	send := func() error {
		for _, r := range reqs {
			if err := stream.SendMsg(r); err != nil {
				return err
			}
		}
		return stream.CloseSend()
	}
	var (
		wg      sync.WaitGroup
		sendErr error
	)
	if desc.ClientStreams {
		// The server may answer while we send; reading replies meanwhile keeps flow control from
		// stalling both sides.
		wg.Go(func() { sendErr = send() })
	} else {
		sendErr = send()
	}

	recvErr := func() error {
		for {
			resp := dynamicpb.NewMessage(m.Output())
			err := stream.RecvMsg(resp)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return rpcError(err)
			}
			if err := writeMessage(out, resp, types); err != nil {
				return err
			}
			if !desc.ServerStreams {
				return nil // RecvMsg already checked that the stream ended with OK
			}
		}
	}()
	cancel()
	wg.Wait()
	if recvErr != nil {
		return recvErr
	}
	// io.EOF from SendMsg means the stream ended; RecvMsg reported how.
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		if _, ok := status.FromError(sendErr); ok {
			return rpcError(sendErr)
		}
		return fmt.Errorf("send: %w", sendErr)
	}
	return nil
}

// decodeRequests parses data into messages of m's input type.
func decodeRequests(m protoreflect.MethodDescriptor, data []byte, types *dynamicpb.Types) ([]proto.Message, error) {
	in := m.Input().FullName()
	var raws []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &RequestError{Type: in, Err: err}
		}
		raws = append(raws, raw)
	}
	switch {
	case len(raws) == 0:
		raws = []json.RawMessage{json.RawMessage("{}")}
	case len(raws) > 1 && !m.IsStreamingClient():
		return nil, &RequestError{Type: in, Err: fmt.Errorf("%d JSON values given, but %s is not client-streaming and takes one", len(raws), m.Name())}
	}
	opts := protojson.UnmarshalOptions{Resolver: types}
	msgs := make([]proto.Message, 0, len(raws))
	for i, raw := range raws {
		msg := dynamicpb.NewMessage(m.Input())
		if err := opts.Unmarshal(raw, msg); err != nil {
			if len(raws) > 1 {
				err = fmt.Errorf("message %d: %w", i+1, err)
			}
			return nil, &RequestError{Type: in, Err: err}
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// writeMessage writes msg as protojson, indented by two spaces. protojson's own Multiline output
// varies its whitespace on purpose; re-indenting the compact form makes the output stable.
func writeMessage(out io.Writer, msg proto.Message, types *dynamicpb.Types) error {
	b, err := protojson.MarshalOptions{Resolver: types}.Marshal(msg)
	if err != nil {
		return fmt.Errorf("format %s: %w", msg.ProtoReflect().Descriptor().FullName(), err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return fmt.Errorf("format %s: %w", msg.ProtoReflect().Descriptor().FullName(), err)
	}
	buf.WriteByte('\n')
	if _, err := out.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

// asRPC wraps a gRPC status error as *RPCError and leaves other errors alone.
func asRPC(err error) error {
	if err == nil {
		return nil
	}
	var rerr *RPCError
	if errors.As(err, &rerr) {
		return err
	}
	if _, ok := status.FromError(err); ok {
		return rpcError(err)
	}
	return err
}
