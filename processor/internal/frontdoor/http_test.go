package frontdoor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/proctest"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// httpField returns a field descriptor proto; key marks it (cloudstate.entity_key).
func httpField(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string, repeated, key bool) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{
		Name:   proto.String(name),
		Number: proto.Int32(num),
		Type:   typ.Enum(),
		Label:  descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
	}
	if repeated {
		f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	if key {
		f.Options = &descriptorpb.FieldOptions{}
		proto.SetExtension(f.Options, cloudstatepb.E_EntityKey, true)
	}
	return f
}

// httpMethod returns a method descriptor proto with an optional google.api.http rule.
func httpMethod(name, in, out string, clientStream, serverStream bool, rule *annotations.HttpRule) *descriptorpb.MethodDescriptorProto {
	m := &descriptorpb.MethodDescriptorProto{Name: proto.String(name), InputType: proto.String(in), OutputType: proto.String(out)}
	if clientStream {
		m.ClientStreaming = proto.Bool(true)
	}
	if serverStream {
		m.ServerStreaming = proto.Bool(true)
	}
	if rule != nil {
		m.Options = &descriptorpb.MethodOptions{}
		proto.SetExtension(m.Options, annotations.E_Http, rule)
	}
	return m
}

const (
	httpTString = descriptorpb.FieldDescriptorProto_TYPE_STRING
	httpTInt32  = descriptorpb.FieldDescriptorProto_TYPE_INT32
	httpTInt64  = descriptorpb.FieldDescriptorProto_TYPE_INT64
	httpTMsg    = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
)

// httpCartFile is examples/shoppingcart/shoppingcart.proto, built by hand: processor tests may not
// import examples/ (internal/lint), and a descriptor built at run time is what a user function in
// another language ships anyway.
func httpCartFile() *descriptorpb.FileDescriptorProto {
	const pkg = ".com.example.shoppingcart."
	return &descriptorpb.FileDescriptorProto{
		Name:       proto.String("shoppingcart.proto"),
		Package:    proto.String("com.example.shoppingcart"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"cloudstate/entity_key.proto", "google/api/annotations.proto", "google/protobuf/empty.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("AddLineItem"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("user_id", 1, httpTString, "", false, true),
				httpField("product_id", 2, httpTString, "", false, false),
				httpField("name", 3, httpTString, "", false, false),
				httpField("quantity", 4, httpTInt32, "", false, false),
			}},
			{Name: proto.String("RemoveLineItem"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("user_id", 1, httpTString, "", false, true),
				httpField("product_id", 2, httpTString, "", false, false),
			}},
			{Name: proto.String("GetShoppingCart"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("user_id", 1, httpTString, "", false, true),
			}},
			{Name: proto.String("LineItem"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("product_id", 1, httpTString, "", false, false),
				httpField("name", 2, httpTString, "", false, false),
				httpField("quantity", 3, httpTInt32, "", false, false),
			}},
			{Name: proto.String("Cart"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("items", 1, httpTMsg, pkg+"LineItem", true, false),
			}},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("ShoppingCart"),
			Method: []*descriptorpb.MethodDescriptorProto{
				httpMethod("AddItem", pkg+"AddLineItem", ".google.protobuf.Empty", false, false,
					&annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/cart/{user_id}/items/add"}, Body: "*"}),
				httpMethod("RemoveItem", pkg+"RemoveLineItem", ".google.protobuf.Empty", false, false,
					&annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/cart/{user_id}/items/{product_id}/remove"}}),
				httpMethod("GetCart", pkg+"GetShoppingCart", pkg+"Cart", false, false,
					&annotations.HttpRule{
						Pattern: &annotations.HttpRule_Get{Get: "/carts/{user_id}"},
						AdditionalBindings: []*annotations.HttpRule{{
							Pattern:      &annotations.HttpRule_Get{Get: "/carts/{user_id}/items"},
							ResponseBody: "items",
						}},
					}),
			},
		}},
	}
}

