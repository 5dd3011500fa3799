package processor

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

func TestNewHTTPHandlerRejects(t *testing.T) {
	if _, err := NewHTTPHandler(nil, http.NotFoundHandler(), nil); err == nil {
		t.Fatal("nil catalog accepted")
	}
	cat := httpTestCatalog(t)
	if _, err := NewHTTPHandler(cat, nil, nil); err == nil {
		t.Fatal("nil gRPC handler accepted")
	}

	// A rule naming a field the input does not have.
	bad := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("kstate/httptest/bad.proto"),
		Package:    proto.String("kstate.httptest.bad"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"kstate/httptest/counter.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Bad"),
			Method: []*descriptorpb.MethodDescriptorProto{
				httpMethod("Get", ".kstate.httptest.v1.Counter", ".kstate.httptest.v1.Counter", false, false,
					&annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/bad/{nope}"}}),
			},
		}},
	}
	files := []*descriptorpb.FileDescriptorProto{httpCartFile(), httpCounterFile(), bad}
	spec := &cloudstatepb.EntitySpec{
		Proto: descriptorSet([]protoreflect.FileDescriptor{
			cloudstatepb.File_cloudstate_entity_key_proto, annotations.File_google_api_annotations_proto, emptypb.File_google_protobuf_empty_proto,
		}, files...),
		Entities: []*cloudstatepb.Entity{{EntityType: ProtocolAction, ServiceName: "kstate.httptest.bad.Bad"}},
	}
	badCat, err := BuildCatalog(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewHTTPHandler(badCat, http.NotFoundHandler(), nil)
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("bad rule: %v", err)
	}
}

// TestTranscodingFilesUnknownOption proves that a google.api.http option vanguard cannot see
// (unknown fields, as when descriptors were parsed without genproto's annotations linked in) is
// made visible, and that the default binding is added.
func TestTranscodingFilesUnknownOption(t *testing.T) {
	rule, err := proto.Marshal(&annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: "/counters/{id}"}})
	if err != nil {
		t.Fatal(err)
	}
	rawOpts := protowire.AppendBytes(protowire.AppendTag(nil, protowire.Number(annotations.E_Http.TypeDescriptor().Number()), protowire.BytesType), rule)
	opts := &descriptorpb.MethodOptions{}
	if err := (proto.UnmarshalOptions{Resolver: new(protoregistry.Types)}).Unmarshal(rawOpts, opts); err != nil {
		t.Fatal(err)
	}
	if len(opts.ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("the option did not stay unknown")
	}
	fdp := httpCounterFile()
	fdp.Service[0].Method[0].Options = opts
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(descriptorSet([]protoreflect.FileDescriptor{
		cloudstatepb.File_cloudstate_entity_key_proto, annotations.File_google_api_annotations_proto,
	}, fdp), &set); err != nil {
		t.Fatal(err)
	}
	// Keep the option unknown in the source registry too.
	set.File[len(set.File)-1].Service[0].Method[0].Options = opts
	src, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	get := func(files *protoregistry.Files, method string) protoreflect.MethodDescriptor {
		d, err := files.FindDescriptorByName(protoreflect.FullName("kstate.httptest.v1.CounterService." + method))
		if err != nil {
			t.Fatal(err)
		}
		return d.(protoreflect.MethodDescriptor)
	}
	if get(src, "Get").Options().ProtoReflect().Has(annotations.E_Http.TypeDescriptor()) {
		t.Fatal("the source descriptor already exposes the option: the test proves nothing")
	}

	out, err := transcodingFiles(src, map[protoreflect.FullName]bool{"kstate.httptest.v1.CounterService": true})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := proto.GetExtension(get(out, "Get").Options(), annotations.E_Http).(*annotations.HttpRule)
	if !ok || r.GetGet() != "/counters/{id}" || len(r.GetAdditionalBindings()) != 1 ||
		r.GetAdditionalBindings()[0].GetPost() != "/kstate.httptest.v1.CounterService/Get" || r.GetAdditionalBindings()[0].GetBody() != "*" {
		t.Fatalf("rule %v", r)
	}
	r, ok = proto.GetExtension(get(out, "Upload").Options(), annotations.E_Http).(*annotations.HttpRule)
	if !ok || r.GetPost() != "/kstate.httptest.v1.CounterService/Upload" || r.GetBody() != "*" || len(r.GetAdditionalBindings()) != 0 {
		t.Fatalf("default rule %v", r)
	}
}

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
