package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/status"
)

// HTTPError is a failed HTTP/JSON call: the response status and the start of its body.
type HTTPError struct {
	Status int
	Body   string
}

// Error names the status and quotes the body.
func (e *HTTPError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
}

// Code names an error for the error counts: "HTTP <status>" for an *HTTPError, the gRPC code
// (codes.Code's name, such as "Unavailable") for a gRPC status or a context error, and
// "Unknown" for anything else.
func Code(err error) string {
	if err == nil {
		return "OK"
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return fmt.Sprintf("HTTP %d", he.Status)
	}
	if st, ok := status.FromError(err); ok {
		return st.Code().String()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return status.FromContextError(err).Code().String()
	}
	return "Unknown"
}
