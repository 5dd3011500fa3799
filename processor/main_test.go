package processor

import (
	"os"
	"testing"

	"github.com/hashicorp/go-hclog"
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
