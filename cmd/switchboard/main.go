// Command switchboard runs Switchboard: with no subcommand (or "serve") the
// whole system in one process; "gateway" a gateway against an existing NATS;
// "token" mints a device token.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd = "help"
	}
	var err error
	switch cmd {
	case "serve":
		err = runServe(args, true)
	case "gateway":
		err = runServe(args, false)
	case "function":
		err = runFunction(args)
	case "setup":
		err = runSetup(args, os.Stdout)
	case "home":
		err = runHome(args, os.Stdout)
	case "nats-keys":
		err = runNATSKeys(args, os.Stdout)
	case "inspect":
		err = runInspect(args, os.Stdout)
	case "token":
		err = runToken(args, os.Stdout)
	case "chat":
		err = runChat(args, os.Stdin, os.Stdout)
	case "bench":
		err = runBench(args, os.Stdout, os.Stderr)
	case "version":
		printVersion(os.Stdout)
	case "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "switchboard: unknown command %q\n", cmd)
		usage()
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: switchboard [command] [flags]

commands:
  serve      (default) embedded NATS with JetStream, streams, worker functions and gateway in one process
  gateway    a gateway only, against --nats URL (it needs the all-in-one's token key: --data or --jwt-secret)
  function   run one worker function: switchboard function receipts|presence|push|media|groups --nats URL
  setup      create or update the streams on a NATS, as the operator: switchboard setup --nats URL
  home       give users their home regions (a regions deployment): switchboard home --nats URL alice=us bob=eu
  nats-keys  make a NATS key per role for deploy/*.conf: switchboard nats-keys --out DIR
  inspect    what waits for each of a user's devices: switchboard inspect --user bob
  token      mint a device token: switchboard token --user alice --device phone
  chat       a terminal chat client: switchboard chat --token T --to bob
  bench      load a running system (or --spawn one) with SDK devices: switchboard bench --scenario pairs --spawn
  version    print the version of switchboard and of the NATS server it embeds

Run "switchboard COMMAND -h" for a command's flags ("switchboard serve -h"
for the all-in-one's). Every flag can also be set as SWITCHBOARD_<FLAG>
(e.g. --send-rate is SWITCHBOARD_SEND_RATE).
`)
}
