package frontdoor

import (
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
)

// TestHTTPJSONMediaTypes proves that JSON request bodies are recognised whatever the case of the
// media type and with a UTF-8 charset parameter, on unary and streaming routes, and that another
// charset is refused.
func TestHTTPJSONMediaTypes(t *testing.T) {
	s := startHTTPTest(t)
	for _, ct := range []string{
		"application/json",
		"application/json;charset=UTF-8",
		"Application/JSON",
		"application/json; charset=utf-8",
		`APPLICATION/JSON ; Charset="UTF-8"`,
	} {
		resp, body := s.do(t, "POST", "/cart/u1/items/add", `{"productId":"p1","quantity":1}`, "Content-Type", ct)
		httpExpect(t, resp, body, http.StatusOK)
		resp, body = s.do(t, "POST", "/kstate.test.v1.ActionTest/StreamedOut", `{"id":"a","payload":"x"}`, "Content-Type", ct)
		httpExpect(t, resp, body, http.StatusOK)
		if got := resp.Header.Get("Content-Type"); got != ContentTypeNDJSON {
			t.Fatalf("%q: a stream answered with Content-Type %q", ct, got)
		}
	}
	for _, ct := range []string{"application/json; charset=iso-8859-1", "text/plain", "application/jsonx", "application/json; charset=utf-16"} {
		n := s.d.count()
		resp, body := s.do(t, "POST", "/cart/u1/items/add", `{"productId":"p1","quantity":1}`, "Content-Type", ct)
		httpExpectStatus(t, resp, body, http.StatusUnsupportedMediaType, codes.InvalidArgument)
		if s.d.count() != n {
			t.Fatalf("%q: the request reached the dispatcher", ct)
		}
	}
}
