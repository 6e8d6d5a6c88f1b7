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
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/load"
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
	Pinned    bool   // this region's users' messages are stored nowhere else
}

func bindRegionFlags(fs *flag.FlagSet, r *regionFlags) {
	fs.StringVar(&r.Region, "region", r.Region, "this region's name, which is also its NATS server's JetStream domain (empty: a single region)")
	fs.StringVar(&r.Regions, "regions", r.Regions, "every region of the deployment and where its devices connect: us=wss://us.example/v1/ws,eu=...")
	fs.StringVar(&r.Directory, "directory-region", r.Directory, "the region whose HOMES bucket is the directory of home regions (default: the first in --regions)")
	fs.BoolVar(&r.Pinned, "pinned", r.Pinned, "keep this region's users' messages in it: refuse their sends to users homed in other regions (every gateway of the region alike)")
}

// parse reads --regions into URLs by name and the names in order.
func (r regionFlags) parse() (map[string]string, []string, error) {
	if r.Region == "" {
		if r.Regions != "" || r.Directory != "" || r.Pinned {
			return nil, nil, errors.New("--regions, --directory-region and --pinned need --region")
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
	return gateway.RegionsConfig{Region: r.Region, URLs: urls, Pinned: r.Pinned}, nil
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
		// Homes do not move in this version: gateways and functions keep
		// a user's home once read, so a moved user's messages would be
		// split between two inboxes. A home given again is no change.
		_, err := kv.Create(ctx, h.user, []byte(h.region))
		if errors.Is(err, jetstream.ErrKeyExists) {
			e, gerr := kv.Get(ctx, h.user)
			switch {
			case gerr != nil:
				return fmt.Errorf("home: %s: %w", h.user, gerr)
			case string(e.Value()) != h.region:
				return fmt.Errorf("home: %s is homed in %s already; homes do not move in this version", h.user, e.Value())
			}
			err = nil
		}
		if err != nil {
			return fmt.Errorf("home: %s: %w (is --nats the directory region? the others hold a read-only mirror)", h.user, err)
		}
		fmt.Fprintf(out, "%s is homed in %s\n", h.user, h.region)
	}
	return nil
}

// regionURLs is a bench flag naming a region and its gateways:
// REGION=URL, repeatable for more gateways of the same region.
type regionURLs struct {
	region string
	urls   []string
}

func (r *regionURLs) String() string {
	if r.region == "" {
		return ""
	}
	return r.region + "=" + strings.Join(r.urls, ",")
}

func (r *regionURLs) Set(v string) error {
	name, url, ok := strings.Cut(v, "=")
	if !ok || !protocol.ValidID(name) || url == "" {
		return fmt.Errorf("%q is not REGION=ws://host:port/v1/ws", v)
	}
	if r.region != "" && r.region != name {
		return fmt.Errorf("one region per flag: %s and %s", r.region, name)
	}
	r.region = name
	r.urls = append(r.urls, url)
	return nil
}

// checkPlacement checks the bench flags of a pairs run on a regions
// deployment.
func checkPlacement(scenario string, urls []string, natsURL string, senders, recipients regionURLs) error {
	switch {
	case scenario != load.ScenarioPairs:
		return errors.New("bench: --senders-in and --recipients-in are for --scenario pairs")
	case senders.region == "" || recipients.region == "":
		return errors.New("bench: --senders-in and --recipients-in go together")
	case len(urls) > 0:
		return errors.New("bench: --senders-in and --recipients-in name the gateways: no --url")
	case natsURL == "":
		return errors.New("bench: --senders-in needs --nats, the directory region's NATS, to give the users their homes")
	}
	return nil
}

// benchHomes writes a bench run's homes in the directory, as the
// operator on natsURL, and waits until each of regions reads them (in
// its own HOMES, through its JetStream domain).
func benchHomes(natsURL string, opts []nats.Option, regions []string) func(context.Context, map[string]string) error {
	return func(ctx context.Context, homes map[string]string) error {
		nc, err := nats.Connect(natsURL, append(opts, nats.Name("switchboard-bench-homes"))...)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		kv, err := js.KeyValue(ctx, contract.HomesKV)
		if err != nil {
			return fmt.Errorf("bucket %s (is --nats the directory region?): %w", contract.HomesKV, err)
		}
		for user, region := range homes {
			if _, err := kv.PutString(ctx, user, region); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for _, region := range regions {
			rjs, err := jetstream.NewWithDomain(nc, region)
			if err != nil {
				return err
			}
			rkv, err := rjs.KeyValue(ctx, contract.HomesKV)
			if err != nil {
				return fmt.Errorf("region %s: %w", region, err)
			}
			for user, want := range homes {
				for {
					e, err := rkv.Get(ctx, user)
					if err == nil && string(e.Value()) == want {
						break
					}
					if ctx.Err() != nil {
						return fmt.Errorf("region %s does not read %s's home: %w", region, user, err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		return nil
	}
}