// httpCounterFile is a small action service with an int64 field, query parameters, a
// server-streaming method with a rule, and a rule binding a nested field and a body field.
func httpCounterFile() *descriptorpb.FileDescriptorProto {
	const c = ".kstate.httptest.v1.Counter"
	return &descriptorpb.FileDescriptorProto{
		Name:       proto.String("kstate/httptest/counter.proto"),
		Package:    proto.String("kstate.httptest.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"cloudstate/entity_key.proto", "google/api/annotations.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Counter"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("id", 1, httpTString, "", false, true),
				httpField("value", 2, httpTInt64, "", false, false),
				httpField("tags", 3, httpTString, "", true, false),
			}},
			{Name: proto.String("Item"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("id", 1, httpTString, "", false, false),
				httpField("name", 2, httpTString, "", false, false),
			}},
			{Name: proto.String("PutItem"), Field: []*descriptorpb.FieldDescriptorProto{
				httpField("shelf", 1, httpTString, "", false, false),
				httpField("item", 2, httpTMsg, ".kstate.httptest.v1.Item", false, false),
			}},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("CounterService"),
			Method: []*descriptorpb.MethodDescriptorProto{
				httpMethod("Get", c, c, false, false, &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/counters/{id}"}}),
				httpMethod("Watch", c, c, false, true, &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/counters/{id}/watch"}}),
				httpMethod("Upload", c, c, true, false, nil),
				httpMethod("PutItem", ".kstate.httptest.v1.PutItem", c, false, false,
					&annotations.HttpRule{Pattern: &annotations.HttpRule_Put{Put: "/shelves/{shelf}/items/{item.id}"}, Body: "item"}),
			},
		}},
	}
}

// httpTestCatalog builds the catalog of the HTTP tests: EventSourcedTest ("t"), the shopping cart,
// ActionTest and the counter action.
func httpTestCatalog(t *testing.T, extra ...*descriptorpb.FileDescriptorProto) *catalog.Catalog {
	t.Helper()
	files := append([]*descriptorpb.FileDescriptorProto{httpCartFile(), httpCounterFile()}, extra...)
	spec := &cloudstatepb.EntitySpec{
		Proto: proctest.DescriptorSet([]protoreflect.FileDescriptor{
			testpb.File_testpb_test_proto, cloudstatepb.File_cloudstate_entity_key_proto,
			annotations.File_google_api_annotations_proto, emptypb.File_google_protobuf_empty_proto,
		}, files...),
		Entities: []*cloudstatepb.Entity{
			{EntityType: catalog.ProtocolEventSourced, ServiceName: "kstate.test.v1.EventSourcedTest", PersistenceId: "t"},
			{EntityType: catalog.ProtocolEventSourced, ServiceName: "com.example.shoppingcart.ShoppingCart", PersistenceId: "cart"},
			{EntityType: catalog.ProtocolAction, ServiceName: "kstate.test.v1.ActionTest"},
			{EntityType: catalog.ProtocolAction, ServiceName: "kstate.httptest.v1.CounterService"},
		},
	}
	cat, err := catalog.BuildCatalog(spec)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// httpTestCall is one command the dispatcher received.
type httpTestCall struct {
	method string
	id     string
	msg    *dynamicpb.Message
	md     *cloudstatepb.Metadata
}

// httpTestDispatcher answers deterministically:
//   - ShoppingCart.GetCart: a cart of two items (and reply metadata x-cart-owner: <id>), or the
//     command failure "boom" for user "fail";
//   - ShoppingCart.AddItem and RemoveItem: Empty;
//   - CounterService.Get: the request, echoed;
//   - every other unary method: Response{message: "<Method>:<id>"};
//   - ActionTest.StreamedOut and CounterService.Watch: three replies, or the failure "boom early"
//     before any reply when the request's payload (or id) is "fail-early", or one reply then the
//     failure "boom late" for "fail-late".
//   - CounterService.Watch for id "hold": one reply, then it waits for the call's context to end
//     and closes canceled.
type httpTestDispatcher struct {
	mu       sync.Mutex
	calls    []httpTestCall
	canceled chan struct{}
}

func (d *httpTestDispatcher) record(m *catalog.Method, id string, payload []byte, md *cloudstatepb.Metadata) (*dynamicpb.Message, error) {
	msg, err := m.Decode(payload)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.calls = append(d.calls, httpTestCall{m.FullName, id, msg, md})
	d.mu.Unlock()
	return msg, nil
}

func (d *httpTestDispatcher) last(t *testing.T) httpTestCall {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.calls) == 0 {
		t.Fatal("the dispatcher received no command")
	}
	return d.calls[len(d.calls)-1]
}

func (d *httpTestDispatcher) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.calls)
}

