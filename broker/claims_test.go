package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestClaimPersistenceIDs(t *testing.T) {
	onEachBroker(t, func(t *testing.T, tg target) { testClaims(t, tg) })
}

func testClaims(t *testing.T, tg target) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := testConfig(t, tg)
	cfgFor := func(app string) Config {
		cfg := base
		cfg.App = app
		return cfg
	}
	a, b := cfgFor("shop"), cfgFor("shop-typo")
	adm, err := NewAdmin(a)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := adm.EnsureTopics(ctx, a.AppTopics(map[string]EntityKind{"cart": EventSourced})); err != nil {
		t.Fatal(err)
	}
	if err := ClaimPersistenceIDs(ctx, a, []string{"cart", "orders"}); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if err := ClaimPersistenceIDs(ctx, a, []string{"cart"}); err != nil {
		t.Fatalf("the same app claims again (another node, a restart): %v", err)
	}
	err = ClaimPersistenceIDs(ctx, b, []string{"other", "cart"})
	var ce *ClaimError
	if !errors.As(err, &ce) || !errors.Is(err, ErrClaimed) || ce.PersistenceID != "cart" || ce.App != "shop" || ce.Ours != "shop-typo" {
		t.Fatalf("another app: got %v, want a ClaimError for cart held by shop", err)
	}

	// Two apps racing for a new id agree on one winner.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, cfg := range []Config{cfgFor("x"), cfgFor("y")} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ClaimPersistenceIDs(ctx, cfg, []string{"contested"})
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || !(errors.Is(errs[0], ErrClaimed) || errors.Is(errs[1], ErrClaimed)) {
		t.Fatalf("racing claims: %v / %v, want exactly one winner", errs[0], errs[1])
	}
}
