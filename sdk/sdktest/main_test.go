package sdktest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (duplex calls run their handlers in
// goroutines of their own).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
