package frontdoor

import (
	"fmt"
	"mime"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// isNativeGRPC reports whether r is a gRPC call the gRPC server can take as is: HTTP/2 and the
// protobuf codec. gRPC with another codec goes through vanguard, which transcodes it.
func isNativeGRPC(r *http.Request) bool {
	if r.ProtoMajor != 2 {
		return false
	}
	ct := mediaType(r.Header.Get("Content-Type"))
	return ct == "application/grpc" || ct == "application/grpc+proto"
}

// canonicalizeJSON rewrites a JSON Content-Type of h to "application/json". Media types are
// case-insensitive (RFC 9110 §8.3.1) and a charset parameter may be written in any case, quoted or
// not, with or without spaces, but vanguard v0.4.0 only recognises "application/json" and
// "application/json; charset=utf-8" verbatim and answers 415 to the rest. Parameters other than
// charset are dropped. It reports false for JSON declared in a charset other than UTF-8, which
// JSON does not allow (RFC 8259 §8.1); h is then left unchanged.
func canonicalizeJSON(h http.Header) bool {
	vs := h.Values("Content-Type")
	if len(vs) != 1 {
		return true
	}
	mt, params, err := mime.ParseMediaType(vs[0])
	if err != nil || mt != "application/json" {
		return true // vanguard answers what it answers to other types
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return false
	}
	h.Set("Content-Type", "application/json")
	return true
}

// streamingProtocol reports whether r uses an enveloped protocol, whose body is a stream of
// messages that may last as long as the call (gRPC, gRPC-Web, Connect streaming), rather than one
// message (REST, Connect unary).
func streamingProtocol(r *http.Request) bool {
	ct := mediaType(r.Header.Get("Content-Type"))
	return strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+")
}

// mediaType returns the media type of a Content-Type value, lower-cased, without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// isRESTRequest reports whether vanguard classifies r as REST rather than Connect, gRPC or gRPC-Web
// (the same tests as vanguard's classifyRequest).
func isRESTRequest(r *http.Request) bool {
	cts := r.Header.Values("Content-Type")
	if len(cts) > 1 {
		return false
	}
	if r.Header.Get("Connect-Protocol-Version") == "1" {
		return false
	}
	if len(cts) == 0 {
		return r.URL.Query().Get("connect") != "v1"
	}
	ct := cts[0]
	switch {
	case strings.HasPrefix(ct, "application/connect+"),
		ct == "application/grpc", strings.HasPrefix(ct, "application/grpc+"),
		ct == "application/grpc-web", strings.HasPrefix(ct, "application/grpc-web+"):
		return false
	case strings.HasPrefix(ct, "application/"):
		return r.URL.Query().Get("connect") != "v1"
	}
	return true
}

// restJSONCodec is vanguard's JSON codec whose decoding errors are InvalidArgument: vanguard
// v0.4.0 passes a codec's error on unchanged, and reports an error that is not a *connect.Error as
// Unknown (HTTP 502), so a malformed request body would look like a server failure.
type restJSONCodec struct {
	*vanguard.JSONCodec
}

// Unmarshal decodes JSON into msg.
func (c restJSONCodec) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(data, msg); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body: %w", err))
	}
	return nil
}

// UnmarshalField decodes JSON into one field of msg (a rule whose body names a field).
func (c restJSONCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(data, msg, field); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body field %s: %w", field.Name(), err))
	}
	return nil
}
