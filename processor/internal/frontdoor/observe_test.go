package frontdoor

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/proctest"
)

type observation struct {
	protocol string
	code     codes.Code
}

// observingDispatcher is httpTestDispatcher that also observes calls (Observer).
type observingDispatcher struct {
	*httpTestDispatcher
	seen chan observation
}

func (d observingDispatcher) ObserveCall(protocol string, code codes.Code) {
	d.seen <- observation{protocol, code}
}

// next returns the next observation, failing the test after 10 s without one.
func (d observingDispatcher) next(t *testing.T) observation {
	t.Helper()
	select {
	case o := <-d.seen:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no call observed within 10s")
		return observation{}
	}
}

// TestObserveProtocols: the ingress tells an observing dispatcher how each call of the user's
// services ended and by which protocol it came — native gRPC, REST, Connect, gRPC-Web — also for
// the calls the HTTP front door answers without reaching the ingress; calls of services the
// gRPC server registers itself (health) are not observed.
func TestObserveProtocols(t *testing.T) {
	cat := httpTestCatalog(t)
	d := observingDispatcher{&httpTestDispatcher{canceled: make(chan struct{})}, make(chan observation, 16)}
	ing := NewIngress(cat, d, Limits{})
	gs := grpc.NewServer(ing.ServerOptions()...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	h, err := NewHTTPHandler(cat, gs, proctest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ServeMux(lis, ing.ObserveHTTP(h))
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		_ = srv.Close()
		gs.Stop()
	})
	s := &httpTestServer{d: d.httpTestDispatcher, addr: lis.Addr().String(), base: "http://" + lis.Addr().String(), client: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
	expect := func(what string, want observation) {
		t.Helper()
		if got := d.next(t); got != want {
			t.Fatalf("%s: observed %+v, want %+v", what, got, want)
		}
	}

	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := testpb.NewEventSourcedTestClient(cc).Process(ctx, &testpb.Request{Id: "g", Payload: "p"}); err != nil {
		t.Fatal(err)
	}
	expect("gRPC call (the health check before it is not a user call)", observation{ProtocolGRPC, codes.OK})
	_, _ = httpGRPCCartFail(ctx, cc)
	expect("gRPC command failure", observation{ProtocolGRPC, codes.Unknown})

	resp, body := s.do(t, "POST", "/cart/u1/items/add", `{"productId":"p1","name":"Apple","quantity":2}`)
	httpExpect(t, resp, body, 200)
	expect("REST call", observation{ProtocolHTTP, codes.OK})
	resp, body = s.do(t, "GET", "/no/such/route", "")
	httpExpectStatus(t, resp, body, 404, codes.NotFound)
	expect("REST call with no route", observation{ProtocolHTTP, codes.Unimplemented})
	resp, body = s.do(t, "POST", "/cart/u1/items/add", `{"productId":`)
	httpExpectStatus(t, resp, body, 400, codes.InvalidArgument)
	expect("REST call with malformed JSON", observation{ProtocolHTTP, codes.InvalidArgument})

	resp, body = s.do(t, "POST", "/kstate.test.v1.EventSourcedTest/Process", `{"id":"c"}`, "Connect-Protocol-Version", "1")
	httpExpect(t, resp, body, 200)
	expect("Connect call", observation{ProtocolConnect, codes.OK})
	resp, body = s.do(t, "POST", "/com.example.shoppingcart.ShoppingCart/GetCart", `{"userId":"fail"}`, "Connect-Protocol-Version", "1")
	httpExpect(t, resp, body, 500)
	expect("Connect command failure", observation{ProtocolConnect, codes.Unknown})

	msg, _ := proto.Marshal(&testpb.Request{Id: "w", Payload: "p"})
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	req, _ := http.NewRequest("POST", s.base+"/kstate.test.v1.EventSourcedTest/Process", bytes.NewReader(append(frame, msg...)))
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	wresp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, wresp.Body)
	_ = wresp.Body.Close()
	expect("gRPC-Web call", observation{ProtocolGRPCWeb, codes.OK})

	select {
	case o := <-d.seen:
		t.Fatalf("one call observed twice, or an extra call: %+v", o)
	default:
	}
}

func TestStatusWriterCode(t *testing.T) {
	for status, want := range map[int]codes.Code{
		0: codes.OK, 200: codes.OK, 400: codes.InvalidArgument, 401: codes.Unauthenticated, 403: codes.PermissionDenied,
		404: codes.Unimplemented, 405: codes.Unimplemented, 408: codes.DeadlineExceeded, 409: codes.Aborted,
		413: codes.ResourceExhausted, 415: codes.InvalidArgument, 429: codes.ResourceExhausted, 499: codes.Canceled,
		500: codes.Internal, 501: codes.Unimplemented, 503: codes.Unavailable, 504: codes.DeadlineExceeded,
	} {
		w := &statusWriter{ResponseWriter: &httpRecorder{header: http.Header{}}, status: status}
		if got := w.code(); got != want {
			t.Errorf("HTTP %d: %v, want %v", status, got, want)
		}
	}
	rec := &httpRecorder{header: http.Header{}}
	w := &statusWriter{ResponseWriter: rec, status: 200}
	w.Header().Set("Grpc-Status", "14")
	if got := w.code(); got != codes.Unavailable {
		t.Errorf("grpc-status 14: %v", got)
	}
}