// field returns the string form of a field of msg (by proto name).
func httpFieldOf(msg protoreflect.Message, name string) string {
	f := msg.Descriptor().Fields().ByName(protoreflect.Name(name))
	if f == nil {
		return "<no field " + name + ">"
	}
	if f.IsList() {
		l := msg.Get(f).List()
		var parts []string
		for i := 0; i < l.Len(); i++ {
			parts = append(parts, l.Get(i).String())
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return msg.Get(f).String()
}

func (d *httpTestDispatcher) Unary(_ context.Context, m *catalog.Method, id string, payload []byte, md *cloudstatepb.Metadata) ([]byte, *cloudstatepb.Metadata, error) {
	msg, err := d.record(m, id, payload, md)
	if err != nil {
		return nil, nil, err
	}
	switch m.FullName {
	case "/com.example.shoppingcart.ShoppingCart/GetCart":
		if id == "fail" {
			return nil, nil, &catalog.CommandFailure{Description: "boom"}
		}
		cart := dynamicpb.NewMessage(m.Output)
		items := cart.Mutable(m.Output.Fields().ByName("items")).List()
		for _, it := range []struct {
			id, name string
			q        int32
		}{{"p1", "Apple", 2}, {"p2", "Pear", 1}} {
			li := items.NewElement().Message()
			fs := li.Descriptor().Fields()
			li.Set(fs.ByName("product_id"), protoreflect.ValueOfString(it.id))
			li.Set(fs.ByName("name"), protoreflect.ValueOfString(it.name))
			li.Set(fs.ByName("quantity"), protoreflect.ValueOfInt32(it.q))
			items.Append(protoreflect.ValueOfMessage(li))
		}
		b, err := proto.Marshal(cart)
		rmd := &cloudstatepb.Metadata{Entries: []*cloudstatepb.MetadataEntry{{Key: "x-cart-owner", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: id}}}}
		return b, rmd, err
	case "/com.example.shoppingcart.ShoppingCart/AddItem", "/com.example.shoppingcart.ShoppingCart/RemoveItem":
		return nil, nil, nil
	case "/kstate.httptest.v1.CounterService/Get":
		return payload, nil, nil
	}
	_ = msg
	b, err := proto.Marshal(&testpb.Response{Message: m.Name + ":" + id})
	return b, nil, err
}

func (d *httpTestDispatcher) Stream(ctx context.Context, m *catalog.Method, s CommandStream) error {
	payload, err := s.Recv()
	if err != nil {
		return err
	}
	msg, err := d.record(m, s.EntityID(), payload, s.Metadata())
	if err != nil {
		return err
	}
	var mode string
	var reply func(i int) proto.Message
	switch m.FullName {
	case "/kstate.test.v1.ActionTest/StreamedOut":
		mode = httpFieldOf(msg, "payload")
		reply = func(i int) proto.Message {
			return &testpb.Response{Message: fmt.Sprintf("%s-%d", httpFieldOf(msg, "payload"), i)}
		}
	case "/kstate.httptest.v1.CounterService/Watch":
		mode = httpFieldOf(msg, "id")
		reply = func(i int) proto.Message {
			c := dynamicpb.NewMessage(m.Output)
			c.Set(m.Output.Fields().ByName("id"), protoreflect.ValueOfString(httpFieldOf(msg, "id")))
			c.Set(m.Output.Fields().ByName("value"), protoreflect.ValueOfInt64(1<<60+int64(i)))
			return c
		}
	default:
		return status.Error(codes.Unimplemented, "no stream here")
	}
	if mode == "hold" {
		b, err := proto.Marshal(reply(0))
		if err != nil {
			return err
		}
		if err := s.Send(b); err != nil {
			return err
		}
		<-ctx.Done()
		close(d.canceled)
		return ctx.Err()
	}
	for i := 0; i < 3; i++ {
		if mode == "fail-early" || (mode == "fail-late" && i == 1) {
			return &catalog.CommandFailure{Description: strings.TrimPrefix(mode, "fail-") + " boom"}
		}
		b, err := proto.Marshal(reply(i))
		if err != nil {
			return err
		}
		if err := s.Send(b); err != nil {
			return err
		}
	}
	return nil
}

// httpTestServer is the front door on a real TCP listener: a gRPC server running the ingress
// (plus health, as the node registers it) behind NewHTTPHandler, served by ServeMux.
type httpTestServer struct {
	d      *httpTestDispatcher
	addr   string
	base   string
	client *http.Client
}

// startHTTPTest starts the front door; each of opts adjusts the handler before it serves.
func startHTTPTest(t *testing.T, opts ...func(*httpHandler)) *httpTestServer {
	t.Helper()
	cat := httpTestCatalog(t)
	d := &httpTestDispatcher{canceled: make(chan struct{})}
	ing := NewIngress(cat, d, Limits{})
	gs := grpc.NewServer(ing.ServerOptions()...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	h, err := NewHTTPHandler(cat, gs, proctest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(h.(*httpHandler))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ServeMux(lis, h)
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		gs.Stop()
	})
	return &httpTestServer{d: d, addr: lis.Addr().String(), base: "http://" + lis.Addr().String(), client: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

// do sends one request; hdr holds header name/value pairs. It returns the response (body read and
// closed) and the body.
func (s *httpTestServer) do(t *testing.T, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, string(b)
}

// raw writes req on a new TCP connection, then the chunks of more, and reads one response within
// 10 s. It returns the response and its body (read until the response ends, within the same time).
func (s *httpTestServer) raw(t *testing.T, req string, more ...string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, p := range append([]string{req}, more...) {
		if _, err := io.WriteString(c, p); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to %.40q: %v", req, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer to %.40q: %v", req, err)
	}
	return resp, string(b)
}

// httpExpectStatus checks that resp is an error answer with HTTP status code and a JSON
// google.rpc.Status body with the gRPC code want, and returns the status's message.
func httpExpectStatus(t *testing.T, resp *http.Response, body string, code int, want codes.Code) string {
	t.Helper()
	if resp.StatusCode != code {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, code, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("HTTP %d answered with Content-Type %q, want application/json; body %q", code, ct, body)
	}
	for k := range resp.Header {
		if strings.HasPrefix(k, "Grpc-") {
			t.Fatalf("HTTP %d answered with gRPC header %s: %v", code, k, resp.Header[k])
		}
	}
	var st statuspb.Status
	if err := protojson.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("HTTP %d body %q is not a google.rpc.Status: %v", code, body, err)
	}
	if codes.Code(st.GetCode()) != want || st.GetMessage() == "" {
		t.Fatalf("HTTP %d body %s: code %v, want %v with a message", code, body, codes.Code(st.GetCode()), want)
	}
	return st.GetMessage()
}

// expect checks a response's status code.
func httpExpect(t *testing.T, resp *http.Response, body string, code int) {
	t.Helper()
	if resp.StatusCode != code {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, code, body)
	}
}

