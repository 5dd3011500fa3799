package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kstatehq/kstate/internal/grpccall"
)

// httpDo sends one request to the node's HTTP/JSON front door and returns status and body.
func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// protojson varies its whitespace on purpose: compare compacted JSON.
	var buf bytes.Buffer
	if json.Compact(&buf, b) == nil {
		b = buf.Bytes()
	}
	return resp.StatusCode, string(b)
}

// TestHTTPShoppingCart drives Cloudstate's shopping-cart HTTP rules and the default route through
// a real HTTP client against a running `kstate serve`, and lists its services over reflection.
func TestHTTPShoppingCart(t *testing.T) {
	if testing.Short() {
		t.Skip("separate process: not in -short")
	}
	c := newCluster(t, 1)
	base := "http://" + c.nodes[0].addr

	steps := []struct {
		method, path, body string
		status             int
		want               string // substring of the body; "" = anything
	}{
		{"POST", "/cart/ann/items/add", `{"product_id":"apple","name":"Apple","quantity":3}`, 200, "{}"},
		{"POST", "/cart/ann/items/add", `{"product_id":"pear","name":"Pear","quantity":1}`, 200, "{}"},
		{"GET", "/carts/ann", "", 200, `{"items":[{"productId":"apple","name":"Apple","quantity":3},{"productId":"pear","name":"Pear","quantity":1}]}`},
		{"GET", "/carts/ann/items", "", 200, `[{"productId":"apple","name":"Apple","quantity":3},{"productId":"pear","name":"Pear","quantity":1}]`},
		{"POST", "/cart/ann/items/pear/remove", "", 200, "{}"},
		// The default route, for any method.
		{"POST", "/com.example.shoppingcart.ShoppingCart/GetCart", `{"user_id":"ann"}`, 200, `{"items":[{"productId":"apple","name":"Apple","quantity":3}]}`},
		// A command failure is HTTP 500 with the failure description in the body.
		{"POST", "/cart/ann/items/add", `{"product_id":"apple","name":"Apple","quantity":0}`, 500, "Quantity for item apple must be greater than zero."},
		{"POST", "/cart/ann/items/kiwi/remove", "", 500, "Cannot remove item kiwi because it is not in the cart."},
		// Bad input is the client's fault.
		{"POST", "/cart/ann/items/add", `{"quantity":"many"}`, 400, ""},
		{"GET", "/no/such/route", "", 404, ""},
	}
	for _, s := range steps {
		code, body := httpDo(t, s.method, base+s.path, s.body)
		if code != s.status || !strings.Contains(body, s.want) {
			t.Fatalf("%s %s: %d %s, want %d containing %s", s.method, s.path, code, body, s.status, s.want)
		}
		if code == 500 {
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != 2 || e.Message != s.want {
				t.Fatalf("error body %s: want code 2 (UNKNOWN) and message %q", body, s.want)
			}
		}
	}

	// Reflection lists the user's services, as grpcurl would.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := grpccall.New(ctx, c.nodes[0].cc)
	if err != nil {
		t.Fatal(err)
	}
	if svcs := rc.Services(); !slices.Contains(svcs, "com.example.shoppingcart.ShoppingCart") {
		t.Fatalf("reflection lists %v, want the shopping cart among them", svcs)
	}
}
