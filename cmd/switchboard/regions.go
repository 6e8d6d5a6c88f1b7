package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// regionFlags place a process in a regions deployment (README,
// "Regions"): setup lays the region out, the all-in-one and gateways
// serve only its users. Unset: a single region.
type regionFlags struct {
	Region    string
	Regions   string // name=url,... every region, this one included
	Directory string // the region holding HOMES; default: the first listed
}

func bindRegionFlags(fs *flag.FlagSet, r *regionFlags) {
	fs.StringVar(&r.Region, "region", r.Region, "this region's name, which is also its NATS server's JetStream domain (empty: a single region)")
	fs.StringVar(&r.Regions, "regions", r.Regions, "every region of the deployment and where its devices connect: us=wss://us.example/v1/ws,eu=...")
	fs.StringVar(&r.Directory, "directory-region", r.Directory, "the region whose HOMES bucket is the directory of home regions (default: the first in --regions)")
}

// parse reads --regions into URLs by name and the names in order.
func (r regionFlags) parse() (map[string]string, []string, error) {
	if r.Region == "" {
		if r.Regions != "" || r.Directory != "" {
			return nil, nil, errors.New("--regions and --directory-region need --region")
		}
		return nil, nil, nil
	}
	urls := map[string]string{}
	var names []string
	for _, kv := range splitList(r.Regions) {
		name, url, ok := strings.Cut(kv, "=")
		if !ok || name == "" || url == "" {
			return nil, nil, fmt.Errorf("--regions: %q is not name=url", kv)
		}
		if _, dup := urls[name]; dup {
			return nil, nil, fmt.Errorf("--regions: %s named twice", name)
		}
		urls[name] = url
		names = append(names, name)
	}
	if _, ok := urls[r.Region]; !ok {
		return nil, nil, fmt.Errorf("--regions must list this region (%s) and its URL", r.Region)
	}
	return urls, names, nil
}

// gateway is the gateway's place in the deployment.
func (r regionFlags) gateway() (gateway.RegionsConfig, error) {
	urls, _, err := r.parse()
	if err != nil || urls == nil {
		return gateway.RegionsConfig{}, err
	}
	return gateway.RegionsConfig{Region: r.Region, URLs: urls}, nil
}

// layout is the streams layout of this region.
func (r regionFlags) layout() (*streams.Region, error) {
	urls, names, err := r.parse()
	if err != nil || urls == nil {
		return nil, err
	}
	l := &streams.Region{Name: r.Region, Directory: r.Directory}
	if l.Directory == "" {
		l.Directory = names[0]
	}
	for _, n := range names {
		if n != r.Region {
			l.Peers = append(l.Peers, n)
		}
	}
	return l, l.Validate()
}

// runHome records users' home regions in the directory, as the operator,
// on the directory region's NATS: switchboard home --nats URL alice=us bob=eu.
// Every assignment is checked before any is written: user=region, and a
// region this deployment lays out (the server's own domain or one its
// INBOX sources), so a typo cannot home a user nowhere.
func runHome(args []string, out io.Writer) error {
	c := defaultAppConfig()
	fs := flag.NewFlagSet("home", flag.ContinueOnError)
	fs.StringVar(&c.NATSURL, "nats", "", "the directory region's NATS URL (required)")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory, whose nats/ holds the NATS keys unless --nats-keys says otherwise")
	bindNATSAuthFlags(fs, &c)
	if err := parseFlagsArgs(fs, args); err != nil {
		return err
	}
	if c.NATSURL == "" || fs.NArg() == 0 {
		return errors.New("home: usage: switchboard home --nats URL user=region ...")
	}
	type home struct{ user, region string }
	var homes []home
	for _, a := range fs.Args() {
		user, region, ok := strings.Cut(a, "=")
		if !ok || !protocol.ValidID(user) || !protocol.ValidID(region) {
			return fmt.Errorf("home: %q is not user=region", a)
		}
		homes = append(homes, home{user, region})
	}
	ro, err := natsauth.RoleOptions(natsauth.Operator, c.natsKeysDir(), c.NATSCreds)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(c.NATSURL, append(ro, nats.Name("switchboard-home"))...)
	if err != nil {
		return fmt.Errorf("home: %w", err)
	}
	defer nc.Close()
	js, err := newJetStream(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	known, err := streams.DeployedRegions(ctx, js)
	if err != nil {
		return fmt.Errorf("home: %w", err)
	}
	for _, h := range homes {
		if !slices.Contains(known, h.region) {
			return fmt.Errorf("home: %s: region %q is not one of this deployment's (%s)", h.user, h.region, strings.Join(known, ", "))
		}
	}
	kv, err := js.KeyValue(ctx, contract.HomesKV)
	if err != nil {
		return fmt.Errorf("home: bucket %s (run setup with --region first, on the directory region): %w", contract.HomesKV, err)
	}
	for _, h := range homes {
		if _, err := kv.PutString(ctx, h.user, h.region); err != nil {
			return fmt.Errorf("home: %s: %w (is --nats the directory region? the others hold a read-only mirror)", h.user, err)
		}
		fmt.Fprintf(out, "%s is homed in %s\n", h.user, h.region)
	}
	return nil
}
