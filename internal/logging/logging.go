// Package logging builds kstate's go-hclog loggers and adapts gRPC's logger to them.
//
// Adapters for franz-go and Pebble live next to the only packages allowed to import those
// libraries (broker and partition); this package stays a leaf.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Config selects the level, format and destination of kstate's logs.
type Config struct {
	// Level is one of trace, debug, info, warn, error, off. Empty means info.
	Level string
	// JSON switches to one JSON object per line.
	JSON bool
	// Output defaults to os.Stderr.
	Output io.Writer
	// Name is the root logger's name; empty means "kstate".
	Name string
}

// New returns the root logger for cfg. An unknown level is an error that lists the valid ones.
func New(cfg Config) (hclog.Logger, error) {
	lvl := hclog.Info
	if cfg.Level != "" {
		lvl = hclog.LevelFromString(cfg.Level)
		if lvl == hclog.NoLevel {
			return nil, fmt.Errorf("log level %q: want one of trace, debug, info, warn, error, off", cfg.Level)
		}
	}
	out := cfg.Output
	if out == nil {
		out = os.Stderr
	}
	name := cfg.Name
	if name == "" {
		name = "kstate"
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           lvl,
		JSONFormat:      cfg.JSON,
		Output:          out,
		IncludeLocation: false,
	}), nil
}

// OrDiscard returns l, or a logger that drops everything when l is nil. Components call it on the
// Logger field of their Config so a zero Config still works.
func OrDiscard(l hclog.Logger) hclog.Logger {
	if l == nil {
		return hclog.NewNullLogger()
	}
	return l
}

// GRPC adapts an hclog.Logger to grpclog.LoggerV2 one level lower than gRPC says: its info chatter
// at debug and its warnings at info, since both are about connection management (a peer or the
// user function reconnecting) rather than kstate's behaviour, which kstate logs itself; errors stay
// errors.
type GRPC struct {
	L hclog.Logger
}

// Info logs at debug (gRPC info is connection chatter).
func (g GRPC) Info(args ...any) { g.L.Debug(strings.TrimSpace(fmt.Sprint(args...))) }

// Infoln logs at debug.
func (g GRPC) Infoln(args ...any) { g.L.Debug(strings.TrimSpace(fmt.Sprintln(args...))) }

// Infof logs at debug.
func (g GRPC) Infof(format string, args ...any) { g.L.Debug(fmt.Sprintf(format, args...)) }

// Warning logs at info.
func (g GRPC) Warning(args ...any) { g.L.Info(strings.TrimSpace(fmt.Sprint(args...))) }

// Warningln logs at info.
func (g GRPC) Warningln(args ...any) { g.L.Info(strings.TrimSpace(fmt.Sprintln(args...))) }

// Warningf logs at info.
func (g GRPC) Warningf(format string, args ...any) { g.L.Info(fmt.Sprintf(format, args...)) }

// Error logs at error.
func (g GRPC) Error(args ...any) { g.L.Error(strings.TrimSpace(fmt.Sprint(args...))) }

// Errorln logs at error.
func (g GRPC) Errorln(args ...any) { g.L.Error(strings.TrimSpace(fmt.Sprintln(args...))) }

// Errorf logs at error.
func (g GRPC) Errorf(format string, args ...any) { g.L.Error(fmt.Sprintf(format, args...)) }

// Fatal logs at error and exits.
func (g GRPC) Fatal(args ...any) { g.L.Error(fmt.Sprint(args...)); os.Exit(1) }

// Fatalln logs at error and exits.
func (g GRPC) Fatalln(args ...any) { g.L.Error(fmt.Sprintln(args...)); os.Exit(1) }

// Fatalf logs at error and exits.
func (g GRPC) Fatalf(format string, args ...any) { g.L.Error(fmt.Sprintf(format, args...)); os.Exit(1) }

// V reports whether verbosity level l is enabled; gRPC's verbose logs map to hclog trace.
func (g GRPC) V(l int) bool { return g.L.IsTrace() }
