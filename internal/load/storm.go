package load

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runStorm connects N devices (so each has its queue), closes them all,
// stores Pending messages for each through a few sender devices, then has
// every device reconnect at the same instant: QUALITY.md's P5 is the time
// until all are back and every backlog is delivered.
func runStorm(ctx context.Context, e *env, rep *Report) error {
	cfg := e.cfg
	n := cfg.Devices
	nf := min(cfg.Senders, n)
	e.ledger = newLedger(nf)
	l := e.ledger
	feeders, index, users := e.fleet.cast(nf, "t", n)
	res := &StormResult{Connects: Connects{Devices: n}}
	rep.Storm = res

	clock := newStormClock(n)
	inboxes := make([]*inbox, n)
	for j := range inboxes {
		inboxes[j] = &inbox{}
	}
	hfor := func(j int) handlers {
		return e.recipientHandlers(j, index, inboxes[j], func() { clock.delivered(j) })
	}

	e.prog.set("connecting", int64(n+nf), nil)
	lat := newHist()
	t0 := time.Now()
	devs := e.fleet.connectAll(ctx, users, cfg.ConnectConcurrency, 64, hfor, lat, func() { e.prog.add(1) })
	res.Connects.Seconds = time.Since(t0).Seconds()
	res.Connects.Connected = connected(devs)
	res.Connects.PerSec = float64(res.Connects.Connected) / res.Connects.Seconds
	res.Connects.Latency = lat.summary()
	fdevs := e.fleet.connectAll(ctx, feeders, cfg.ConnectConcurrency, 256, e.senderHandlers, nil, func() { e.prog.add(1) })
	if c := connected(devs) + connected(fdevs); c < n+nf {
		return fmt.Errorf("load: storm: %d of %d devices connected", c, n+nf)
	}
	e.prog.set("disconnecting", 0, nil)
	closeAll(devs)
	e.waitSessionsBelow(ctx, nf)

	total := int64(n) * int64(cfg.Pending)
	e.prog.set("storing backlogs", total, nil)
	feedStart := time.Now()
	feed(ctx, e, fdevs, users, cfg.Pending, func(int) bool { return true })
	res.FeedSeconds = time.Since(feedStart).Seconds()
	res.FeedPerSec = float64(l.sent.Load()) / res.FeedSeconds
	res.Backlog = l.sent.Load()
	// The backlogs are stored; the functions that read every stored
	// message finish with them before the devices come back.
	e.waitFunctionsIdle(ctx)
	for _, o := range l.senders {
		o.mu.Lock()
		for _, r := range o.msgs {
			if r.seq != 0 {
				clock.expected[r.to]++
			}
		}
		o.mu.Unlock()
	}

	e.prog.set("storm", int64(n), func() string {
		return fmt.Sprintf("delivered %d of %d", l.delivered.Load(), res.Backlog)
	})
	res.StormTimes, rep.Processes = clock.run(ctx, e, users, hfor, func() bool { return l.owedMsgs.Load() <= 0 }, l.lastDeliver.Load, res.Backlog)

	// Receipts are not part of the storm's time, but every one must come.
	e.prog.set("receipts", 0, nil)
	waitUntil(ctx, min(cfg.DrainTimeout, 20*time.Second), func() bool { return l.owedReceipts.Load() <= 0 })
	return nil
}

// feed stores per messages for every user through the sender devices:
// user j's come from sender j mod len(fdevs), Inflight at a time per
// sender. checked(j) says whether user j is expected to read them in this
// run.
func feed(ctx context.Context, e *env, fdevs []*device, users []string, per int, checked func(j int) bool) {
	nf := len(fdevs)
	jobs := make([]chan int, nf)
	for i := range jobs {
		jobs[i] = make(chan int, 1024)
	}
	var wg sync.WaitGroup
	for i := range nf {
		for range e.cfg.Inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, e.cfg.Size)
				for j := range jobs[i] {
					at := time.Now()
					e.send(ctx, fdevs[i], i, e.ledger.begin(i, j, at, checked(j)), users[j], at, buf)
					e.prog.add(1)
				}
			}()
		}
	}
	// Round by round, so every user's backlog grows at once, as it would
	// while the users are away.
feeding:
	for range per {
		for j := range users {
			select {
			case jobs[j%nf] <- j:
			case <-ctx.Done():
				break feeding
			}
		}
	}
	for _, c := range jobs {
		close(c)
	}
	wg.Wait()
}

// stormClock times a storm of n devices from its start: each device's
// reconnect, and the moment it has its whole backlog (expected[j]
// messages, counted by its handlers through delivered).
type stormClock struct {
	on        atomic.Bool
	start     time.Time // set before on
	expected  []int64
	got       []atomic.Int64
	backlog   *hist
	reconnect *hist
}

func newStormClock(n int) *stormClock {
	return &stormClock{expected: make([]int64, n), got: make([]atomic.Int64, n), backlog: newHist(), reconnect: newHist()}
}

// delivered counts one of device j's messages; before the storm, none.
func (c *stormClock) delivered(j int) {
	if c.on.Load() && c.got[j].Add(1) == c.expected[j] {
		c.backlog.record(time.Since(c.start))
	}
}

// run has every one of users reconnect at the same instant and waits
// until all are back and done() holds, or the drain timeout; lastDeliver
// is the unix ns of the last delivery, backlog the messages delivered in
// the storm. It returns the storm's times and the servers' and the load
// tool's process figures over it.
func (c *stormClock) run(ctx context.Context, e *env, users []string, hfor func(int) handlers, done func() bool, lastDeliver func() int64, backlog int64) (StormTimes, []ProcStat) {
	w := startWatch(e.procs)
	var (
		t           StormTimes
		wg          sync.WaitGroup
		reconnected atomic.Int64
		lastConnect atomic.Int64
	)
	c.start = time.Now()
	c.on.Store(true)
	sctx, cancel := context.WithTimeout(ctx, e.cfg.DrainTimeout)
	defer cancel()
	for j := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.fleet.dialRetry(sctx, users[j], 64, hfor(j)); err != nil {
				return
			}
			now := time.Now()
			c.reconnect.record(now.Sub(c.start))
			reconnected.Add(1)
			atomicMax(&lastConnect, now.UnixNano())
			if c.expected[j] == 0 {
				c.backlog.record(now.Sub(c.start))
			}
			e.prog.add(1)
		}()
	}
	t.Complete = waitUntil(sctx, e.cfg.DrainTimeout, func() bool {
		return reconnected.Load() == int64(len(users)) && done()
	})
	cancel() // stop dialing what has not connected by now
	wg.Wait()
	procs := w.stop()

	t.Reconnected = int(reconnected.Load())
	if lc := lastConnect.Load(); lc > 0 {
		t.ReconnectSeconds = time.Unix(0, lc).Sub(c.start).Seconds()
	}
	if end := max(lastConnect.Load(), lastDeliver()); end > 0 {
		t.StormSeconds = time.Unix(0, end).Sub(c.start).Seconds()
	}
	if t.StormSeconds > 0 {
		t.DeliveredPerSec = float64(backlog) / t.StormSeconds
	}
	t.Reconnect, t.BacklogDone = c.reconnect.summary(), c.backlog.summary()
	return t, procs
}
