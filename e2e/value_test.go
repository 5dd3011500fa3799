package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kstatehq/kstate/examples/valuecart/valuecartpb"
)

// TestValueEntityAfterKill: value carts written through node A are read through node B after
// A is killed (-9): B restores A's partitions from the compacted state topic and returns the last
// committed state, including deletes.
func TestValueEntityAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("separate processes and a kill -9: not in -short")
	}
	c := newClusterOf(t, 2, "valuecart")
	a, b := c.nodes[0], c.nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca := valuecartpb.NewShoppingCartClient(a.cc)
	const carts = 12
	for i := 0; i < carts; i++ {
		user := fmt.Sprintf("vc-%d", i)
		for q := int32(1); q <= 3; q++ { // three updates: the last one wins
			if _, err := ca.AddItem(ctx, &valuecartpb.AddLineItem{UserId: user, ProductId: "p", Name: "P", Quantity: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if i%4 == 0 {
			if _, err := ca.RemoveCart(ctx, &valuecartpb.RemoveShoppingCart{UserId: user}); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.kill9(t)
	cb := valuecartpb.NewShoppingCartClient(b.cc)
	for i := 0; i < carts; i++ {
		user := fmt.Sprintf("vc-%d", i)
		var cart *valuecartpb.Cart
		deadline := time.Now().Add(40 * time.Second)
		for {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			cart, err = cb.GetCart(cctx, &valuecartpb.GetShoppingCart{UserId: user})
			ccancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GetCart %s from B after killing A: %v", user, err)
			}
			time.Sleep(50 * time.Millisecond) // poll interval of a bounded wait
		}
		want := int32(3)
		if i%4 == 0 {
			want = 0 // removed
		}
		var got int32
		for _, it := range cart.GetItems() {
			got += it.GetQuantity()
		}
		if got != want {
			t.Fatalf("cart %s read from B: quantity %d, want %d (%v)", user, got, want, cart)
		}
	}
}
