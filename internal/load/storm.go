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

	var (
		storming  atomic.Bool
		start     time.Time // set before storming
		expected  = make([]int64, n)
		got       = make([]atomic.Int64, n)
		inboxes   = make([]*inbox, n)
		backlog   = newHist()
		reconnect = newHist()
	)
	for j := range inboxes {
		inboxes[j] = &inbox{}
	}
	hfor := func(j int) handlers {
		return e.recipientHandlers(j, index, inboxes[j], func() {
			if storming.Load() && got[j].Add(1) == expected[j] {
				backlog.record(time.Since(start))
			}
		})
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
				expected[r.to]++
			}
		}
		o.mu.Unlock()
	}

	e.prog.set("storm", int64(n), func() string {
		return fmt.Sprintf("delivered %d of %d", l.delivered.Load(), res.Backlog)
	})
	w := startWatch(e.procs)
	var (
		wg          sync.WaitGroup
		reconnected atomic.Int64
		lastConnect atomic.Int64
	)
	start = time.Now()
	storming.Store(true)
	sctx, cancel := context.WithTimeout(ctx, cfg.DrainTimeout)
	defer cancel()
	for j := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.fleet.dialRetry(sctx, users[j], 64, hfor(j)); err != nil {
				return
			}
			now := time.Now()
			reconnect.record(now.Sub(start))
			reconnected.Add(1)
			atomicMax(&lastConnect, now.UnixNano())
			if expected[j] == 0 {
				backlog.record(now.Sub(start))
			}
			e.prog.add(1)
		}()
	}
	res.Complete = waitUntil(sctx, cfg.DrainTimeout, func() bool {
		return reconnected.Load() == int64(n) && l.owedMsgs.Load() <= 0
	})
	cancel() // stop dialing what has not connected by now
	wg.Wait()
	rep.Processes = w.stop()

	res.Reconnected = int(reconnected.Load())
	if lc := lastConnect.Load(); lc > 0 {
		res.ReconnectSeconds = time.Unix(0, lc).Sub(start).Seconds()
	}
	end := max(lastConnect.Load(), l.lastDeliver.Load())
	if end > 0 {
		res.StormSeconds = time.Unix(0, end).Sub(start).Seconds()
	}
	if res.StormSeconds > 0 {
		res.DeliveredPerSec = float64(res.Backlog) / res.StormSeconds
	}
	res.Reconnect, res.BacklogDone = reconnect.summary(), backlog.summary()

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
