package frontdoor

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
)

// restRequest is what the front door keeps of a REST request to render its errors (vanguard
// removes headers from the request as it goes).
type restRequest struct {
	method, path string
	contentType  string
	body         *restBody // nil when the request has no body
	limit        int64
	timeout      time.Duration
}

// restErrorWriter passes a REST response through, except that it holds an error answer back until
// the call is over, so that finish can render it in the front door's error shape (see
// writeRESTError).
type restErrorWriter struct {
	w    http.ResponseWriter
	req  *restRequest
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
	writeRESTError(e.w, e.req, e.code, e.held.Bytes(), call.reached && call.grpcCode != strconv.Itoa(int(codes.Unknown)))
}

// writeRESTError sends an error answer of vanguard's (its HTTP status code and body; its headers
// are in w's map already) to a REST client in the front door's one error shape, a google.rpc.Status
// in JSON with Content-Type application/json:
//
//   - when the request body passed its limit or its read deadline, 413 RESOURCE_EXHAUSTED or
//     408 DEADLINE_EXCEEDED, whatever vanguard made of the failed read;
//   - a plain-text answer (vanguard's routing errors: 404, 405, 415, …) becomes the status of its
//     HTTP code (restCodeFromHTTPStatus), with a message naming the method and path;
//   - with fixUnknown, UNKNOWN becomes INVALID_ARGUMENT, HTTP 400 (asInvalidArgument);
//   - any other JSON answer is passed on.
//
// gRPC headers the transcoder wrote are removed: a REST client gets a JSON error, not gRPC
// framing details.
func writeRESTError(w http.ResponseWriter, req *restRequest, code int, body []byte, fixUnknown bool) {
	h := w.Header()
	switch {
	case req.body.tooLarge():
		code, body = http.StatusRequestEntityTooLarge, statusJSON(codes.ResourceExhausted, tooLargeMessage(req.limit))
		h.Set("Connection", "close")
	case req.body.timedOut():
		code, body = http.StatusRequestTimeout, statusJSON(codes.DeadlineExceeded, fmt.Sprintf("the request body did not arrive within %v", req.timeout))
		h.Set("Connection", "close")
	case mediaType(h.Get("Content-Type")) != "application/json" && !bytes.HasPrefix(body, []byte("{")):
		body = statusJSON(restCodeFromHTTPStatus(code), routingMessage(req, code, string(body), h.Get("Allow")))
	case fixUnknown:
		code, body = asInvalidArgument(code, body)
	}
	h.Del("Content-Length")
	for k := range h {
		if strings.HasPrefix(k, "Grpc-") {
			delete(h, k)
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// sendRESTStatus answers a REST request with HTTP status code and a google.rpc.Status JSON body.
func sendRESTStatus(w http.ResponseWriter, httpCode int, code codes.Code, msg string) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(httpCode)
	_, _ = w.Write(statusJSON(code, msg))
}

// statusJSON renders a google.rpc.Status as protojson, details included (empty).
func statusJSON(code codes.Code, msg string) []byte {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(&statuspb.Status{Code: int32(code), Message: msg})
	if err != nil {
		return []byte(`{"code":13,"message":"failed to render the error","details":[]}`)
	}
	return b
}

// tooLargeMessage is the message of a 413 answer.
func tooLargeMessage(limit int64) string {
	return fmt.Sprintf("the request body is larger than the limit of %d bytes", limit)
}

// routingMessage is the message of an error answer vanguard gave in plain text (text).
func routingMessage(req *restRequest, code int, text, allow string) string {
	switch code {
	case http.StatusNotFound:
		return fmt.Sprintf("no method is bound to %s %s", req.method, req.path)
	case http.StatusMethodNotAllowed:
		if allow == "" {
			return fmt.Sprintf("%s is not allowed on %s", req.method, req.path)
		}
		return fmt.Sprintf("%s is not allowed on %s; allowed: %s", req.method, req.path, allow)
	case http.StatusUnsupportedMediaType:
		if req.contentType != "" && mediaType(req.contentType) != "application/json" {
			return fmt.Sprintf("content type %q is not supported: send application/json", req.contentType)
		}
	}
	if t := strings.TrimSpace(text); t != "" {
		return t
	}
	return http.StatusText(code)
}

// restCodeFromHTTPStatus is the gRPC code of an error answer that only has an HTTP status: a
// routing or transport error of the front door, never one of the gRPC server.
func restCodeFromHTTPStatus(code int) codes.Code {
	switch code {
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return codes.Unimplemented
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge, http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return codes.Unavailable
	}
	if code >= 400 && code < 500 {
		return codes.InvalidArgument
	}
	return codes.Internal
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
