// Package validator is a stateless kstate action, written with the Go SDK, that guards the
// event-sourced shopping cart of examples/shoppingcart: it checks cart requests and passes the
// valid ones on to com.example.shoppingcart.ShoppingCart.
//
// Its service, com.example.validator.CartValidator (validator.proto), has a method of three of
// the four gRPC shapes:
//   - AddItem (unary) validates one item and forwards it to ShoppingCart/AddItem, so the client
//     receives the cart's reply; an invalid item fails with a message that says what is wrong.
//   - AddItems (streamed in) validates a stream of items, adds the valid ones to their carts with
//     synchronous side effects, and replies with the count of accepted items and the rejected
//     ones.
//   - CheckItems (streamed out) validates items without adding them, one verdict per item.
//
// A forward or side effect goes to a service of the same user function, so the validator is
// served together with the cart: Entities returns both, ready for sdk.ListenAndServe (as
// cmd/validator-uf does) or a kstate runtime.
package validator

import (
	"fmt"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/examples/shoppingcart"
	"github.com/kstatehq/kstate/examples/shoppingcart/shoppingcartpb"
	"github.com/kstatehq/kstate/examples/validator/validatorpb"
	"github.com/kstatehq/kstate/sdk"
)

const (
	// ServiceName is the gRPC service the action implements.
	ServiceName = "com.example.validator.CartValidator"
	// MaxQuantity is the largest quantity of a product one request may add.
	MaxQuantity = 1000
)

// NewEntity returns the validator action's definition. Its forwards and side effects go to
// shoppingcart.ServiceName, which must be served by the same user function (see Entities).
func NewEntity() *sdk.Action {
	a := sdk.NewAction(ServiceName)
	sdk.ActionUnary(a, "AddItem", AddItem)
	sdk.ActionStreamedIn(a, "AddItems", AddItems)
	sdk.ActionStreamedOut(a, "CheckItems", CheckItems)
	return a
}

// Entities returns the validator together with the shopping cart it forwards to, for
// sdk.ListenAndServe, sdk.Server.Register or a kstate runtime.
func Entities() []sdk.Entity {
	return []sdk.Entity{NewEntity(), shoppingcart.NewEntity()}
}

// Validate returns why item cannot be added to a cart, or "" when it can: the user id and the
// product id must be set, and the quantity must be between 1 and MaxQuantity.
func Validate(item *shoppingcartpb.AddLineItem) string {
	switch q := item.GetQuantity(); {
	case item.GetUserId() == "":
		return "The user id must not be empty."
	case item.GetProductId() == "":
		return "The product id must not be empty."
	case q < 1 || q > MaxQuantity:
		return fmt.Sprintf("Quantity for item %s must be between 1 and %d, got %d.", item.GetProductId(), MaxQuantity, q)
	}
	return ""
}

// AddItem validates in and forwards it to the shopping cart, whose reply the client receives.
// An invalid item fails with Validate's message.
func AddItem(ctx *sdk.ActionContext, in *shoppingcartpb.AddLineItem) (*emptypb.Empty, error) {
	if reason := Validate(in); reason != "" {
		return nil, ctx.Fail("%s", reason)
	}
	return nil, ctx.Forward(shoppingcart.ServiceName, "AddItem", in)
}

// AddItems validates each item of the stream. A valid item is added to its cart by a synchronous
// side effect, which the proxy completes before it replies; an invalid one is reported in the
// result.
func AddItems(ctx *sdk.ActionContext, in *sdk.ActionStream[*shoppingcartpb.AddLineItem]) (*validatorpb.AddItemsResult, error) {
	res := &validatorpb.AddItemsResult{}
	index := int32(0)
	for item, err := range in.All() {
		if err != nil {
			return nil, err
		}
		if check := checkItem(index, item); !check.GetValid() {
			res.Rejected = append(res.Rejected, check)
		} else {
			if err := ctx.SideEffect(shoppingcart.ServiceName, "AddItem", item, true); err != nil {
				return nil, err
			}
			res.Accepted++
		}
		index++
	}
	return res, nil
}

// CheckItems sends a verdict for each item of the request, in order. It adds nothing.
func CheckItems(_ *sdk.ActionContext, in *validatorpb.CheckItemsRequest, send func(*validatorpb.ItemCheck) error) error {
	for i, item := range in.GetItems() {
		if err := send(checkItem(int32(i), item)); err != nil {
			return err
		}
	}
	return nil
}

func checkItem(index int32, item *shoppingcartpb.AddLineItem) *validatorpb.ItemCheck {
	reason := Validate(item)
	return &validatorpb.ItemCheck{Index: index, ProductId: item.GetProductId(), Valid: reason == "", Reason: reason}
}
