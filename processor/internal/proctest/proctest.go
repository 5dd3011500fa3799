// Package proctest holds the few test helpers that the runtime's packages share (processor and
// its internal catalog and front door). It is imported by tests only.
package proctest

import (
	"io"
	"os"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Logger logs at warn (or KSTATE_TEST_LOG) to the test output.
func Logger(t testing.TB) hclog.Logger {
	lvl := os.Getenv("KSTATE_TEST_LOG")
	if lvl == "" {
		lvl = "warn"
	}
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.LevelFromString(lvl), Output: LogWriter(t)})
}

// LogWriter writes each Write to the test log.
func LogWriter(t testing.TB) io.Writer { return testWriter{t} }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