// jsonEqual checks that got is the JSON value want.
func httpJSONEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("not JSON: %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %q: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("body %s, want %s", gb, wb)
	}
}

const httpWantCart = `{"items":[{"productId":"p1","name":"Apple","quantity":2},{"productId":"p2","name":"Pear","quantity":1}]}`

func TestHTTPCartRules(t *testing.T) {
	s := startHTTPTest(t)

	resp, body := s.do(t, "POST", "/cart/u1/items/add", `{"productId":"p1","name":"Apple","quantity":2}`)
	httpExpect(t, resp, body, 200)
	httpJSONEqual(t, body, `{}`)
	c := s.d.last(t)
	if c.method != "/com.example.shoppingcart.ShoppingCart/AddItem" || c.id != "u1" ||
		httpFieldOf(c.msg, "user_id") != "u1" || httpFieldOf(c.msg, "product_id") != "p1" || httpFieldOf(c.msg, "name") != "Apple" || httpFieldOf(c.msg, "quantity") != "2" {
		t.Fatalf("AddItem command: %s id %q %v", c.method, c.id, c.msg)
	}

	// The proto field name is accepted as well as the JSON name, and int32 as a string.
	resp, body = s.do(t, "POST", "/cart/u2/items/add", `{"product_id":"p9","quantity":"3"}`)
	httpExpect(t, resp, body, 200)
	if c := s.d.last(t); c.id != "u2" || httpFieldOf(c.msg, "product_id") != "p9" || httpFieldOf(c.msg, "quantity") != "3" {
		t.Fatalf("AddItem with proto names: id %q %v", c.id, c.msg)
	}

	resp, body = s.do(t, "POST", "/cart/u1/items/p%207/remove", "")
	httpExpect(t, resp, body, 200)
	if c := s.d.last(t); c.method != "/com.example.shoppingcart.ShoppingCart/RemoveItem" || c.id != "u1" || httpFieldOf(c.msg, "product_id") != "p 7" {
		t.Fatalf("RemoveItem command: %s id %q %v", c.method, c.id, c.msg)
	}

	resp, body = s.do(t, "GET", "/carts/u1", "")
	httpExpect(t, resp, body, 200)
	httpJSONEqual(t, body, httpWantCart)
	if got := resp.Header.Get("X-Cart-Owner"); got != "u1" {
		t.Fatalf("reply metadata header x-cart-owner = %q, want u1", got)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q", ct)
	}

	// additional_bindings with response_body "items": the body is the list alone.
	resp, body = s.do(t, "GET", "/carts/u1/items", "")
	httpExpect(t, resp, body, 200)
	httpJSONEqual(t, body, `[{"productId":"p1","name":"Apple","quantity":2},{"productId":"p2","name":"Pear","quantity":1}]`)

	// The default route exists next to the rules.
	resp, body = s.do(t, "POST", "/com.example.shoppingcart.ShoppingCart/GetCart", `{"userId":"u3"}`)
	httpExpect(t, resp, body, 200)
	httpJSONEqual(t, body, httpWantCart)
	if c := s.d.last(t); c.id != "u3" {
		t.Fatalf("GetCart by default route: id %q", c.id)
	}

	// Request headers reach the dispatcher as metadata.
	resp, body = s.do(t, "GET", "/carts/u4", "", "X-Trace", "abc")
	httpExpect(t, resp, body, 200)
	if md := MetadataToGRPC(s.d.last(t).md); len(md["x-trace"]) != 1 || md["x-trace"][0] != "abc" {
		t.Fatalf("metadata %v lacks x-trace: abc", md)
	}

	resp, body = s.do(t, "GET", "/cart/u1/items/add", "")
	httpExpect(t, resp, body, http.StatusMethodNotAllowed)
}

