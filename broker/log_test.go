package broker

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestKgoLoggerLevels(t *testing.T) {
	for _, tc := range []struct {
		level hclog.Level
		want  kgo.LogLevel
	}{
		{hclog.Trace, kgo.LogLevelDebug},
		{hclog.Debug, kgo.LogLevelInfo},
		{hclog.Info, kgo.LogLevelWarn},
		{hclog.Warn, kgo.LogLevelWarn},
		{hclog.Error, kgo.LogLevelError},
		{hclog.Off, kgo.LogLevelNone},
	} {
		l := kgoLogger{hclog.New(&hclog.LoggerOptions{Level: tc.level, Output: &bytes.Buffer{}})}
		if got := l.Level(); got != tc.want {
			t.Errorf("hclog %v: kgo level %v, want %v", tc.level, got, tc.want)
		}
	}
	var buf bytes.Buffer
	l := kgoLogger{hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &buf})}
	l.Log(kgo.LogLevelInfo, "beginning transaction", "transactional_id", "ns.app.p1")
	l.Log(kgo.LogLevelDebug, "hidden chatter")
	l.Log(kgo.LogLevelWarn, "a warning", "err", "boom")
	out := buf.String()
	if !strings.Contains(out, "[DEBUG] beginning transaction: transactional_id=ns.app.p1") ||
		!strings.Contains(out, "[WARN]  a warning: err=boom") || strings.Contains(out, "hidden") {
		t.Fatalf("got %q", out)
	}
}

func TestKfakeLogger(t *testing.T) {
	var buf bytes.Buffer
	l := kfakeLogger{hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: &buf})}
	l.Logf(kfake.LogLevelInfo, "request %d", 7)
	l.Logf(kfake.LogLevelDebug, "hidden")
	l.Logf(kfake.LogLevelError, "bad %s", "thing")
	out := buf.String()
	if !strings.Contains(out, "[DEBUG] request 7") || !strings.Contains(out, "[ERROR] bad thing") || strings.Contains(out, "hidden") {
		t.Fatalf("got %q", out)
	}
}
