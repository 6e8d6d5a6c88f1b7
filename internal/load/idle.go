package load

import (
	"context"
	"fmt"
	"time"
)

// runIdle connects N devices of distinct users (each with its own durable
// consumer, as a real first device gets) and sends nothing: what is left
// is the resident cost of a connected device, QUALITY.md's P3.
//
// The raw consumer baseline is taken here, while the devices are still
// connected: the servers' heaps are then at their high-water mark, so the
// raw consumers' memory shows up as new RSS instead of reusing what the
// scenario freed (taken after the devices closed, it would read near
// zero; taken before them, it would lower the devices' figure).
func runIdle(ctx context.Context, e *env, rep *Report) error {
	cfg := e.cfg
	users := make([]string, cfg.Devices)
	for i := range users {
		users[i] = e.fleet.user("i", i)
	}
	res := &IdleResult{Connects: Connects{Devices: cfg.Devices}}
	rep.Idle = res

	w := startWatch(e.procs)
	e.prog.set("connecting", int64(cfg.Devices), func() string { return fmt.Sprintf("%d devices", cfg.Devices) })
	lat := newHist()
	start := time.Now()
	var devs []*device
	var kids *children
	if cfg.Clients > 1 {
		// More devices than one process holds sockets for: child
		// processes hold them (children.go).
		n, err := 0, error(nil)
		kids, n, err = startChildren(ctx, e, lat, func(n int) { e.prog.add(int64(n)) })
		defer func() { kids.stop() }()
		if err != nil {
			return err
		}
		res.Connects.Connected = n
	} else {
		// Eight messages of buffer: idle devices get nothing, and
		// thousands of SDK clients share this process.
		devs = e.fleet.connectAll(ctx, users, cfg.ConnectConcurrency, 8, nil, lat, func() { e.prog.add(1) })
		res.Connects.Connected = connected(devs)
	}
	res.Connects.Seconds = time.Since(start).Seconds()
	res.Connects.PerSec = float64(res.Connects.Connected) / res.Connects.Seconds
	res.Connects.Latency = lat.summary()

	e.prog.set("settling", 0, nil)
	e.settle(ctx)
	rep.Processes = w.stop()
	delta, ok := rssDelta(rep.Processes)
	if ok && res.Connects.Connected > 0 {
		for _, p := range rep.Processes {
			if p.Error == "" && p.Role != roleBench {
				res.RSSBefore += p.RSSBefore
				res.RSSAfter += p.RSSAfter
			}
		}
		res.BytesPerDevice = float64(delta) / float64(res.Connects.Connected)
		res.RSSMeasured = true
	}

	if !cfg.SkipBaseline && cfg.BaselineConsumers > 0 && e.target.NATSURL != "" {
		e.prog.set("raw consumers", int64(cfg.BaselineConsumers), nil)
		if r, err := openRaw(ctx, e.target, e.run+"c"); err != nil {
			e.errs.add("baseline:consumers", err)
		} else {
			cb, err := r.consumers(ctx, cfg.BaselineConsumers, cfg.ConnectConcurrency, natsProcs(e.target.Procs), cfg.Settle, func() { e.prog.add(1) })
			r.close()
			if err != nil {
				e.errs.add("baseline:consumers", err)
			}
			e.consumers = cb
		}
	}
	e.prog.set("closing", 0, nil)
	closeAll(devs)
	kids.stop()
	kids = nil
	// Devices that could not connect are reported (connected, errors),
	// not fatal: finding where connecting stops is what a big run is for.
	if res.Connects.Connected == 0 {
		return fmt.Errorf("load: idle: no device connected")
	}
	return nil
}
