package broker

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger adapts an hclog.Logger to kgo.Logger. franz-go logs every transaction begin/end and
// every group step at info, which is per-command chatter for kstate, so its levels move down one:
// kgo info → hclog debug, kgo debug → hclog trace; warnings and errors stay.
type kgoLogger struct{ l hclog.Logger }

var _ kgo.Logger = kgoLogger{}

// Level tells franz-go the most verbose level worth building messages for.
func (k kgoLogger) Level() kgo.LogLevel {
	switch {
	case k.l.IsTrace():
		return kgo.LogLevelDebug
	case k.l.IsDebug():
		return kgo.LogLevelInfo
	case k.l.IsWarn():
		return kgo.LogLevelWarn
	case k.l.IsError():
		return kgo.LogLevelError
	default:
		return kgo.LogLevelNone
	}
}

// Log forwards one message with its key/value pairs.
func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, keyvals...)
	case kgo.LogLevelWarn:
		k.l.Warn(msg, keyvals...)
	case kgo.LogLevelInfo:
		k.l.Debug(msg, keyvals...)
	case kgo.LogLevelDebug:
		k.l.Trace(msg, keyvals...)
	}
}

// kfakeLogger adapts an hclog.Logger to kfake.Logger, with the same one-level shift as kgoLogger
// (kfake logs each request at info).
type kfakeLogger struct{ l hclog.Logger }

var _ kfake.Logger = kfakeLogger{}

// Logf formats and forwards one message.
func (k kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var lvl hclog.Level
	var on bool
	switch level {
	case kfake.LogLevelError:
		lvl, on = hclog.Error, k.l.IsError()
	case kfake.LogLevelWarn:
		lvl, on = hclog.Warn, k.l.IsWarn()
	case kfake.LogLevelInfo:
		lvl, on = hclog.Debug, k.l.IsDebug()
	case kfake.LogLevelDebug:
		lvl, on = hclog.Trace, k.l.IsTrace()
	}
	if !on {
		return
	}
	k.l.Log(lvl, fmt.Sprintf(format, args...))
}
