package valuecart_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/examples/valuecart"
	"github.com/kstatehq/kstate/examples/valuecart/domainpb"
	"github.com/kstatehq/kstate/examples/valuecart/valuecartpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

const user = "user-1"

type harness = sdktest.Value[*domainpb.Cart]

func add(t *testing.T, h *harness, product, name string, qty int32) *sdktest.ValueResult[*domainpb.Cart] {
	t.Helper()
	res, err := h.Command("AddItem", &valuecartpb.AddLineItem{UserId: user, ProductId: product, Name: name, Quantity: qty})
	if err != nil {
		t.Fatalf("AddItem %s x%d: %v", product, qty, err)
	}
	return res
}

func getCart(t *testing.T, h *harness) *valuecartpb.Cart {
	t.Helper()
	res, err := h.Command("GetCart", &valuecartpb.GetShoppingCart{UserId: user})
	if err != nil {
		t.Fatalf("GetCart: %v", err)
	}
	if res.Updated != nil || res.Deleted {
		t.Fatalf("GetCart stored %v (deleted %v)", res.Updated, res.Deleted)
	}
	return res.Reply.(*valuecartpb.Cart)
}

func wantCart(t *testing.T, got *valuecartpb.Cart, want ...*valuecartpb.LineItem) {
	t.Helper()
	if w := (&valuecartpb.Cart{Items: want}); !proto.Equal(got, w) {
		t.Fatalf("cart:\n got %v\nwant %v", got, w)
	}
}

func item(product, name string, qty int32) *valuecartpb.LineItem {
	return &valuecartpb.LineItem{ProductId: product, Name: name, Quantity: qty}
}

func stored(product, name string, qty int32) *domainpb.LineItem {
	return &domainpb.LineItem{ProductId: product, Name: name, Quantity: qty}
}

func wantFailure(t *testing.T, err error, description string) {
	t.Helper()
	var f *sdktest.Failure
	if !errors.As(err, &f) {
		t.Fatalf("err %v, want a command failure", err)
	}
	if f.Description != description || f.Restart {
		t.Fatalf("failure %+v, want %q without restart", f, description)
	}
}

func TestEntityRegisters(t *testing.T) {
	if err := sdk.NewServer().Register(valuecart.NewEntity()); err != nil {
		t.Fatal(err)
	}
}

func TestAddMergesAndGetSorts(t *testing.T) {
	h := sdktest.NewValue(t, valuecart.NewEntity(), user)
	wantCart(t, getCart(t, h))

	res := add(t, h, "swh", "Swedish herring", 2)
	if want := (&domainpb.Cart{Items: []*domainpb.LineItem{stored("swh", "Swedish herring", 2)}}); !proto.Equal(res.Updated, want) {
		t.Fatalf("stored %v, want %v", res.Updated, want)
	}
	add(t, h, "apl", "Apple", 1)
	res = add(t, h, "swh", "Herring (renamed)", 3)
	// The whole cart is stored, sorted, with merged quantities and the first name.
	if want := (&domainpb.Cart{Items: []*domainpb.LineItem{stored("apl", "Apple", 1), stored("swh", "Swedish herring", 5)}}); !proto.Equal(res.Updated, want) {
		t.Fatalf("stored %v, want %v", res.Updated, want)
	}
	wantCart(t, getCart(t, h), item("apl", "Apple", 1), item("swh", "Swedish herring", 5))
	h.Restart()
	wantCart(t, getCart(t, h), item("apl", "Apple", 1), item("swh", "Swedish herring", 5))
}