func TestHTTPDefaultRouteAndInt64(t *testing.T) {
	s := startHTTPTest(t)

	// Composite has no rule: only the default route. int64 accepted as a JSON string and a number.
	for _, c := range []struct{ body, a string }{
		{`{"a":"12345678901234567","b":"x"}`, "12345678901234567"},
		{`{"a":12345,"b":"x"}`, "12345"},
	} {
		resp, got := s.do(t, "POST", "/kstate.test.v1.EventSourcedTest/Composite", c.body)
		httpExpect(t, resp, got, 200)
		call := s.d.last(t)
		if httpFieldOf(call.msg, "a") != c.a || call.id != "x-"+c.a {
			t.Fatalf("Composite %s: a %s, id %q", c.body, httpFieldOf(call.msg, "a"), call.id)
		}
		httpJSONEqual(t, got, `{"message":"Composite:x-`+c.a+`"}`)
	}

	// Process has a rule and the default route too.
	for _, path := range []string{"/test/abc", "/kstate.test.v1.EventSourcedTest/Process"} {
		resp, got := s.do(t, "POST", path, `{"id":"abc","payload":"p"}`)
		httpExpect(t, resp, got, 200)
		httpJSONEqual(t, got, `{"message":"Process:abc"}`)
	}

	// int64 in a response is a JSON string; query parameters fill fields, repeated ones too.
	resp, body := s.do(t, "GET", "/counters/c1?value=9007199254740993&tags=a&tags=b", "")
	httpExpect(t, resp, body, 200)
	httpJSONEqual(t, body, `{"id":"c1","value":"9007199254740993","tags":["a","b"]}`)
	if !strings.Contains(body, `"value":"9007199254740993"`) {
		t.Fatalf("int64 not rendered as a string: %s", body)
	}
	// Unpopulated fields are emitted.
	resp, body = s.do(t, "GET", "/counters/c2", "")
	httpExpect(t, resp, body, 200)
	httpJSONEqual(t, body, `{"id":"c2","value":"0","tags":[]}`)
}

