package shoppingcartpb_test

import (
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

func httpRule(t *testing.T, method string) *annotations.HttpRule {
	t.Helper()
	sd := shoppingcartpb.File_shoppingcart_shoppingcart_proto.Services().ByName("ShoppingCart")
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		t.Fatalf("no method %s", method)
	}
	// The option decodes into genproto's registered extension (not unknown fields).
	rule, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule == nil {
		t.Fatalf("%s: no google.api.http rule", method)
	}
	return rule
}

func TestHTTPRules(t *testing.T) {
	if r := httpRule(t, "AddItem"); r.GetPost() != "/cart/{user_id}/items/add" || r.GetBody() != "*" {
		t.Errorf("AddItem: %v", r)
	}
	if r := httpRule(t, "RemoveItem"); r.GetPost() != "/cart/{user_id}/items/{product_id}/remove" || r.GetBody() != "" {
		t.Errorf("RemoveItem: %v", r)
	}
	r := httpRule(t, "GetCart")
	if r.GetGet() != "/carts/{user_id}" || len(r.GetAdditionalBindings()) != 1 {
		t.Fatalf("GetCart: %v", r)
	}
	if b := r.GetAdditionalBindings()[0]; b.GetGet() != "/carts/{user_id}/items" || b.GetResponseBody() != "items" {
		t.Errorf("GetCart additional binding: %v", b)
	}
}

func TestEntityKeys(t *testing.T) {
	for _, m := range []proto.Message{&shoppingcartpb.AddLineItem{}, &shoppingcartpb.RemoveLineItem{}, &shoppingcartpb.GetShoppingCart{}} {
		fields := m.ProtoReflect().Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			key := proto.GetExtension(fd.Options(), cloudstatepb.E_EntityKey).(bool)
			if want := fd.Name() == "user_id"; key != want {
				t.Errorf("%s: entity_key = %v, want %v", fd.FullName(), key, want)
			}
		}
	}
}
