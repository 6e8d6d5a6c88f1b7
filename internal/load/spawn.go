package load

import (
	"github.com/switchboard-im/switchboard/internal/natsauth"

	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-im/switchboard/gateway"
)

// LiftedLimits are the flags Spawn gives every process. The per-connection
// rate limits exist to stop an abusive device; the load tool's senders are
// many devices' worth of traffic on one connection each, and hitting the
// limits would measure the limiter rather than the system.
var LiftedLimits = []string{
	"--send-rate", "1000000", "--send-burst", "1000000",
	"--frame-rate", "1000000", "--frame-burst", "1000000",
	"--group-rate", "1000000", "--group-burst", "1000000",
}

// SpawnOptions say what Spawn starts.
type SpawnOptions struct {
	// Binary is the switchboard binary (usually os.Args[0]). Required.
	Binary string
	// Gateways is how many `switchboard gateway` processes to start
	// beside the all-in-one, on its NATS; devices are spread over all.
	Gateways int
	// Args are added to every process's flags (after LiftedLimits, so
	// they win).
	Args []string
	// ServeArgs are added to the all-in-one's flags only (--sync-always,
	// --nats-config, ...).
	ServeArgs []string
	// DataDir is the data directory; empty: a temp dir removed by Close.
	DataDir string
}

// Spawned is a running system started by Spawn.
type Spawned struct {
	Target  Target
	DataDir string

	tmp   bool
	procs []*child
}

type child struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // valid after exited

	mu   sync.Mutex // guards tail and warn
	tail []string   // last lines of output, for errors
	warn map[string]int64
}

