package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/kstatehq/kstate/processor"
)

// commit is the source revision, set with -ldflags "-X main.commit=..." (see the Makefile). The
// version lives in processor.Version, set the same way, because the node reports it to user
// functions too.
var commit = ""

func init() {
	processor.Version, commit = buildVersion(processor.Version, commit, debug.ReadBuildInfo)
}

// buildVersion returns the version and commit to report. Values stamped with -ldflags win; a
// binary built without them ("dev") falls back to what the Go toolchain recorded: the module
// version for `go install github.com/kstatehq/kstate/cmd/kstate@v1.2.3`, and the VCS revision
// for a build inside a git checkout.
func buildVersion(version, commit string, readBuildInfo func() (*debug.BuildInfo, bool)) (string, string) {
	bi, ok := readBuildInfo()
	if !ok {
		return version, commit
	}
	if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
	if commit == "" {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			commit = rev + dirty
		}
	}
	return version, commit
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print kstate's version and commit, Go version and protocol version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			c := commit
			if c == "" {
				c = "unknown"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kstate %s\ncommit %s\ngo %s %s/%s\ncloudstate protocol 0.2\n",
				processor.Version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
