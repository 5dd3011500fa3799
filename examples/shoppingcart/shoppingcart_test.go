package shoppingcart_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/domainpb"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

const user = "user-1"

func add(t *testing.T, h *sdktest.EventSourced[*domainpb.Cart], product, name string, qty int32) *sdktest.Result {
	t.Helper()
	res, err := h.Command("AddItem", &shoppingcartpb.AddLineItem{UserId: user, ProductId: product, Name: name, Quantity: qty})
	if err != nil {
		t.Fatalf("AddItem %s x%d: %v", product, qty, err)
	}
	return res
}

func getCart(t *testing.T, h *sdktest.EventSourced[*domainpb.Cart]) *shoppingcartpb.Cart {
	t.Helper()
	res, err := h.Command("GetCart", &shoppingcartpb.GetShoppingCart{UserId: user})
	if err != nil {
		t.Fatalf("GetCart: %v", err)
	}
	if len(res.Events) != 0 || res.Snapshot != nil {
		t.Fatalf("GetCart emitted %v, snapshot %v", res.Events, res.Snapshot)
	}
	return res.Reply.(*shoppingcartpb.Cart)
}

func wantCart(t *testing.T, got *shoppingcartpb.Cart, want ...*shoppingcartpb.LineItem) {
	t.Helper()
	if w := (&shoppingcartpb.Cart{Items: want}); !proto.Equal(got, w) {
		t.Fatalf("cart:\n got %v\nwant %v", got, w)
	}
}

func item(product, name string, qty int32) *shoppingcartpb.LineItem {
	return &shoppingcartpb.LineItem{ProductId: product, Name: name, Quantity: qty}
}

func TestEntityRegisters(t *testing.T) {
	if err := sdk.NewServer().Register(shoppingcart.NewEntity()); err != nil {
		t.Fatal(err)
	}
}

func TestAddMergesAndGetSorts(t *testing.T) {
	h := sdktest.NewEventSourced(t, shoppingcart.NewEntity(), user)
	wantCart(t, getCart(t, h))

	res := add(t, h, "swh", "Swedish herring", 2)
	if want := (&domainpb.ItemAdded{Item: &domainpb.LineItem{ProductId: "swh", Name: "Swedish herring", Quantity: 2}}); len(res.Events) != 1 || !proto.Equal(res.Events[0], want) {
		t.Fatalf("events %v, want [%v]", res.Events, want)
	}
	add(t, h, "apl", "Apple", 1)
	add(t, h, "swh", "Herring (renamed)", 3)
	wantCart(t, getCart(t, h), item("apl", "Apple", 1), item("swh", "Swedish herring", 5))
	h.Restart()
	wantCart(t, getCart(t, h), item("apl", "Apple", 1), item("swh", "Swedish herring", 5))
}

func TestAddRejectsNonPositiveQuantity(t *testing.T) {
	h := sdktest.NewEventSourced(t, shoppingcart.NewEntity(), user)
	for _, qty := range []int32{0, -3} {
		_, err := h.Command("AddItem", &shoppingcartpb.AddLineItem{UserId: user, ProductId: "apl", Name: "Apple", Quantity: qty})
		var f *sdktest.Failure
		if !errors.As(err, &f) {
			t.Fatalf("quantity %d: err %v, want a command failure", qty, err)
		}
		if want := "Quantity for item apl must be greater than zero."; f.Description != want || f.Restart {
			t.Fatalf("quantity %d: failure %+v, want %q without restart", qty, f, want)
		}
	}
	_, err := h.Command("AddItem", &shoppingcartpb.AddLineItem{UserId: user, Quantity: 1})
	var f *sdktest.Failure
	if !errors.As(err, &f) || f.Description != "Cannot add an item without a product id." {
		t.Fatalf("empty product id: %v", err)
	}
	if evs := h.Events(); len(evs) != 0 {
		t.Fatalf("failed commands emitted %v", evs)
	}
	wantCart(t, getCart(t, h))
}

