package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/internal/load"
	"github.com/switchboard-im/switchboard/internal/natsauth"
)

const benchUsage = `usage: switchboard bench --scenario NAME [target] [sizes] [--json FILE]

Drives a running Switchboard with the Go SDK over real WebSockets, runs a raw
JetStream baseline (async publish, durable consumer with explicit acks, same
message size) on the same NATS in the same run, and prints every figure with
its ratio to that baseline. Messages are counted like Jepsen's queue checker:
every message acked "sent" must be delivered (lost, duplicated and reordered
are reported).

scenarios:
  idle     --devices N connected devices, no traffic: bytes of server RSS per
           device (gateway + NATS) and the connect rate (QUALITY.md P3);
           with --clients K the devices are held by K child processes, for
           more than one process has sockets for (P10: 100,000 at once)
  pairs    --pairs N sender/recipient pairs for --duration, at a total --rate
           msgs/s or flat out (--rate 0) with --inflight K sends per sender;
           recipients ack, senders wait for the delivered receipt: throughput
           and send→sent, send→deliver, send→receipt latencies (P1, P2)
  storm    --devices N, each sent --pending P messages while disconnected, then
           all reconnect at once: time until all are back and drained (P5)
  offline  --users N never connected (or, --first-connect, connected once)
           receive --messages M each while away: server RSS before
           and after (P4); then --sample S of them connect and drain
  groups   --groups G groups of --group-size N members, all online, one
           sender each, for --duration at a total --rate or flat out: member
           deliveries/s against raw publish (P7), send→each member and
           send→last member latencies, stored bytes per group message
  groupstorm --groups G groups of --group-size N, each member user in
           --memberships K of them; members go away, each group's sender sends
           --pending P, all members reconnect at once: time until all are
           back and have every message of every group (P5 for groups)

target (one of):
  --spawn                start the all-in-one from this binary in a temp dir
                         (rate limits lifted), plus --gateways N more gateways
  --url ws://H:P/v1/ws   gateways to load (repeat or comma-separate), with
                         --nats URL, --jwt-secret S or --data DIR, and
                         --pids GW,...,NATS (or --gateway-pid, --nats-pid) for
                         memory and CPU from /proc, and --metrics URL (each
                         gateway's --metrics-listen, http://H:P/metrics) for
                         its error and close counters. The gateways'
                         per-connection send rate limit must allow the load
                         (--send-rate).
  --senders-in R=URL --recipients-in R=URL
                         pairs on a regions deployment (README, "Regions"):
                         senders homed in region R and connected to its
                         gateway URL, recipients likewise (the same region
                         for a same-region run; repeat a flag for more
                         gateways); --nats is the directory region's, where
                         the homes are written and the baseline runs

flags:
`

// benchGCPercent is the load tool's own GOGC, unless the environment
// sets one.
const benchGCPercent = 400

