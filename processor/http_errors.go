package processor

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"

	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
)

// restErrorWriter passes a REST response through, except that it holds an error answer back until
// the call is over, so that finish can correct its code. Vanguard v0.4.0 reports some malformed
// requests (an unknown query parameter, a body on a rule without one) with a plain error, which it
// renders as gRPC UNKNOWN and HTTP 500: the client would see a server failure for its own mistake.
type restErrorWriter struct {
	w    http.ResponseWriter
	code int
	held *bytes.Buffer // the error body held back; nil when passing through
}

func (e *restErrorWriter) Header() http.Header { return e.w.Header() }

func (e *restErrorWriter) WriteHeader(code int) {
	if e.code != 0 {
		return
	}
	e.code = code
	if code >= 400 {
		e.held = &bytes.Buffer{}
		return
	}
	e.w.WriteHeader(code)
}

func (e *restErrorWriter) Write(p []byte) (int, error) {
	if e.code == 0 {
		e.WriteHeader(http.StatusOK)
	}
	if e.held != nil {
		if e.held.Len() < 1<<20 {
			e.held.Write(p)
		}
		return len(p), nil
	}
	return e.w.Write(p)
}

// Flush flushes a response passing through (vanguard streams google.api.HttpBody responses).
func (e *restErrorWriter) Flush() {
	if e.code != 0 && e.held == nil {
		_ = http.NewResponseController(e.w).Flush()
	}
}

// Unwrap returns the client's writer, for http.ResponseController.
func (e *restErrorWriter) Unwrap() http.ResponseWriter { return e.w }

// finish sends a held error answer. An UNKNOWN error that the gRPC server did not produce (it was
// not reached, or it ended the call with another code, having received no request because
// vanguard failed to build it) is the client's fault: it becomes INVALID_ARGUMENT, HTTP 400.
func (e *restErrorWriter) finish(call *restCall) {
	if e.held == nil {
		return
	}
	code, body := e.code, e.held.Bytes()
	if call.reached && call.grpcCode != strconv.Itoa(int(codes.Unknown)) {
		code, body = asInvalidArgument(code, body)
	}
	h := e.w.Header()
	h.Del("Content-Length")
	// The gRPC side of the transcoder wrote its own headers into the shared map; a REST client
	// gets a JSON error, not gRPC framing details.
	for k := range h {
		if strings.HasPrefix(k, "Grpc-") {
			delete(h, k)
		}
	}
	if len(body) > 0 && body[0] == '{' {
		h.Set("Content-Type", "application/json")
	}
	e.w.WriteHeader(code)
	_, _ = e.w.Write(body)
}

// asInvalidArgument turns an error answer of vanguard's that says UNKNOWN (a google.rpc.Status
// JSON body with code 2) into INVALID_ARGUMENT with HTTP status 400. Other answers are returned
// unchanged.
func asInvalidArgument(code int, body []byte) (int, []byte) {
	if code != http.StatusInternalServerError && code != http.StatusBadGateway {
		return code, body
	}
	var st statuspb.Status
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &st); err != nil || st.GetCode() != int32(codes.Unknown) {
		return code, body
	}
	st.Code = int32(codes.InvalidArgument)
	fixed, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(&st)
	if err != nil {
		return code, body
	}
	return http.StatusBadRequest, fixed
}

// HTTPStatusFromCode maps a gRPC status code to the HTTP status the front door answers with, the
// same table vanguard (and grpc-gateway) use: Unknown, Internal and DataLoss → 500,
// InvalidArgument, FailedPrecondition and OutOfRange → 400, NotFound → 404, Unimplemented → 501,
// Unavailable → 503, DeadlineExceeded → 504, and so on.
func HTTPStatusFromCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// codeFromHTTPStatus maps the HTTP status of a non-gRPC answer of the gRPC server to a code.
func codeFromHTTPStatus(code int) codes.Code {
	switch code {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Internal
}
