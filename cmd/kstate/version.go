package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print kstate's version, Go version and protocol version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "kstate %s\ngo %s %s/%s\ncloudstate protocol 0.2\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