// Spawn starts the all-in-one binary (embedded NATS on a free loopback
// port, a temp data dir) and opts.Gateways extra gateways, and waits until
// each listens. Tokens are signed with the secret the all-in-one creates.
func Spawn(ctx context.Context, o SpawnOptions) (*Spawned, error) {
	if o.Binary == "" {
		return nil, fmt.Errorf("%w: spawn: no binary", ErrConfig)
	}
	s := &Spawned{DataDir: o.DataDir}
	if s.DataDir == "" {
		dir, err := os.MkdirTemp("", "switchboard-bench-")
		if err != nil {
			return nil, err
		}
		s.DataDir, s.tmp = dir, true
	}
	common := append(append([]string{"--data", s.DataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--log-format", "json"}, LiftedLimits...), o.Args...)
	serve := append(append([]string{"serve", "--nats-listen", "127.0.0.1:0"}, common...), o.ServeArgs...)
	c, r, err := s.start(ctx, "serve", o.Binary, serve, true)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Target.URLs = []string{r.ws}
	s.Target.NATSURL = r.nats
	// The all-in-one made its NATS keys in its data dir; the load tool
	// reads stream state and runs the baseline as the operator.
	if s.Target.NATSOptions, err = natsauth.RoleOptions(natsauth.Operator, filepath.Join(s.DataDir, "nats"), ""); err != nil {
		s.Close()
		return nil, err
	}
	s.Target.Procs = []Proc{{Role: "serve", PID: c.cmd.Process.Pid}}
	s.Target.MetricsURLs = appendNonEmpty(nil, r.metrics)
	for i := range o.Gateways {
		args := append([]string{"gateway", "--nats", r.nats}, common...)
		c, g, err := s.start(ctx, fmt.Sprintf("gateway %d", i+1), o.Binary, args, false)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Target.URLs = append(s.Target.URLs, g.ws)
		s.Target.MetricsURLs = appendNonEmpty(s.Target.MetricsURLs, g.metrics)
		s.Target.Procs = append(s.Target.Procs, Proc{Role: "gateway", PID: c.cmd.Process.Pid})
	}
	secret, err := os.ReadFile(filepath.Join(s.DataDir, "jwt.secret"))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("load: spawn: %w", err)
	}
	if s.Target.Token, err = HS256Tokens(secret, gateway.TokenRules{}); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func appendNonEmpty(list []string, s string) []string {
	if s == "" {
		return list
	}
	return append(list, s)
}

// ready is where a started process serves: WebSockets, its metrics, and
// (the all-in-one) NATS.
type ready struct{ ws, metrics, nats string }

// start runs one process and waits for its "listening" log line (and,
// for the all-in-one, "nats listening" before it). The metrics address is
// logged before "listening".
func (s *Spawned) start(ctx context.Context, name, bin string, args []string, wantNATS bool) (*child, ready, error) {
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, ready{}, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, ready{}, fmt.Errorf("load: spawn %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, exited: make(chan struct{}), warn: map[string]int64{}}
	s.procs = append(s.procs, c)
	readyc := make(chan ready, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var natsURL, metricsURL string
		sent := false
		for sc.Scan() {
			line := sc.Text()
			var rec struct {
				Level   string `json:"level"`
				Msg     string `json:"msg"`
				Err     string `json:"err"`
				URL     string `json:"url"`
				Gateway struct {
					Addr string `json:"addr"`
				} `json:"gateway"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil {
				c.keep(line, "")
				continue
			}
			key := rec.Level + " " + rec.Msg
			if rec.Err != "" {
				// Errors often end in ids or addresses; the start says
				// what kind it was, which is what a count is for.
				key += ": " + truncate(rec.Err, 80)
			}
			c.keep(line, key)
			switch rec.Msg {
			case "nats listening":
				natsURL = rec.URL
			case "metrics":
				metricsURL = rec.URL
			case "listening":
				if !sent && (natsURL != "" || !wantNATS) {
					readyc <- ready{"ws://" + rec.Gateway.Addr + gateway.PathWS, metricsURL, natsURL}
					sent = true
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	select {
	case r := <-readyc:
		return c, r, nil
	case <-c.exited:
		return nil, ready{}, fmt.Errorf("load: spawn %s exited before listening: %v\n%s", name, c.err, c.lastLines())
	case <-time.After(60 * time.Second):
		return nil, ready{}, fmt.Errorf("load: spawn %s did not listen within 60s\n%s", name, c.lastLines())
	case <-ctx.Done():
		return nil, ready{}, ctx.Err()
	}
}

// keep remembers the last lines and counts warnings and errors by message.
func (c *child) keep(line, levelMsg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tail = append(c.tail, line)
	if len(c.tail) > 40 {
		c.tail = c.tail[len(c.tail)-40:]
	}
	if strings.HasPrefix(levelMsg, "WARN ") || strings.HasPrefix(levelMsg, "ERROR ") {
		c.warn[levelMsg]++
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (c *child) lastLines() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// Warnings counts the spawned processes' WARN and ERROR log lines by
// level and message, so a run shows what the servers complained about.
func (s *Spawned) Warnings() map[string]int64 {
	out := map[string]int64{}
	for _, c := range s.procs {
		c.mu.Lock()
		for k, v := range c.warn {
			out[c.name+": "+k] += v
		}
		c.mu.Unlock()
	}
	return out
}

// Exited names any process that stopped before Close, with its output.
func (s *Spawned) Exited() error {
	var errs []error
	for _, c := range s.procs {
		select {
		case <-c.exited:
			errs = append(errs, fmt.Errorf("%s exited: %v\n%s", c.name, c.err, c.lastLines()))
		default:
		}
	}
	return errors.Join(errs...)
}

// Close stops the processes, gateways first, each with SIGTERM and then,
// after 15s, SIGKILL; and removes a temp data dir.
func (s *Spawned) Close() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		c := s.procs[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if s.tmp {
		_ = os.RemoveAll(s.DataDir)
	}
}

// HS256Tokens mints device tokens with a shared secret (the gateway's
// --jwt-secret, or the all-in-one's <data>/jwt.secret), valid for a day,
// with rules' audience and issuer (the gateway's --jwt-audience and
// --jwt-issuer).
func HS256Tokens(secret []byte, rules gateway.TokenRules) (func(user, device string) (string, error), error) {
	keys, err := gateway.NewHS256Keys([]byte(strings.TrimSpace(string(secret))))
	if err != nil {
		return nil, err
	}
	return func(user, device string) (string, error) {
		return keys.Mint(user, device, 24*time.Hour, time.Now(), rules)
	}, nil
}
