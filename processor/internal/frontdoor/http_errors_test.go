package frontdoor

import (
	"google.golang.org/grpc/codes"

	"net/http"
	"strings"
	"testing"
)

func TestHTTPErrors(t *testing.T) {
	s := startHTTPTest(t)

	// A command failure is gRPC UNKNOWN: HTTP 500 with the description in a google.rpc.Status body.
	resp, body := s.do(t, "GET", "/carts/fail", "")
	httpExpect(t, resp, body, 500)
	httpJSONEqual(t, body, `{"code":2,"message":"boom","details":[]}`)
	resp, body = s.do(t, "POST", "/com.example.shoppingcart.ShoppingCart/GetCart", `{"userId":"fail"}`)
	httpExpect(t, resp, body, 500)
	if !strings.Contains(body, `"boom"`) {
		t.Fatalf("body %s lacks the description", body)
	}

	n := s.d.count()
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/nope", ""},
		{"POST", "/kstate.test.v1.EventSourcedTest/Nope", `{}`},
		{"POST", "/kstate.test.v1.Unknown/Process", `{}`},
		{"GET", "/carts", ""},
		{"GET", "/carts/u1/items/extra", ""},
	} {
		resp, body := s.do(t, c.method, c.path, c.body)
		httpExpect(t, resp, body, 404)
	}

	// Bad JSON, unknown fields, wrong types: 400 before anything reaches the dispatcher.
	for _, body := range []string{`{"productId":`, `{"nope":1}`, `{"quantity":"many"}`, `[1]`} {
		resp, got := s.do(t, "POST", "/cart/u1/items/add", body)
		httpExpect(t, resp, got, 400)
		// A REST client gets a JSON error, with no gRPC framing headers.
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("bad request answered with Content-Type %q", ct)
		}
		for k := range resp.Header {
			if strings.HasPrefix(k, "Grpc-") {
				t.Fatalf("bad request answered with gRPC header %s: %v", k, resp.Header[k])
			}
		}
	}
	// A body on a rule without one, and an unknown query parameter (vanguard v0.4.0 reports both
	// as UNKNOWN; the front door corrects them).
	resp, body = s.do(t, "POST", "/cart/u1/items/p1/remove", `{"x":1}`)
	httpExpect(t, resp, body, 400)
	if !strings.Contains(body, "no body") || !strings.Contains(body, `"code":3`) {
		t.Fatalf("body %s", body)
	}
	resp, body = s.do(t, "GET", "/counters/c1?nope=1", "")
	httpExpect(t, resp, body, 400)
	resp, body = s.do(t, "GET", "/counters/c1/watch?nope=1", "")
	httpExpect(t, resp, body, 400)
	// A malformed query value.
	resp, body = s.do(t, "GET", "/counters/c1?value=abc", "")
	httpExpect(t, resp, body, 400)
	// Unsupported media type.
	resp, body = s.do(t, "POST", "/cart/u1/items/add", `x`, "Content-Type", "text/plain")
	httpExpect(t, resp, body, 415)
	if got := s.d.count(); got != n {
		t.Fatalf("the dispatcher received %d commands for rejected requests", got-n)
	}

	// A missing entity key is the ingress's InvalidArgument: 400 with its message.
	resp, body = s.do(t, "POST", "/kstate.test.v1.EventSourcedTest/Process", `{"payload":"p"}`)
	httpExpect(t, resp, body, 400)
	if !strings.Contains(body, "entity key") || !strings.Contains(body, `"code":3`) {
		t.Fatalf("body %s", body)
	}

	// Client streaming is not served over REST.
	resp, body = s.do(t, "POST", "/kstate.test.v1.ActionTest/StreamedIn", `{"id":"a"}`)
	httpExpect(t, resp, body, http.StatusUnsupportedMediaType)
}

// TestHTTPErrorBodies proves that every error answer of the front door to a REST request, routing
// errors included, is a google.rpc.Status in JSON.
func TestHTTPErrorBodies(t *testing.T) {
	s := startHTTPTest(t)
	for _, c := range []struct {
		method, path, body string
		status             int
		code               codes.Code
		hdr                []string
	}{
		{"GET", "/nope", "", http.StatusNotFound, codes.NotFound, nil},
		{"POST", "/kstate.test.v1.Unknown/Process", `{}`, http.StatusNotFound, codes.NotFound, nil},
		{"GET", "/carts/u1/items/extra", "", http.StatusNotFound, codes.NotFound, nil},
		{"GET", "/cart/u1/items/add", "", http.StatusMethodNotAllowed, codes.Unimplemented, nil},
		{"DELETE", "/carts/u1", "", http.StatusMethodNotAllowed, codes.Unimplemented, nil},
		{"POST", "/counters/c1/watch", "", http.StatusMethodNotAllowed, codes.Unimplemented, nil},
		{"POST", "/cart/u1/items/add", `x`, http.StatusUnsupportedMediaType, codes.InvalidArgument, []string{"Content-Type", "text/plain"}},
		{"POST", "/kstate.test.v1.ActionTest/StreamedIn", `{"id":"a"}`, http.StatusUnsupportedMediaType, codes.Unimplemented, nil},
		{"GET", "/carts/fail", "", http.StatusInternalServerError, codes.Unknown, nil},
		{"POST", "/cart/u1/items/add", `{"nope":1}`, http.StatusBadRequest, codes.InvalidArgument, nil},
		{"GET", "/counters/c1/watch?nope=1", "", http.StatusBadRequest, codes.InvalidArgument, nil},
	} {
		resp, body := s.do(t, c.method, c.path, c.body, c.hdr...)
		msg := httpExpectStatus(t, resp, body, c.status, c.code)
		if c.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
			t.Fatalf("%s %s: 405 without Allow", c.method, c.path)
		}
		t.Logf("%s %s: %d %s", c.method, c.path, c.status, msg)
	}
}