func TestHTTPSamePortGRPC(t *testing.T) {
	s := startHTTPTest(t)
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	r, err := testpb.NewEventSourcedTestClient(cc).Process(ctx, &testpb.Request{Id: "g", Payload: "p"})
	if err != nil || r.GetMessage() != "Process:g" {
		t.Fatalf("Process over gRPC: %v, %v", r, err)
	}
	st, err := testpb.NewActionTestClient(cc).StreamedOut(ctx, &testpb.Request{Id: "g", Payload: "s"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		m, err := st.Recv()
		if err != nil || m.GetMessage() != fmt.Sprintf("s-%d", i) {
			t.Fatalf("reply %d: %v, %v", i, m, err)
		}
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	_, err = testpb.NewActionTestClient(cc).Unary(ctx, &testpb.Request{Id: "g"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over the shared port: %v, %v", h, err)
	}
	// A command failure keeps its gRPC form.
	_, err = httpGRPCCartFail(ctx, cc)
	if status.Code(err) != codes.Unknown || status.Convert(err).Message() != "boom" {
		t.Fatalf("GetCart(fail) over gRPC: %v", err)
	}
}

// grpcCartFail calls ShoppingCart.GetCart for user "fail" with raw bytes (there is no generated
// client in this package).
func httpGRPCCartFail(ctx context.Context, cc *grpc.ClientConn) ([]byte, error) {
	req := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "fail")
	var out []byte
	err := cc.Invoke(ctx, "/com.example.shoppingcart.ShoppingCart/GetCart", req, &out, grpc.ForceCodecV2(Codec{}))
	return out, err
}

func TestHTTPGRPCWebAndConnect(t *testing.T) {
	s := startHTTPTest(t)

	// gRPC-Web over HTTP/1.1.
	msg, _ := proto.Marshal(&testpb.Request{Id: "w", Payload: "p"})
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	frame = append(frame, msg...)
	req, _ := http.NewRequest("POST", s.base+"/kstate.test.v1.EventSourcedTest/Process", bytes.NewReader(frame))
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	wresp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(wresp.Body)
	_ = wresp.Body.Close()
	if err != nil || wresp.StatusCode != 200 {
		t.Fatalf("grpc-web: %d %v", wresp.StatusCode, err)
	}
	var got testpb.Response
	var trailer string
	for len(raw) >= 5 {
		n := binary.BigEndian.Uint32(raw[1:5])
		data := raw[5 : 5+n]
		if raw[0]&0x80 != 0 {
			trailer = string(data)
		} else if err := proto.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		raw = raw[5+n:]
	}
	if got.GetMessage() != "Process:w" || !strings.Contains(strings.ToLower(trailer), "grpc-status: 0") && !strings.Contains(strings.ToLower(trailer), "grpc-status:0") {
		t.Fatalf("grpc-web reply %v, trailer %q", &got, trailer)
	}

	// Connect unary with JSON.
	resp, body := s.do(t, "POST", "/kstate.test.v1.EventSourcedTest/Process", `{"id":"c"}`, "Connect-Protocol-Version", "1")
	httpExpect(t, resp, body, 200)
	httpJSONEqual(t, body, `{"message":"Process:c"}`)
	resp, body = s.do(t, "POST", "/com.example.shoppingcart.ShoppingCart/GetCart", `{"userId":"fail"}`, "Connect-Protocol-Version", "1")
	httpExpect(t, resp, body, 500)
	httpJSONEqual(t, body, `{"code":"unknown","message":"boom"}`)
}

func TestHTTPOverHTTP2(t *testing.T) {
	s := startHTTPTest(t)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for _, path := range []string{"/carts/u1", "/counters/c1/watch"} {
		resp, err := c.Get(s.base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("%s over h2c: %s %d %s", path, resp.Proto, resp.StatusCode, b)
		}
	}

	// gRPC with the JSON codec, transcoded by vanguard.
	js := []byte(`{"id":"j","payload":"p"}`)
	frame := append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(js))), js...)
	req, err := http.NewRequest("POST", s.base+"/kstate.test.v1.EventSourcedTest/Process", bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc+json")
	req.Header.Set("Te", "trailers")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(raw) < 5 || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("grpc+json: %d %q %v trailers %v", resp.StatusCode, raw, err, resp.Trailer)
	}
	httpJSONEqual(t, string(raw[5:]), `{"message":"Process:j"}`)
}

func TestServeMuxShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ServeMux(lis, h)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get("http://" + lis.Addr().String() + "/")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		got <- result{string(b), err}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	// Shutdown stops accepting at once: poll until a new connection is refused.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			break
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections during Shutdown")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was running", err)
	default:
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Fatalf("the running request: %q, %v", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
