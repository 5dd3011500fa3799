// Package valuecart is Cloudstate's shopping cart sample as a kstate value entity, written with
// the Go SDK.
//
// The business rules are those of the event-sourced cart in examples/shoppingcart: a cart belongs
// to one user (the entity id is the request's user_id, marked with cloudstate.entity_key in
// valuecart.proto); adding a product needs a product id and a positive quantity, and adds to the
// quantity of a product already in the cart (keeping its first name); removing a product needs it
// to be in the cart; the cart lists its items by product id. In addition, RemoveCart deletes the
// cart.
//
// Where the event-sourced cart records events, this one stores its whole state, a domainpb.Cart,
// on every change (kstate keeps it in a compacted Kafka topic), and RemoveCart deletes it.
//
// Serve it in process with a kstate runtime, or standalone as a user function with
// cmd/valuecart-uf (sdk.ListenAndServe on USER_FUNCTION_HOST:USER_FUNCTION_PORT).
package valuecart

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/examples/valuecart/domainpb"
	"github.com/kstatehq/kstate/examples/valuecart/valuecartpb"
	"github.com/kstatehq/kstate/sdk"
)

const (
	// ServiceName is the gRPC service the entity implements.
	ServiceName = "com.example.valueentity.shoppingcart.ShoppingCart"
	// PersistenceID names the carts' storage (kstate derives its Kafka topic from it). It differs
	// from the event-sourced cart's, so both samples can run in one application.
	PersistenceID = "value-shopping-cart"
)

// NewEntity returns the value-entity shopping cart definition.
func NewEntity() *sdk.ValueEntity[*domainpb.Cart] {
	cart := sdk.NewValue(ServiceName, func(string) *domainpb.Cart { return &domainpb.Cart{} }).
		PersistenceID(PersistenceID)
	sdk.ValueCommand(cart, "AddItem", AddItem)
	sdk.ValueCommand(cart, "RemoveItem", RemoveItem)
	sdk.ValueCommand(cart, "GetCart", GetCart)
	sdk.ValueCommand(cart, "RemoveCart", RemoveCart)
	return cart
}

// AddItem adds a quantity of a product to the cart and stores it. The quantity must be positive
// and the product id set. A product already in the cart gets the quantities added and keeps its
// name; a new one is inserted in product-id order.
func AddItem(ctx *sdk.ValueContext[*domainpb.Cart], in *valuecartpb.AddLineItem) (*emptypb.Empty, error) {
	if in.GetProductId() == "" {
		return nil, ctx.Fail("Cannot add an item without a product id.")
	}
	if in.GetQuantity() <= 0 {
		return nil, ctx.Fail("Quantity for item %s must be greater than zero.", in.GetProductId())
	}
	cart := ctx.State()
	if i := find(cart, in.GetProductId()); i >= 0 {
		cart.Items[i].Quantity += in.GetQuantity()
	} else {
		i, _ := slices.BinarySearchFunc(cart.Items, in.GetProductId(), func(it *domainpb.LineItem, id string) int {
			return cmp.Compare(it.GetProductId(), id)
		})
		cart.Items = slices.Insert(cart.Items, i, &domainpb.LineItem{
			ProductId: in.GetProductId(),
			Name:      in.GetName(),
			Quantity:  in.GetQuantity(),
		})
	}
	return &emptypb.Empty{}, ctx.Update(cart)
}

// RemoveItem removes a product from the cart and stores it. The product must be in the cart.
func RemoveItem(ctx *sdk.ValueContext[*domainpb.Cart], in *valuecartpb.RemoveLineItem) (*emptypb.Empty, error) {
	cart := ctx.State()
	i := find(cart, in.GetProductId())
	if i < 0 {
		return nil, ctx.Fail("Cannot remove item %s because it is not in the cart.", in.GetProductId())
	}
	cart.Items = slices.Delete(cart.Items, i, i+1)
	return &emptypb.Empty{}, ctx.Update(cart)
}

// GetCart returns the cart's items, sorted by product id. It stores nothing.
func GetCart(ctx *sdk.ValueContext[*domainpb.Cart], _ *valuecartpb.GetShoppingCart) (*valuecartpb.Cart, error) {
	state := ctx.State()
	out := &valuecartpb.Cart{Items: make([]*valuecartpb.LineItem, 0, len(state.GetItems()))}
	for _, it := range state.GetItems() {
		out.Items = append(out.Items, &valuecartpb.LineItem{
			ProductId: it.GetProductId(),
			Name:      it.GetName(),
			Quantity:  it.GetQuantity(),
		})
	}
	// Stored carts are sorted already; sorting here keeps the reply's order a promise of GetCart
	// rather than of every writer of the stored value.
	slices.SortFunc(out.Items, func(a, b *valuecartpb.LineItem) int { return cmp.Compare(a.GetProductId(), b.GetProductId()) })
	return out, nil
}

// RemoveCart deletes the cart: its stored value is deleted, and the user starts again from an
// empty cart. Removing a cart that does not exist succeeds.
func RemoveCart(ctx *sdk.ValueContext[*domainpb.Cart], _ *valuecartpb.RemoveShoppingCart) (*emptypb.Empty, error) {
	ctx.Delete()
	return &emptypb.Empty{}, nil
}

// find returns the index of productID in the cart, or -1.
func find(cart *domainpb.Cart, productID string) int {
	return slices.IndexFunc(cart.GetItems(), func(it *domainpb.LineItem) bool { return it.GetProductId() == productID })
}
