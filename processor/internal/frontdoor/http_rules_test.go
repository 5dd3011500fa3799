package frontdoor

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/processor/internal/proctest"
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
		Proto: proctest.DescriptorSet([]protoreflect.FileDescriptor{
			cloudstatepb.File_cloudstate_entity_key_proto, annotations.File_google_api_annotations_proto, emptypb.File_google_protobuf_empty_proto,
		}, files...),
		Entities: []*cloudstatepb.Entity{{EntityType: catalog.ProtocolAction, ServiceName: "kstate.httptest.bad.Bad"}},
	}
	badCat, err := catalog.BuildCatalog(spec)
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
	if err := proto.Unmarshal(proctest.DescriptorSet([]protoreflect.FileDescriptor{
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

func TestParsePathTemplate(t *testing.T) {
	for _, c := range []struct {
		tmpl string
		segs []string
		verb string
		vars []templateVar
	}{
		{"/carts/{user_id}", []string{"carts", "*"}, "", []templateVar{{"user_id", 1, 2}}},
		{"/v1/{name=shelves/*}/books/{book.id=**}:publish", []string{"v1", "shelves", "*", "books", "**"}, "publish",
			[]templateVar{{"name", 1, 3}, {"book.id", 4, -1}}},
		{"/a%2fb/*:x%20y", []string{"a%2Fb", "*"}, "x%20y", nil},
		{"/{a}/{b}:v", []string{"*", "*"}, "v", []templateVar{{"a", 0, 1}, {"b", 1, 2}}},
	} {
		segs, verb, vars, err := parsePathTemplate(c.tmpl)
		if err != nil || !slices.Equal(segs, c.segs) || verb != c.verb || !slices.Equal(vars, c.vars) {
			t.Errorf("%s: %q %q %v %v, want %q %q %v", c.tmpl, segs, verb, vars, err, c.segs, c.verb, c.vars)
		}
	}
	for _, bad := range []string{"", "a/b", "/a/**/b", "/{x", "/a//b", "/a/%zz", "/a:"} {
		if segs, verb, vars, err := parsePathTemplate(bad); err == nil {
			t.Errorf("%q accepted: %q %q %v", bad, segs, verb, vars)
		}
	}
}

// TestRESTRoutesMatch checks the front door's copy of vanguard's routing against the test
// catalog's rules: the method found and the values of its path variables, for decoded URL paths.
func TestRESTRoutesMatch(t *testing.T) {
	h, err := NewHTTPHandler(httpTestCatalog(t), http.NotFoundHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	routes := h.(*httpHandler).routes
	for _, c := range []struct {
		method, path string
		want         string   // method name, "" for no match
		vals         []string // values of the path variables
	}{
		{"GET", "/carts/u1", "GetCart", []string{"u1"}},
		{"GET", "/carts/u 1/items", "GetCart", []string{"u 1"}},
		{"POST", "/cart/u1/items/p 7/remove", "RemoveItem", []string{"u1", "p 7"}},
		{"POST", "/cart/u1/items/add", "AddItem", []string{"u1"}},
		{"GET", "/counters/c1/watch", "Watch", []string{"c1"}},
		{"PUT", "/shelves/s1/items/i1", "PutItem", []string{"s1", "i1"}},
		{"POST", "/kstate.test.v1.EventSourcedTest/Process", "Process", nil},
		{"GET", "/carts/100%", "", nil}, // a malformed escape: vanguard answers 404 as well
		{"POST", "/carts/u1", "", nil},  // another method: 405
		{"GET", "/carts/u1/nope", "", nil},
		{"GET", "/carts", "", nil},
		{"GET", "carts/u1", "", nil},
	} {
		r, segs := routes.match(c.method, c.path)
		switch {
		case c.want == "" && r != nil:
			t.Errorf("%s %s matched %s", c.method, c.path, r.method.FullName())
		case c.want == "":
		case r == nil:
			t.Errorf("%s %s matched nothing, want %s", c.method, c.path, c.want)
		case string(r.method.Name()) != c.want:
			t.Errorf("%s %s matched %s, want %s", c.method, c.path, r.method.FullName(), c.want)
		default:
			var vals []string
			for _, v := range r.vars {
				val, err := v.value(segs)
				if err != nil {
					t.Fatal(err)
				}
				vals = append(vals, val)
			}
			if !slices.Equal(vals, c.vals) {
				t.Errorf("%s %s: variables %q, want %q", c.method, c.path, vals, c.vals)
			}
		}
	}

	// A "**" capture keeps an escaped slash; a single-segment one decodes it.
	segs := []string{"a", "b%2Fc", "d%41"}
	if v, _ := (routeVar{start: 1, end: -1}).value(segs); v != "b%2Fc/dA" {
		t.Errorf("** capture %q", v)
	}
	if v, _ := (routeVar{start: 1, end: 2}).value(segs); v != "b/c" {
		t.Errorf("* capture %q", v)
	}
}
