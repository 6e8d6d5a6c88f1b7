package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/nats-io/nats-server/v2/server"
)

// printVersion prints the binary's module version (a tagged release, or
// the commit it was built from) and the NATS server it embeds.
func printVersion(out io.Writer) {
	version, commit := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	if commit != "" {
		version += " (" + commit + ")"
	}
	fmt.Fprintf(out, "switchboard %s\nnats-server %s\n", version, server.VERSION)
}