func TestRemove(t *testing.T) {
	h := sdktest.NewEventSourced(t, shoppingcart.NewEntity(), user)
	add(t, h, "apl", "Apple", 1)
	add(t, h, "swh", "Swedish herring", 2)

	_, err := h.Command("RemoveItem", &shoppingcartpb.RemoveLineItem{UserId: user, ProductId: "pear"})
	var f *sdktest.Failure
	if !errors.As(err, &f) || f.Description != "Cannot remove item pear because it is not in the cart." {
		t.Fatalf("remove missing item: %v", err)
	}
	res, err := h.Command("RemoveItem", &shoppingcartpb.RemoveLineItem{UserId: user, ProductId: "apl"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (&domainpb.ItemRemoved{ProductId: "apl"}); len(res.Events) != 1 || !proto.Equal(res.Events[0], want) {
		t.Fatalf("events %v, want [%v]", res.Events, want)
	}
	wantCart(t, getCart(t, h), item("swh", "Swedish herring", 2))
	// Removing it again fails: it is gone.
	if _, err := h.Command("RemoveItem", &shoppingcartpb.RemoveLineItem{UserId: user, ProductId: "apl"}); !errors.As(err, &f) {
		t.Fatalf("second remove: %v", err)
	}
	h.Restart()
	wantCart(t, getCart(t, h), item("swh", "Swedish herring", 2))
}

func TestSnapshotEveryFiveEvents(t *testing.T) {
	h := sdktest.NewEventSourced(t, shoppingcart.NewEntity(), user)
	products := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}
	for i, p := range products {
		res := add(t, h, p, "Product "+p, int32(i+1))
		seq := int64(i + 1)
		if got, want := res.Snapshot != nil, seq%shoppingcart.SnapshotEvery == 0; got != want {
			t.Fatalf("event %d: snapshot %v, want %v", seq, got, want)
		}
	}
	snaps := h.Snapshots()
	if len(snaps) != 2 || snaps[0].Sequence != 5 || snaps[1].Sequence != 10 {
		t.Fatalf("snapshots at %+v, want 5 and 10", snaps)
	}
	if n := len(snaps[0].State.GetItems()); n != 5 {
		t.Fatalf("snapshot at 5 has %d items", n)
	}
	if n := len(snaps[1].State.GetItems()); n != 10 {
		t.Fatalf("snapshot at 10 has %d items", n)
	}
	// Restart goes through the snapshot at 10 plus event 11, and through all 11 events.
	h.Restart()
	if got := len(getCart(t, h).GetItems()); got != len(products) {
		t.Fatalf("after restart: %d items", got)
	}
}

func TestHistory(t *testing.T) {
	h := sdktest.NewEventSourced(t, shoppingcart.NewEntity(), user,
		sdktest.WithSnapshot(5, &domainpb.Cart{Items: []*domainpb.LineItem{{ProductId: "apl", Name: "Apple", Quantity: 4}}}),
		sdktest.WithEvents(
			&domainpb.ItemAdded{Item: &domainpb.LineItem{ProductId: "apl", Name: "Apple", Quantity: 1}},
			&domainpb.ItemAdded{Item: &domainpb.LineItem{ProductId: "cak", Name: "Cake", Quantity: 1}},
			&domainpb.ItemRemoved{ProductId: "cak"},
		))
	if h.Sequence() != 8 {
		t.Fatalf("sequence %d, want 8", h.Sequence())
	}
	wantCart(t, getCart(t, h), item("apl", "Apple", 5))
	// Event 10 crosses the next multiple of 5.
	add(t, h, "b", "B", 1)
	if res := add(t, h, "c", "C", 1); res.Snapshot == nil {
		t.Fatal("no snapshot at sequence 10")
	}
	h.Restart()
	wantCart(t, getCart(t, h), item("apl", "Apple", 5), item("b", "B", 1), item("c", "C", 1))
}
