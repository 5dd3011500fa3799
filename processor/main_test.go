package processor

import (
	"testing"

	"github.com/kstatehq/kstate/processor/internal/proctest"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

// testLogger logs at warn (or KSTATE_TEST_LOG) to the test output.
func testLogger(t *testing.T) hclog.Logger { return proctest.Logger(t) }

// TestMain fails the package when a test leaves a goroutine behind: every goroutine of the
// runtime has an owner that stops it (partition loops, entities, committers, followers,
// side effects).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Pebble's and grpc's process-wide background workers, not owned by a node.
		goleak.IgnoreTopFunction("github.com/cockroachdb/pebble/v2/internal/cache.(*shard).releaseLoop"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}
