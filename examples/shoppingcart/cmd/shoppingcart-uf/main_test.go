package main

import (
	"testing"

	"github.com/kstatehq/kstate/examples/internal/uftest"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

const childEnv = "SHOPPINGCART_UF_TEST_CHILD"

// TestMain runs main itself when the test binary is started as the child process of
// TestStandalone.
func TestMain(m *testing.M) { uftest.Main(m, childEnv, main) }

// TestStandalone starts the user function as a process on USER_FUNCTION_HOST/PORT, discovers it
// like a proxy, and stops it with SIGTERM.
func TestStandalone(t *testing.T) {
	uftest.Standalone(t, childEnv, func(spec *cloudstatepb.EntitySpec) {
		if len(spec.GetEntities()) != 1 || spec.GetEntities()[0].GetServiceName() != "com.example.shoppingcart.ShoppingCart" {
			t.Fatalf("entities %v", spec.GetEntities())
		}
	})
}
