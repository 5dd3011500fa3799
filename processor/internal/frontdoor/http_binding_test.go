package frontdoor

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// TestHTTPPathBinding proves that a field bound by the URL path cannot be given another value by a
// query parameter or the body (GET /carts/alice?user_id=bob must not read bob's cart), while the
// same value repeated is accepted.
func TestHTTPPathBinding(t *testing.T) {
	s := startHTTPTest(t)
	n := s.d.count()
	for _, c := range []struct{ method, path, body, field string }{
		{"GET", "/carts/alice?user_id=bob", "", "user_id"},
		{"GET", "/carts/alice?userId=bob", "", "user_id"}, // the JSON name
		{"GET", "/carts/alice?user_id=alice&user_id=bob", "", "user_id"},
		{"GET", "/carts/alice/items?user_id=bob", "", "user_id"}, // an additional binding
		{"POST", "/cart/alice/items/add?user_id=bob", `{"product_id":"p1","quantity":1}`, "user_id"},
		{"POST", "/cart/alice/items/add", `{"user_id":"bob","product_id":"p1","quantity":1}`, "user_id"},
		{"POST", "/cart/alice/items/add", `{"userId":"bob","product_id":"p1","quantity":1}`, "user_id"},
		{"POST", "/cart/alice/items/p1/remove?product_id=p2", "", "product_id"},
		{"GET", "/counters/c1/watch?id=c2", "", "id"}, // a server-streaming method
		{"PUT", "/shelves/s1/items/i1?item.id=i2", `{"name":"n"}`, "item.id"},
		{"PUT", "/shelves/s1/items/i1?shelf=s2", `{"name":"n"}`, "shelf"},
		{"PUT", "/shelves/s1/items/i1", `{"id":"i2","name":"n"}`, "item.id"}, // body: "item"
	} {
		resp, body := s.do(t, c.method, c.path, c.body)
		msg := httpExpectStatus(t, resp, body, http.StatusBadRequest, codes.InvalidArgument)
		if !strings.Contains(msg, c.field) {
			t.Fatalf("%s %s %s: message %q does not name the field %s", c.method, c.path, c.body, msg, c.field)
		}
	}
	if got := s.d.count(); got != n {
		t.Fatalf("the dispatcher received %d commands with conflicting fields", got-n)
	}

	for _, c := range []struct{ method, path, body, id string }{
		{"GET", "/carts/alice?user_id=alice", "", "alice"},
		{"GET", "/carts/alice?userId=alice&user_id=alice", "", "alice"},
		{"POST", "/cart/alice/items/add?user_id=alice", `{"user_id":"alice","product_id":"p1","quantity":1}`, "alice"},
		{"POST", "/cart/alice/items/add", `{"userId":"alice","productId":"p1","quantity":1}`, "alice"},
		{"POST", "/cart/alice/items/add", `{"user_id":null,"productId":"p1","quantity":1}`, "alice"},
		{"POST", "/com.example.shoppingcart.ShoppingCart/GetCart", `{"user_id":"bob"}`, "bob"}, // no path variable
		{"PUT", "/shelves/s1/items/i1?item.name=n&shelf=s1", `{"id":"i1"}`, ""},
	} {
		resp, body := s.do(t, c.method, c.path, c.body)
		httpExpect(t, resp, body, http.StatusOK)
		if call := s.d.last(t); call.id != c.id {
			t.Fatalf("%s %s %s: entity %q, want %q", c.method, c.path, c.body, call.id, c.id)
		}
	}
	if c := s.d.last(t); httpFieldOf(c.msg, "shelf") != "s1" || !strings.Contains(c.msg.String(), `"i1"`) || !strings.Contains(c.msg.String(), `"n"`) {
		t.Fatalf("PutItem command %v", c.msg)
	}
}
