package partition

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
)

// pebbleLogger adapts an hclog.Logger to pebble.Logger.
type pebbleLogger struct {
	l hclog.Logger
}

var _ pebble.Logger = pebbleLogger{}

// Infof logs at debug level: Pebble's info (WAL recovery, compaction notes) is about its own
// housekeeping and would drown kstate's own lines at info.
func (p pebbleLogger) Infof(format string, args ...interface{}) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

// Errorf logs at error level.
func (p pebbleLogger) Errorf(format string, args ...interface{}) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf logs at error level and panics: Pebble calls it only when it cannot continue (data
// corruption, an invariant broken) and expects it not to return. A panic, unlike os.Exit, runs
// deferred functions and shows the stack.
func (p pebbleLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("fatal pebble error", "error", msg)
	panic("pebble: " + msg)
}

// eventListener logs the Pebble events an operator needs to see: background errors, slow disks,
// write stalls, low disk space. With a debug logger it also logs flushes, compactions and WAL
// changes, as Pebble's own logging listener does.
func eventListener(l hclog.Logger) *pebble.EventListener {
	var el pebble.EventListener
	if l.IsDebug() {
		el = pebble.MakeLoggingEventListener(pebbleLogger{l: debugLogger{l}})
	}
	el.BackgroundError = func(err error) {
		l.Error("pebble background error", "error", err)
	}
	el.DiskSlow = func(info pebble.DiskSlowInfo) {
		l.Warn("pebble disk slow", "info", info.String())
	}
	el.WriteStallBegin = func(info pebble.WriteStallBeginInfo) {
		l.Warn("pebble write stall begins", "reason", info.Reason)
	}
	el.WriteStallEnd = func() {
		l.Info("pebble write stall ends")
	}
	el.LowDiskSpace = func(info pebble.LowDiskSpaceInfo) {
		l.Warn("pebble low disk space", "info", info.String())
	}
	return &el
}

// debugLogger routes Info to Debug, for Pebble's chatty event log.
type debugLogger struct{ hclog.Logger }

// Info logs at debug level.
func (d debugLogger) Info(msg string, args ...interface{}) { d.Logger.Debug(msg, args...) }
