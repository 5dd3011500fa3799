package frontdoor

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/kstatehq/kstate/internal/testpb"
)

// TestHTTPBodyTooLarge proves that a body over the limit is answered with 413 and a
// RESOURCE_EXHAUSTED status before the client has sent all of it, whether its length is declared
// or chunked.
func TestHTTPBodyTooLarge(t *testing.T) {
	const limit = 1024
	s := startHTTPTest(t, func(h *httpHandler) { h.maxBody = limit })
	big := `{"productId":"` + strings.Repeat("x", 2*limit) + `"}`

	resp, body := s.do(t, "POST", "/cart/u1/items/add", big)
	httpExpectStatus(t, resp, body, http.StatusRequestEntityTooLarge, codes.ResourceExhausted)

	// Declared: the answer comes without a byte of the body.
	resp, body = s.raw(t, "POST /cart/u1/items/add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: 104857600\r\n\r\n")
	httpExpectStatus(t, resp, body, http.StatusRequestEntityTooLarge, codes.ResourceExhausted)

	// Chunked: the answer comes once the limit is passed, the body unfinished.
	for _, path := range []string{"/cart/u1/items/add", "/kstate.test.v1.ActionTest/StreamedOut"} {
		resp, body = s.raw(t, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Transfer-Encoding: chunked\r\n\r\n", fmt.Sprintf("%x\r\n%s\r\n", len(big), big))
		httpExpectStatus(t, resp, body, http.StatusRequestEntityTooLarge, codes.ResourceExhausted)
	}

	// Within the limit is fine.
	resp, body = s.do(t, "POST", "/cart/u1/items/add", `{"productId":"p1","quantity":1}`)
	httpExpect(t, resp, body, http.StatusOK)
}

// TestHTTPBodyTimeout proves that a request body trickled too slowly does not hold the connection:
// the front door answers 408 with DEADLINE_EXCEEDED.
func TestHTTPBodyTimeout(t *testing.T) {
	s := startHTTPTest(t, func(h *httpHandler) { h.bodyTimeout = 300 * time.Millisecond })
	for _, path := range []string{"/cart/u1/items/add", "/kstate.test.v1.ActionTest/StreamedOut"} {
		start := time.Now()
		resp, body := s.raw(t, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Content-Length: 100\r\n\r\n{\"id\":")
		httpExpectStatus(t, resp, body, http.StatusRequestTimeout, codes.DeadlineExceeded)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%s: answered after %v", path, d)
		}
	}
	// Connect unary carries one message too: it gets the deadline, and an error in Connect's shape.
	start := time.Now()
	resp, body := s.raw(t, "POST /kstate.test.v1.EventSourcedTest/Process HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Connect-Protocol-Version: 1\r\nContent-Length: 100\r\n\r\n{\"id\":")
	if resp.StatusCode == http.StatusOK || time.Since(start) > 5*time.Second {
		t.Fatalf("Connect unary with a trickled body: %d %s after %v", resp.StatusCode, body, time.Since(start))
	}
	if s.d.count() != 0 {
		t.Fatal("a trickled body reached the dispatcher")
	}
}

// TestHTTPStreamOutlivesBodyTimeout proves that the body deadline ends with the body: a streamed
// response runs on for longer than the body timeout, over HTTP/1.1 and HTTP/2.
func TestHTTPStreamOutlivesBodyTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	defer h2.CloseIdleConnections()
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		s := startHTTPTest(t, func(h *httpHandler) { h.bodyTimeout = timeout })
		client := s.client
		if proto == "HTTP/2.0" {
			client = &http.Client{Transport: h2}
		}
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, "POST", s.base+"/kstate.httptest.v1.CounterService/Watch", strings.NewReader(`{"id":"hold"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Proto != proto {
			t.Fatalf("answered over %s, want %s", resp.Proto, proto)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.Contains(line, `"hold"`) {
			t.Fatalf("%s: first line %q: %v", proto, line, err)
		}
		select {
		case <-s.d.canceled:
			t.Fatalf("%s: the stream was canceled", proto)
		case <-time.After(4 * timeout):
		}
		cancel()
		select {
		case <-s.d.canceled:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the streamed call was not canceled when the HTTP client went away", proto)
		}
		_ = resp.Body.Close()
	}
}

// TestHTTPHeaderLimit proves that request headers are capped (net/http answers 431 itself).
func TestHTTPHeaderLimit(t *testing.T) {
	s := startHTTPTest(t)
	resp, body := s.do(t, "GET", "/carts/u1", "", "X-Big", strings.Repeat("x", 2*httpMaxHeaderBytes))
	httpExpect(t, resp, body, http.StatusRequestHeaderFieldsTooLarge)
	resp, body = s.do(t, "GET", "/carts/u1", "", "X-Fits", strings.Repeat("x", httpMaxHeaderBytes/2))
	httpExpect(t, resp, body, http.StatusOK)
}

func TestServeMuxTimeouts(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ServeMux(lis, http.NotFoundHandler())
	defer srv.Close()
	if srv.ReadHeaderTimeout != httpReadHeaderTimeout || srv.IdleTimeout != httpIdleTimeout || srv.MaxHeaderBytes != httpMaxHeaderBytes {
		t.Fatalf("ReadHeaderTimeout %v, IdleTimeout %v, MaxHeaderBytes %d", srv.ReadHeaderTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
	// No whole-request read or write timeout: streams may run for as long as they need.
	if srv.ReadTimeout != 0 || srv.WriteTimeout != 0 {
		t.Fatalf("ReadTimeout %v, WriteTimeout %v", srv.ReadTimeout, srv.WriteTimeout)
	}
}

// TestGRPCHeaderLimit proves that native gRPC calls on the shared port, which the split listener
// hands to grpc-go's own transport as the node does, have the same header limit as HTTP requests.
func TestGRPCHeaderLimit(t *testing.T) {
	d := &httpTestDispatcher{canceled: make(chan struct{})}
	gs := grpc.NewServer(NewIngress(httpTestCatalog(t), d, Limits{}).ServerOptions()...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	split := NewSplitListener(lis, nil)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(split.h2)
	}()
	defer func() {
		split.Close()
		gs.Stop()
		<-served
		split.wg.Wait()
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := testpb.NewEventSourcedTestClient(cc)
	fits := metadata.AppendToOutgoingContext(ctx, "x-fits", strings.Repeat("x", httpMaxHeaderBytes/2))
	if _, err := client.Process(fits, &testpb.Request{Id: "g"}); err != nil {
		t.Fatal(err)
	}
	big := metadata.AppendToOutgoingContext(ctx, "x-big", strings.Repeat("x", 2*httpMaxHeaderBytes))
	if _, err := client.Process(big, &testpb.Request{Id: "g"}); err == nil {
		t.Fatal("a call with headers over the limit succeeded")
	}
	if d.count() != 1 {
		t.Fatalf("the dispatcher received %d calls, want 1", d.count())
	}
}
