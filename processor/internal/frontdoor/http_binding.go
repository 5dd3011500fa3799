package frontdoor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkRoute checks a REST request against the route it matches, if any, before vanguard decodes
// it, and answers it when it fails:
//
//   - a client- or bidi-streaming method is 415 UNIMPLEMENTED: REST serves unary and
//     server-streaming methods only;
//   - a query parameter or a body field that gives a path-bound field another value, or sets a
//     part of it, is 400 INVALID_ARGUMENT naming the field (restRoute.checkBinding). The body is
//     read for that, and replayed to vanguard, only when the route's body may set a path-bound
//     field.
//
// It reports whether the request may go on.
func (h *httpHandler) checkRoute(w http.ResponseWriter, r *http.Request, req *restRequest) bool {
	route, segs := h.routes.match(r.Method, r.URL.Path)
	if route == nil {
		return true // vanguard answers 404 or 405
	}
	if md := route.method; md.IsStreamingClient() {
		kind := "client-streaming"
		if md.IsStreamingServer() {
			kind = "bidirectional-streaming"
		}
		sendRESTStatus(w, http.StatusUnsupportedMediaType, codes.Unimplemented, fmt.Sprintf(
			"%s is a %s method: REST serves unary and server-streaming methods; call it over gRPC, gRPC-Web or Connect", md.FullName(), kind))
		return false
	}
	var body []byte
	if mt := mediaType(r.Header.Get("Content-Type")); req.body != nil && route.needsBody() && (mt == "" || mt == "application/json") {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			writeRESTError(w, req, http.StatusBadRequest, statusJSON(codes.InvalidArgument, "cannot read the request body: "+err.Error()), false)
			return false
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if msg := route.checkBinding(segs, r.URL.Query(), body); msg != "" {
		sendRESTStatus(w, http.StatusBadRequest, codes.InvalidArgument, msg)
		return false
	}
	return true
}

// checkBinding returns an INVALID_ARGUMENT message when a query parameter or the body (body, nil
// when not read) gives a field bound by the path (segs) a value other than the path's, or sets a
// part of it, and "" otherwise. The same value, written the same way, is allowed.
func (r *restRoute) checkBinding(segs []string, query url.Values, body []byte) string {
	for _, v := range r.vars {
		want, err := v.value(segs)
		if err != nil {
			return "" // match has checked every variable
		}
		name := fieldPathName(v.fields)
		for _, key := range slices.Sorted(maps.Keys(query)) {
			vals := query[key]
			fields, err := resolveFieldPath(r.method.Input(), key, true)
			if err != nil {
				continue // vanguard rejects the parameter itself
			}
			same, overlap := compareFieldPaths(fields, v.fields)
			if !overlap {
				continue
			}
			if !same {
				return fmt.Sprintf("field %s is bound by the URL path: query parameter %s must not set a part of it", name, key)
			}
			for _, got := range vals {
				if got != want {
					return fmt.Sprintf("field %s is bound by the URL path to %q: query parameter %s must not set it to %q", name, want, key, got)
				}
			}
		}
		if body == nil {
			continue
		}
		rel, inBody := fieldsUnder(v.fields, r.body)
		if !inBody {
			continue
		}
		raw, ok := jsonAt(body, rel)
		if !ok {
			continue
		}
		if got, ok := jsonScalarText(raw); ok && got != want {
			return fmt.Sprintf("field %s is bound by the URL path to %q: the body must not set it to %q", name, want, got)
		}
	}
	return ""
}

// needsBody reports whether checkBinding needs the request body: a path variable binds a field the
// body may set, and the body is JSON (not a google.api.HttpBody).
func (r *restRoute) needsBody() bool {
	if !r.hasBody {
		return false
	}
	target := r.method.Input()
	if len(r.body) > 0 {
		target = r.body[len(r.body)-1].Message()
	}
	if target != nil && target.FullName() == "google.api.HttpBody" {
		return false
	}
	for _, v := range r.vars {
		if _, ok := fieldsUnder(v.fields, r.body); ok {
			return true
		}
	}
	return false
}

// fieldsUnder returns the rest of path below prefix, and whether path starts with prefix.
func fieldsUnder(path, prefix []protoreflect.FieldDescriptor) ([]protoreflect.FieldDescriptor, bool) {
	if len(path) < len(prefix) {
		return nil, false
	}
	for i, f := range prefix {
		if path[i].FullName() != f.FullName() {
			return nil, false
		}
	}
	return path[len(prefix):], true
}

// compareFieldPaths reports whether a and b are the same field path, and whether one starts with
// the other.
func compareFieldPaths(a, b []protoreflect.FieldDescriptor) (same, overlap bool) {
	if len(a) > len(b) {
		a, b = b, a
	}
	if _, ok := fieldsUnder(b, a); !ok {
		return false, false
	}
	return len(a) == len(b), true
}

// jsonAt returns the JSON value at a field path inside a JSON object, each field found by its JSON
// name or its proto name (protojson accepts both), and whether it is there.
func jsonAt(raw []byte, fields []protoreflect.FieldDescriptor) (json.RawMessage, bool) {
	for _, f := range fields {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, false // not an object (or null): vanguard rejects it or there is nothing set
		}
		v, ok := obj[f.JSONName()]
		if !ok {
			v, ok = obj[string(f.Name())]
		}
		if !ok {
			return nil, false
		}
		raw = v
	}
	return raw, true
}

// jsonScalarText returns the text of a JSON value as a path or query parameter would carry it:
// a string's contents, a number or boolean as written. It reports false for null, which leaves
// the field unset.
func jsonScalarText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0, string(raw) == "null":
		return "", false
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return string(raw), true
		}
		return s, true
	}
	return string(raw), true
}

// fieldPathName renders a field path with proto names, "item.id".
func fieldPathName(fields []protoreflect.FieldDescriptor) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = string(f.Name())
	}
	return strings.Join(names, ".")
}
