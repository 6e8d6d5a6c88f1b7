package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	"github.com/switchboard-im/switchboard/protocol"
)

// runInspect shows, as the operator, what waits for each of a user's
// devices: how many messages and receipts are stored past its position,
// and how old the oldest of them is.
func runInspect(args []string, out io.Writer) error {
	c := defaultAppConfig()
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.StringVar(&c.NATSURL, "nats", "nats://127.0.0.1:4222", "NATS URL")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory, whose nats/ holds the NATS keys unless --nats-keys says otherwise")
	bindNATSAuthFlags(fs, &c)
	user := fs.String("user", "", "the user whose devices to show")
	all := fs.Bool("all", false, "every device of every user: totals, and the devices waiting longest (a read per device)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *all == (*user != "") {
		return errors.New("inspect: give --user ID or --all")
	}
	if !*all && !protocol.ValidID(*user) {
		return errors.New("inspect: --user is not a valid user id")
	}
	ro, err := natsauth.RoleOptions(natsauth.Operator, c.natsKeysDir(), c.NATSCreds)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(c.NATSURL, append(ro, nats.Name("switchboard-inspect"))...)
	if err != nil {
		return fmt.Errorf("inspect: nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if *all {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		return inspectAll(ctx, nc, js, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waits, err := waiting(ctx, nc, js, *user)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if len(waits) == 0 {
		fmt.Fprintf(out, "%s has no device yet: everything stored for them waits for their first one\n", *user)
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DEVICE\tPOSITION\tWAITING\tOLDEST WAITING")
	for _, d := range waits {
		age := "-"
		if d.Waiting > 0 {
			age = time.Since(d.Oldest).Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", d.Device, d.Position, d.Waiting, age)
	}
	return w.Flush()
}

// inspectAll sums what waits over every device of every user and lists
// the devices waiting longest. It costs a read per device, so it is a
// command an operator runs, not a metric scraped every few seconds.
func inspectAll(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, out io.Writer) error {
	devicesKV, err := js.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	users, err := devicesKV.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	var devices, behind int
	var total uint64
	var rows []deviceWait
	for user := range users.Keys() {
		waits, err := waiting(ctx, nc, js, user)
		if err != nil {
			return fmt.Errorf("inspect: %s: %w", user, err)
		}
		for _, w := range waits {
			devices++
			if w.Waiting > 0 {
				behind++
				total += w.Waiting
				w.User = user
				rows = append(rows, w)
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Oldest.Before(rows[j].Oldest) })
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DEVICES\tWITH WAITING\tWAITING")
	fmt.Fprintf(w, "%d\t%d\t%d\n", devices, behind, total)
	if len(rows) > 0 {
		fmt.Fprintln(w, "\nUSER\tDEVICE\tWAITING\tOLDEST WAITING")
		for _, d := range rows[:min(len(rows), 10)] {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", d.User, d.Device, d.Waiting, time.Since(d.Oldest).Round(time.Second))
		}
	}
	return w.Flush()
}

// deviceWait is what waits for one device.
type deviceWait struct {
	User     string // with --all
	Device   string
	Position uint64 // everything at or below it is settled
	Waiting  uint64 // messages and receipts stored past it
	Oldest   time.Time
}

// waiting reads each of user's devices' position and what is stored past
// it.
func waiting(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, user string) ([]deviceWait, error) {
	inbox, err := js.Stream(ctx, contract.Inbox)
	if err != nil {
		return nil, err
	}
	created := inbox.CachedInfo().Created
	devicesKV, err := js.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		return nil, err
	}
	cursors, err := js.KeyValue(ctx, contract.CursorsKV)
	if err != nil {
		return nil, err
	}
	e, err := devicesKV.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ds contract.Devices
	if err := json.Unmarshal(e.Value(), &ds); err != nil {
		return nil, fmt.Errorf("devices of %s: %w", user, err)
	}
	var out []deviceWait
	for name := range ds.Devices {
		w := deviceWait{Device: name}
		if w.Position, err = contract.DevicePosition(ctx, devicesKV, cursors, created, user, name); err != nil {
			return nil, err
		}
		if w.Waiting, w.Oldest, err = contract.Waiting(ctx, nc, user, w.Position); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}
