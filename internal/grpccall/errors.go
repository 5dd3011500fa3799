package grpccall

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Sentinel errors. Test for them with errors.Is; the typed errors below carry the details.
var (
	// ErrNoReflection means the server serves neither grpc.reflection.v1 nor v1alpha.
	ErrNoReflection = errors.New("server does not support gRPC reflection")
	// ErrMethodName means a method name is not of the form "pkg.Service/Method",
	// "/pkg.Service/Method" or "pkg.Service.Method".
	ErrMethodName = errors.New("bad method name")
	// ErrUnknownService means the server does not list the named service. See *LookupError.
	ErrUnknownService = errors.New("unknown service")
	// ErrUnknownMethod means the service has no method of that name. See *LookupError.
	ErrUnknownMethod = errors.New("unknown method")
	// ErrBadRequest means the JSON request does not fit the method's input type. See *RequestError.
	ErrBadRequest = errors.New("bad request")
)

// LookupError reports a service or method that the server does not have, with the names it does
// have so the caller can correct a typo.
type LookupError struct {
	// Kind is ErrUnknownService or ErrUnknownMethod.
	Kind error
	// Name is the service's full name, or "service/Method" for a method.
	Name string
	// Available lists the server's services (for ErrUnknownService) or the service's methods (for
	// ErrUnknownMethod), sorted.
	Available []string
}

// Error lists the available names, one per line.
func (e *LookupError) Error() string {
	what := "services"
	if e.Kind == ErrUnknownMethod {
		what = "methods"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%v %q", e.Kind, e.Name)
	if len(e.Available) == 0 {
		fmt.Fprintf(&b, "; the server lists no %s", what)
		return b.String()
	}
	fmt.Fprintf(&b, "; available %s:", what)
	for _, n := range e.Available {
		b.WriteString("\n  ")
		b.WriteString(n)
	}
	return b.String()
}

// Unwrap returns Kind.
func (e *LookupError) Unwrap() error { return e.Kind }

// RequestError reports a JSON request that does not fit the method's input type.
type RequestError struct {
	// Type is the full name of the method's input message.
	Type protoreflect.FullName
	// Err is protojson's (or the JSON scanner's) complaint.
	Err error
}

// Error names the input type and quotes the underlying message.
func (e *RequestError) Error() string {
	return fmt.Sprintf("request does not fit %s: %v", e.Type, e.Err)
}

// Unwrap returns Err.
func (e *RequestError) Unwrap() error { return e.Err }

// Is reports whether target is ErrBadRequest.
func (e *RequestError) Is(target error) bool { return target == ErrBadRequest }

// RPCError is a gRPC status returned by the called method (or by the transport on its behalf,
// e.g. DeadlineExceeded or Unavailable).
type RPCError struct {
	// Status is the gRPC status, never nil and never OK.
	Status *status.Status
}

// Error returns "<code>: <message>", e.g. "NotFound: no such cart".
func (e *RPCError) Error() string {
	return fmt.Sprintf("%v: %s", e.Status.Code(), e.Status.Message())
}

// Code returns the status code.
func (e *RPCError) Code() codes.Code { return e.Status.Code() }

// GRPCStatus lets status.FromError and status.Code see the status.
func (e *RPCError) GRPCStatus() *status.Status { return e.Status }

// rpcError converts an error from a gRPC call into *RPCError.
func rpcError(err error) error {
	return &RPCError{Status: status.Convert(err)}
}