func TestAddRejectsInvalidItems(t *testing.T) {
	h := sdktest.NewValue(t, valuecart.NewEntity(), user)
	for _, qty := range []int32{0, -3} {
		_, err := h.Command("AddItem", &valuecartpb.AddLineItem{UserId: user, ProductId: "apl", Name: "Apple", Quantity: qty})
		wantFailure(t, err, "Quantity for item apl must be greater than zero.")
	}
	_, err := h.Command("AddItem", &valuecartpb.AddLineItem{UserId: user, Quantity: 1})
	wantFailure(t, err, "Cannot add an item without a product id.")
	if _, ok := h.Stored(); ok {
		t.Fatal("failed commands stored a cart")
	}
	wantCart(t, getCart(t, h))
}

func TestRemoveItem(t *testing.T) {
	h := sdktest.NewValue(t, valuecart.NewEntity(), user)
	add(t, h, "apl", "Apple", 1)
	add(t, h, "swh", "Swedish herring", 2)

	_, err := h.Command("RemoveItem", &valuecartpb.RemoveLineItem{UserId: user, ProductId: "pear"})
	wantFailure(t, err, "Cannot remove item pear because it is not in the cart.")
	res, err := h.Command("RemoveItem", &valuecartpb.RemoveLineItem{UserId: user, ProductId: "apl"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (&domainpb.Cart{Items: []*domainpb.LineItem{stored("swh", "Swedish herring", 2)}}); !proto.Equal(res.Updated, want) {
		t.Fatalf("stored %v, want %v", res.Updated, want)
	}
	wantCart(t, getCart(t, h), item("swh", "Swedish herring", 2))
	// Removing it again fails: it is gone.
	_, err = h.Command("RemoveItem", &valuecartpb.RemoveLineItem{UserId: user, ProductId: "apl"})
	wantFailure(t, err, "Cannot remove item apl because it is not in the cart.")
	// Removing the last item stores an empty cart; it does not delete it.
	res, err = h.Command("RemoveItem", &valuecartpb.RemoveLineItem{UserId: user, ProductId: "swh"})
	if err != nil || res.Deleted || res.Updated == nil || len(res.Updated.GetItems()) != 0 {
		t.Fatalf("remove the last item: %+v, %v", res, err)
	}
	h.Restart()
	wantCart(t, getCart(t, h))
}

func TestRemoveCartDeletesTheState(t *testing.T) {
	h := sdktest.NewValue(t, valuecart.NewEntity(), user)
	add(t, h, "apl", "Apple", 3)
	res, err := h.Command("RemoveCart", &valuecartpb.RemoveShoppingCart{UserId: user})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Deleted || res.Updated != nil {
		t.Fatalf("RemoveCart: %+v, want a delete", res)
	}
	if _, ok := h.Stored(); ok {
		t.Fatal("the cart is still stored")
	}
	wantCart(t, getCart(t, h))
	h.Restart()
	wantCart(t, getCart(t, h))
	// The user starts again from an empty cart; removing a missing cart succeeds.
	add(t, h, "cak", "Cake", 1)
	wantCart(t, getCart(t, h), item("cak", "Cake", 1))
	for range 2 {
		if res, err := h.Command("RemoveCart", &valuecartpb.RemoveShoppingCart{UserId: user}); err != nil || !res.Deleted {
			t.Fatalf("RemoveCart: %+v, %v", res, err)
		}
	}
}

func TestStoredCart(t *testing.T) {
	h := sdktest.NewValue(t, valuecart.NewEntity(), user,
		sdktest.WithState(&domainpb.Cart{Items: []*domainpb.LineItem{stored("apl", "Apple", 4), stored("ban", "Banana", 1)}}))
	wantCart(t, getCart(t, h), item("apl", "Apple", 4), item("ban", "Banana", 1))
	add(t, h, "apl", "Apple", 1)
	add(t, h, "aaa", "First", 1)
	v, ok := h.Stored()
	if want := (&domainpb.Cart{Items: []*domainpb.LineItem{stored("aaa", "First", 1), stored("apl", "Apple", 5), stored("ban", "Banana", 1)}}); !ok || !proto.Equal(v, want) {
		t.Fatalf("stored %v, want %v", v, want)
	}
}
