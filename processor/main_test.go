package processor

import (
	"os"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
)

// testLogger logs at warn (or KSTATE_TEST_LOG) to the test output.
func testLogger(t *testing.T) hclog.Logger {
	lvl := os.Getenv("KSTATE_TEST_LOG")
	if lvl == "" {
		lvl = "warn"
	}
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.LevelFromString(lvl), Output: testWriter{t}})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

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