// runBench parses the bench flags, starts or finds the target, runs the
// scenario and writes the table to out and the report to --json.
func runBench(args []string, out, errOut io.Writer) error {
	c := load.DefaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprint(errOut, benchUsage)
		fs.PrintDefaults()
	}
	var (
		urls        []string
		metricsURLs []string
		natsURL     string
		secret      string
		rules       gateway.TokenRules
		dataDir     = "./data"
		pids        string
		gatewayPIDs []int
		natsPID     int
		spawn       bool
		gateways    int
		spawnArgs   string
		jsonPath    string
		quiet       bool
		sendersIn   regionURLs
		recipsIn    regionURLs
	)
	fs.StringVar(&c.Scenario, "scenario", c.Scenario, "idle, pairs, storm, offline, groups or groupstorm")
	fs.Func("url", "gateway WebSocket URL (repeat or comma-separate; devices round-robin)", func(v string) error {
		urls = append(urls, splitList(v)...)
		return nil
	})
	fs.Func("metrics", "the gateways' metrics URLs, http://H:P/metrics on their --metrics-listen (repeat or comma-separate)", func(v string) error {
		metricsURLs = append(metricsURLs, splitList(v)...)
		return nil
	})
	fs.StringVar(&natsURL, "nats", "", "NATS URL of the target: the raw baseline and stream state (empty: no baseline)")
	fs.StringVar(&secret, "jwt-secret", "", "HS256 secret to sign device tokens (prefer SWITCHBOARD_JWT_SECRET)")
	fs.StringVar(&rules.Audience, "jwt-audience", "", "aud of the device tokens, when the gateways check it")
	fs.StringVar(&rules.Issuer, "jwt-issuer", "", "iss of the device tokens, when the gateways check it")
	fs.StringVar(&dataDir, "data", dataDir, "data directory whose jwt.secret signs tokens, as for \"switchboard token\"")
	fs.StringVar(&pids, "pids", "", "server PIDs for /proc figures: gateways first, NATS last (one PID: an all-in-one)")
	fs.Func("gateway-pid", "a gateway's PID (repeatable)", func(v string) error {
		p, err := strconv.Atoi(v)
		gatewayPIDs = append(gatewayPIDs, p)
		return err
	})
	fs.IntVar(&natsPID, "nats-pid", 0, "the NATS server's PID")
	fs.BoolVar(&spawn, "spawn", false, "start the all-in-one (this binary) in a temp dir and load it")
	fs.IntVar(&gateways, "gateways", 0, "with --spawn: extra gateway processes on the same NATS")
	fs.StringVar(&spawnArgs, "spawn-args", "", "with --spawn: extra flags for the all-in-one, space-separated (e.g. \"--sync-always\")")

	fs.IntVar(&c.Devices, "devices", c.Devices, "idle, storm: devices")
	fs.IntVar(&c.Clients, "clients", c.Clients, "idle: load-tool processes holding the devices (one holds about 19,000 sockets here; 0: this one)")
	var holdIdle bool
	fs.BoolVar(&holdIdle, "hold-idle", false, "(a child of --clients) connect --devices, report them on stdout, hold them until stdin closes")
	fs.IntVar(&c.FirstDevice, "first-device", c.FirstDevice, "(a child of --clients) the number of this process's first device")
	fs.IntVar(&c.Pairs, "pairs", c.Pairs, "pairs: sender/recipient pairs")
	fs.IntVar(&c.GroupSize, "group-size", c.GroupSize, "groups, groupstorm: members of each group, the sender included")
	fs.IntVar(&c.Groups, "groups", c.Groups, "groups, groupstorm: groups sending at once")
	fs.IntVar(&c.Memberships, "memberships", c.Memberships, "groupstorm: groups each member user is in")
	fs.BoolVar(&c.SendersAway, "senders-away", c.SendersAway, "groupstorm: the groups' senders go away too before the members come back")
	fs.IntVar(&c.Users, "users", c.Users, "offline: users who receive while away")
	fs.IntVar(&c.Messages, "messages", c.Messages, "offline: messages per user")
	fs.IntVar(&c.Pending, "pending", c.Pending, "storm: messages per device while it is away; groupstorm: per group")
	fs.IntVar(&c.Sample, "sample", c.Sample, "offline: users who then connect and drain (0: all)")
	fs.BoolVar(&c.FirstConnect, "first-connect", c.FirstConnect, "offline: connect each user once first (a device that went away)")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "pairs, groups: total sends per second (0: flat out)")
	fs.IntVar(&c.Inflight, "inflight", c.Inflight, "sends outstanding per sender (flat out), or at most (at --rate)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "pairs, groups: how long to send")
	fs.IntVar(&c.Size, "size", c.Size, "message body bytes, JSON quotes included")
	fs.IntVar(&c.Senders, "senders", c.Senders, "storm, offline: devices that send the backlogs")
	fs.IntVar(&c.ConnectConcurrency, "connect-concurrency", c.ConnectConcurrency, "dials in flight while connecting (the storm reconnects all at once)")
	fs.IntVar(&c.PerSource, "per-source", c.PerSource, "connections per local source address 127.0.0.x on loopback (-1: never bind)")
	fs.StringVar(&c.Trace, "trace", c.Trace, "groups: write each message's send time and last member's latency to this file (CSV)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "bound on waiting for deliveries and receipts after the load")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "pause before memory is read (negative: none)")
	fs.IntVar(&c.BaselineMsgs, "baseline-msgs", c.BaselineMsgs, "raw baseline messages (negative: publish for --baseline-duration)")
	fs.DurationVar(&c.BaselineDuration, "baseline-duration", c.BaselineDuration, "raw baseline length when counted by time, and of the paced baseline at --rate")
	fs.IntVar(&c.BaselineConsumers, "baseline-consumers", c.BaselineConsumers, "idle: raw durable consumers to create (0: min(devices, 1000); negative: none)")
	fs.BoolVar(&c.SkipBaseline, "no-baseline", c.SkipBaseline, "run no raw baseline (no ratios)")
	fs.Var(&sendersIn, "senders-in", "pairs on a regions deployment: REGION=ws://H:P/v1/ws, where the senders are homed and connect (repeatable)")
	fs.Var(&recipsIn, "recipients-in", "pairs on a regions deployment: REGION=ws://H:P/v1/ws, where the recipients are homed and connect (repeatable)")
	fs.StringVar(&jsonPath, "json", "", "write every figure to this file as JSON")
	fs.BoolVar(&quiet, "quiet", false, "no progress line on stderr")
	var cpuProfile string
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write the load tool's own CPU profile to this file (its cost shares the machine with the target's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// The load tool shares the cores with what it loads: it spends
		// memory rather than the target's CPU on collections (a sixth
		// of its CPU at the default of 100, flat out). The spawned
		// all-in-one keeps the default.
		debug.SetGCPercent(benchGCPercent)
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if err := c.Validate(); err != nil {
		return err
	}
	// The flags as given, secrets hidden: the report is a file to share.
	c.Args = []string{"bench"}
	fs.Visit(func(f *flag.Flag) {
		c.Args = append(c.Args, "--"+f.Name+"="+redactFlag(f.Name, f.Value.String()))
	})
	if !quiet && isTerminal(os.Stderr) {
		c.Progress = errOut
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var target load.Target
	var spawned *load.Spawned
	if spawn {
		if sendersIn.region != "" || recipsIn.region != "" {
			return errors.New("bench: --senders-in and --recipients-in load a running regions deployment, not --spawn")
		}
		if len(urls) > 0 || len(metricsURLs) > 0 {
			return errors.New("bench: --spawn excludes --url and --metrics")
		}
		// This very binary is the system under test, so a bench and the
		// code it measures never drift apart. os.Args[0] may be a bare
		// name looked up in PATH; the executable's own path cannot be.
		self, err := os.Executable()
		if err != nil {
			self = os.Args[0]
		}
		spawned, err = load.Spawn(ctx, load.SpawnOptions{
			Binary: self, Gateways: gateways, ServeArgs: strings.Fields(spawnArgs),
		})
		if err != nil {
			return err
		}
		defer spawned.Close()
		target = spawned.Target
	} else {
		var err error
		placed := sendersIn.region != "" || recipsIn.region != ""
		if placed {
			if err := checkPlacement(c.Scenario, urls, natsURL, sendersIn, recipsIn); err != nil {
				return err
			}
			urls = append(append([]string(nil), sendersIn.urls...), recipsIn.urls...)
		}
		if target, err = benchTarget(urls, natsURL, secret, rules, dataDir, pids, gatewayPIDs, natsPID); err != nil {
			return err
		}
		target.MetricsURLs = metricsURLs
		if placed {
			target.Placement = &load.Placement{
				SenderRegion: sendersIn.region, RecipientRegion: recipsIn.region,
				SenderURLs: sendersIn.urls, RecipientURLs: recipsIn.urls,
				Home: benchHomes(natsURL, target.NATSOptions, []string{sendersIn.region, recipsIn.region}),
			}
		}
	}

	if holdIdle {
		// A child of an idle run with --clients: the parent reads what it
		// writes and closes its input when done.
		c.Scenario = load.ScenarioIdle
		return load.HoldIdle(ctx, c, target, os.Stdin, out)
	}
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	// The children share the dials in flight: K of them dial as many at
	// once as one process would.
	childFlags := []string{"bench", "--hold-idle", "--url", strings.Join(target.URLs, ","),
		"--per-source", strconv.Itoa(c.PerSource), "--connect-concurrency", strconv.Itoa(max(1, c.ConnectConcurrency/max(1, c.Clients)))}
	if rules.Audience != "" {
		childFlags = append(childFlags, "--jwt-audience", rules.Audience)
	}
	if rules.Issuer != "" {
		childFlags = append(childFlags, "--jwt-issuer", rules.Issuer)
	}
	childData := dataDir
	if spawned != nil {
		childData = spawned.DataDir
	}
	target.ChildCommand = func(devices, first int) *exec.Cmd {
		cmd := exec.CommandContext(ctx, self, append(childFlags, "--devices", strconv.Itoa(devices), "--first-device", strconv.Itoa(first))...)
		// Flags come from SWITCHBOARD_<FLAG> too: the parent's are not
		// the child's. The secret travels in the environment, never in
		// arguments other processes can read.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "SWITCHBOARD_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "SWITCHBOARD_DATA="+childData)
		if secret != "" && spawned == nil {
			cmd.Env = append(cmd.Env, "SWITCHBOARD_JWT_SECRET="+secret)
		}
		cmd.Stderr = errOut
		return cmd
	}

	rep, runErr := load.Run(ctx, c, target)
	if rep == nil {
		return runErr
	}
	if spawned != nil {
		rep.ServerLogs = spawned.Warnings()
		if err := spawned.Exited(); err != nil {
			runErr = errors.Join(runErr, err)
			rep.Error = runErr.Error()
		}
	}
	if err := rep.WriteTable(out); err != nil {
		return err
	}
	if jsonPath != "" {
		if err := writeReport(jsonPath, rep); err != nil {
			return errors.Join(runErr, err)
		}
	}
	return errors.Join(runErr, rep.Faults())
}

// benchTarget assembles a target from the flags for a running system.
func benchTarget(urls []string, natsURL, secret string, rules gateway.TokenRules, dataDir, pids string, gatewayPIDs []int, natsPID int) (load.Target, error) {
	t := load.Target{URLs: urls, NATSURL: natsURL}
	if len(urls) == 0 {
		return t, errors.New("bench: --url (or --spawn) is required")
	}
	if natsURL != "" {
		var err error
		if t.NATSOptions, err = natsauth.RoleOptions(natsauth.Operator, filepath.Join(dataDir, "nats"), ""); err != nil {
			return t, err
		}
	}
	raw := []byte(secret)
	if secret == "" {
		path := filepath.Join(dataDir, "jwt.secret")
		b, err := os.ReadFile(path)
		if err != nil {
			// Never create one here, as "token" would: tokens signed
			// with a fresh secret are refused by every gateway.
			return t, fmt.Errorf("bench: no --jwt-secret, and %w", err)
		}
		raw = b
	}
	var err error
	if t.Token, err = load.HS256Tokens(raw, rules); err != nil {
		return t, err
	}
	if pids != "" {
		list := splitList(pids)
		for i, s := range list {
			p, err := strconv.Atoi(s)
			if err != nil {
				return t, fmt.Errorf("bench: --pids: %q is not a PID", s)
			}
			role := "gateway"
			switch {
			case len(list) == 1:
				role = "serve"
			case i == len(list)-1:
				role = "nats"
			}
			t.Procs = append(t.Procs, load.Proc{Role: role, PID: p})
		}
	}
	for _, p := range gatewayPIDs {
		role := "gateway"
		if p == natsPID {
			role = "serve"
		}
		t.Procs = append(t.Procs, load.Proc{Role: role, PID: p})
	}
	if natsPID != 0 && !containsPID(gatewayPIDs, natsPID) {
		t.Procs = append(t.Procs, load.Proc{Role: "nats", PID: natsPID})
	}
	return t, nil
}

func containsPID(list []int, p int) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}

func writeReport(path string, rep *load.Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// isTerminal reports whether f is a character device: a progress line
// redrawn with \r is noise in a file or a pipe.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
