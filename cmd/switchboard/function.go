package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/functions/push"
	"github.com/switchboard-im/switchboard/functions/receipts"
)

// functionNames are the worker functions this binary can run, in start
// order.
var functionNames = []string{"receipts", "presence", "push"}

// functionsConfig is what the worker functions are told.
type functionsConfig struct {
	// Run lists the functions the all-in-one runs in-process.
	Run  []string
	Push push.Config
}

func defaultFunctionsConfig() functionsConfig {
	return functionsConfig{Run: functionNames, Push: push.DefaultConfig()}
}

func bindFunctionFlags(fs *flag.FlagSet, c *functionsConfig, withRun bool) {
	if withRun {
		fs.Func("functions", "worker functions to run in-process, comma-separated (receipts,presence,push; \"none\" for none)", func(v string) error {
			c.Run = nil
			if v == "none" {
				return nil
			}
			for _, n := range splitList(v) {
				if !slices.Contains(functionNames, n) {
					return fmt.Errorf("unknown function %q", n)
				}
				c.Run = append(c.Run, n)
			}
			return nil
		})
	}
	p := &c.Push
	fs.StringVar(&p.WebhookURL, "push-webhook", p.WebhookURL, "URL the push function POSTs notifications to (empty: push off)")
	fs.StringVar(&p.WebhookSecret, "push-webhook-secret", p.WebhookSecret, "sent as Authorization: Bearer to the webhook (never logged)")
	fs.DurationVar(&p.Window, "push-window", p.Window, "at most one push per user per window")
	fs.DurationVar(&p.Timeout, "push-timeout", p.Timeout, "bound on one webhook call")
	fs.IntVar(&p.MaxAttempts, "push-max-attempts", p.MaxAttempts, "webhook attempts before a notification is dead-lettered")
}

// stopper stops a running function.
type stopper interface{ Stop() }

// startFunctions starts the named functions on nc and returns a func that
// stops them in reverse order. push without a webhook is skipped with a
// log line, so the all-in-one runs with no setup.
func startFunctions(ctx context.Context, nc *nats.Conn, names []string, c *functionsConfig, log *slog.Logger) (func(), error) {
	js, err := newJetStream(nc)
	if err != nil {
		return nil, err
	}
	var running []stopper
	stop := func() {
		for i := len(running) - 1; i >= 0; i-- {
			running[i].Stop()
		}
	}
	for _, name := range names {
		var s stopper
		switch name {
		case "receipts":
			s, err = receipts.Start(ctx, nc, js, receipts.DefaultConfig(), log)
		case "presence":
			s, err = presence.Start(ctx, nc, js, presence.DefaultConfig(), log)
		case "push":
			if c.Push.WebhookURL == "" {
				log.Info("push function off: no --push-webhook")
				continue
			}
			s, err = push.Start(ctx, nc, js, c.Push, log)
		default:
			err = fmt.Errorf("unknown function %q", name)
		}
		if err != nil {
			stop()
			return nil, fmt.Errorf("function %s: %w", name, err)
		}
		log.Info("function started", "name", name)
		running = append(running, s)
	}
	return stop, nil
}

// runFunction runs one worker function alone against --nats, until a
// signal. Any number of these share the work with the in-process ones.
func runFunction(args []string) error {
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		return fmt.Errorf("function: name one of %v: switchboard function NAME --nats URL", functionNames)
	}
	name, args := args[0], args[1:]
	if !slices.Contains(functionNames, name) {
		return fmt.Errorf("function: unknown function %q (one of %v)", name, functionNames)
	}
	c := defaultAppConfig()
	fs := flag.NewFlagSet("function "+name, flag.ContinueOnError)
	fs.StringVar(&c.NATSURL, "nats", "", "NATS URL (required)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	bindFunctionFlags(fs, &c.Functions, false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(&c, os.Stderr)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	logConfig(log, fs)
	if c.NATSURL == "" {
		return errors.New("function: --nats is required")
	}
	if name == "push" && c.Functions.Push.WebhookURL == "" {
		return errors.New("function push: --push-webhook is required")
	}
	nc, err := nats.Connect(c.NATSURL, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), nats.Name("switchboard-"+name))
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop, err := startFunctions(ctx, nc, []string{name}, &c.Functions, log)
	if err != nil {
		return err
	}
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	go func() {
		s := <-sig
		log.Warn("second signal: exiting at once", "signal", s.String())
		os.Exit(1)
	}()
	stop()
	if err := nc.Drain(); err != nil {
		log.Warn("nats drain", "err", err)
	}
	waitClosed(nc, 5*time.Second)
	log.Info("stopped")
	return nil
}
