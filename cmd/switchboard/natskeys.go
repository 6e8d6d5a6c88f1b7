package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/switchboard-im/switchboard/internal/natsauth"
)

// runNATSKeys makes a key for every role, for a NATS that runs from
// deploy/*.conf: the seeds (one file per role, for the component in that
// role alone) and nats.env, the public keys and cluster route password the
// configs read from the environment.
func runNATSKeys(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("nats-keys", flag.ContinueOnError)
	dir := fs.String("out", "", "directory to write the keys into (required; must not hold keys yet)")
	routes := fs.String("routes", "", "cluster routes as host:port,... (default: deploy/cluster's three local nodes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("nats-keys: --out is required")
	}
	keys, err := natsauth.Generate()
	if err != nil {
		return err
	}
	if err := keys.Write(*dir); err != nil {
		return fmt.Errorf("nats-keys: %w", err)
	}
	pw, err := natsauth.NewRoutePassword()
	if err != nil {
		return err
	}
	hosts := natsauth.DefaultRoutes
	if *routes != "" {
		hosts = splitList(*routes)
	}
	env := keys.DeployEnv(pw, hosts)
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	envFile := filepath.Join(*dir, "nats.env")
	f, err := os.OpenFile(envFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("nats-keys: %w", err)
	}
	for _, k := range names {
		fmt.Fprintf(f, "export %s='%s'\n", k, env[k])
	}
	if err := f.Close(); err != nil {
		return err
	}
	abs, _ := filepath.Abs(*dir)
	fmt.Fprintf(out, `wrote one NKey seed per role and nats.env to %s

start nats-server with the public keys in its environment:
  set -a; . %s; set +a
  nats-server -c deploy/nats-single.conf

give each component only its own seed (gateway.nk to gateways, receipts.nk
to the receipts function, ...) with --nats-keys DIR, create the streams as
the operator, and use the nats CLI as the operator:
  switchboard setup --nats nats://127.0.0.1:4222 --nats-keys %s
  nats --nkey %s stream ls
`, abs, filepath.Join(abs, "nats.env"), abs, natsauth.SeedFile(abs, natsauth.Operator))
	return nil
}
