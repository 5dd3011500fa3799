// Package shoppingcart is Cloudstate's shopping cart sample as a kstate event-sourced entity,
// written with the Go SDK.
//
// A cart belongs to one user (the entity id is AddLineItem.user_id and friends, marked with
// cloudstate.entity_key in shoppingcart.proto). Its state is a domainpb.Cart; it changes only
// through two events, domainpb.ItemAdded and domainpb.ItemRemoved, whose handlers are pure
// functions. The cart is snapshotted every SnapshotEvery events.
//
// Serve it in process with a kstate runtime, or standalone as a user function with
// cmd/shoppingcart-uf (sdk.ListenAndServe on USER_FUNCTION_HOST:USER_FUNCTION_PORT).
package shoppingcart

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/examples/shoppingcart/domainpb"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/sdk"
)

const (
	// ServiceName is the gRPC service the entity implements.
	ServiceName = "com.example.shoppingcart.ShoppingCart"
	// PersistenceID names the cart's journal (kstate's topics are derived from it). It is
	// Cloudstate's name for the sample, so journals written by other implementations of the
	// sample can be shared.
	PersistenceID = "shopping-cart"
	// SnapshotEvery is the snapshot interval in events. It is small, as in Cloudstate's samples
	// and TCK, so that snapshots show up after a handful of commands when trying the sample; a
	// real cart would use something like sdk.DefaultSnapshotEvery.
	SnapshotEvery = 5
)

// NewEntity returns the shopping cart entity definition.
func NewEntity() *sdk.EventSourcedEntity[*domainpb.Cart] {
	cart := sdk.NewEventSourced(ServiceName, func(string) *domainpb.Cart { return &domainpb.Cart{} }).
		PersistenceID(PersistenceID).
		SnapshotEvery(SnapshotEvery)
	sdk.Command(cart, "AddItem", AddItem)
	sdk.Command(cart, "RemoveItem", RemoveItem)
	sdk.Command(cart, "GetCart", GetCart)
	sdk.Event(cart, ItemAdded)
	sdk.Event(cart, ItemRemoved)
	return cart
}

// AddItem adds a quantity of a product to the cart: it emits ItemAdded. The quantity must be
// positive and the product id set.
func AddItem(ctx *sdk.CommandContext[*domainpb.Cart], in *shoppingcartpb.AddLineItem) (*emptypb.Empty, error) {
	if in.GetProductId() == "" {
		return nil, ctx.Fail("Cannot add an item without a product id.")
	}
	if in.GetQuantity() <= 0 {
		return nil, ctx.Fail("Quantity for item %s must be greater than zero.", in.GetProductId())
	}
	err := ctx.Emit(&domainpb.ItemAdded{Item: &domainpb.LineItem{
		ProductId: in.GetProductId(),
		Name:      in.GetName(),
		Quantity:  in.GetQuantity(),
	}})
	return &emptypb.Empty{}, err
}

// RemoveItem removes a product from the cart: it emits ItemRemoved. The product must be in the
// cart.
func RemoveItem(ctx *sdk.CommandContext[*domainpb.Cart], in *shoppingcartpb.RemoveLineItem) (*emptypb.Empty, error) {
	if find(ctx.State(), in.GetProductId()) < 0 {
		return nil, ctx.Fail("Cannot remove item %s because it is not in the cart.", in.GetProductId())
	}
	return &emptypb.Empty{}, ctx.Emit(&domainpb.ItemRemoved{ProductId: in.GetProductId()})
}

// GetCart returns the cart's items, sorted by product id.
func GetCart(ctx *sdk.CommandContext[*domainpb.Cart], _ *shoppingcartpb.GetShoppingCart) (*shoppingcartpb.Cart, error) {
	state := ctx.State()
	out := &shoppingcartpb.Cart{Items: make([]*shoppingcartpb.LineItem, 0, len(state.GetItems()))}
	for _, it := range state.GetItems() {
		out.Items = append(out.Items, &shoppingcartpb.LineItem{
			ProductId: it.GetProductId(),
			Name:      it.GetName(),
			Quantity:  it.GetQuantity(),
		})
	}
	slices.SortFunc(out.Items, func(a, b *shoppingcartpb.LineItem) int { return cmp.Compare(a.GetProductId(), b.GetProductId()) })
	return out, nil
}

// ItemAdded applies an ItemAdded event: a product already in the cart gets the quantities added
// (and keeps its name), a new one is inserted in product-id order.
func ItemAdded(cart *domainpb.Cart, e *domainpb.ItemAdded) *domainpb.Cart {
	if i := find(cart, e.GetItem().GetProductId()); i >= 0 {
		cart.Items[i].Quantity += e.GetItem().GetQuantity()
		return cart
	}
	i, _ := slices.BinarySearchFunc(cart.Items, e.GetItem().GetProductId(), func(it *domainpb.LineItem, id string) int {
		return cmp.Compare(it.GetProductId(), id)
	})
	cart.Items = slices.Insert(cart.Items, i, e.GetItem())
	return cart
}

// ItemRemoved applies an ItemRemoved event.
func ItemRemoved(cart *domainpb.Cart, e *domainpb.ItemRemoved) *domainpb.Cart {
	if i := find(cart, e.GetProductId()); i >= 0 {
		cart.Items = slices.Delete(cart.Items, i, i+1)
	}
	return cart
}

// find returns the index of productID in the cart, or -1.
func find(cart *domainpb.Cart, productID string) int {
	return slices.IndexFunc(cart.GetItems(), func(it *domainpb.LineItem) bool { return it.GetProductId() == productID })
}
