package load

import (
	"context"
	"fmt"
	"time"
)

// runOffline stores Messages for each of Users who are not connected and
// reads what that costs the servers in memory (QUALITY.md's P4: an offline
// user should cost disk, not RAM); then a sample of them connects and
// drains, and every message it was sent must arrive.
//
// By default the users have never connected, so they have no device
// record and their first device gets everything on arrival. With
// FirstConnect each connects once and goes away first, as a phone left in
// a drawer; memory is then read from before those first
// connects, so whatever the away devices still hold (records, cursors)
// counts against them.
// firstConnectWave is how many users connect at once for their first
// connect: well under the 20,000 open files one process may hold here.
const firstConnectWave = 5000

func runOffline(ctx context.Context, e *env, rep *Report) error {
	cfg := e.cfg
	n := cfg.Users
	nf := min(cfg.Senders, n)
	e.ledger = newLedger(nf)
	l := e.ledger
	feeders, index, users := e.fleet.cast(nf, "o", n)
	res := &OfflineResult{Drain: Connects{Devices: cfg.Sample}}
	rep.Offline = res

	e.prog.set("connecting senders", int64(nf), nil)
	fdevs := e.fleet.connectAll(ctx, feeders, cfg.ConnectConcurrency, 256, e.senderHandlers, nil, func() { e.prog.add(1) })
	if c := connected(fdevs); c < nf {
		return fmt.Errorf("load: offline: %d of %d senders connected", c, nf)
	}
	e.waitSessionsBelow(ctx, nf)
	e.settle(ctx)

	w := startWatch(e.procs)
	diskBefore, diskOK := inboxBytes(ctx, e.target)
	if cfg.FirstConnect {
		e.prog.set("first connects", int64(n), nil)
		// In waves, each closed before the next: a gateway process may
		// hold fewer sockets than there are users.
		for i := 0; i < n; i += firstConnectWave {
			wave := users[i:min(i+firstConnectWave, n)]
			devs := e.fleet.connectAll(ctx, wave, cfg.ConnectConcurrency, 8, nil, nil, func() { e.prog.add(1) })
			closeAll(devs)
			if c := connected(devs); c < len(wave) {
				return fmt.Errorf("load: offline: %d of %d users connected once (wave from user %d)", c, len(wave), i)
			}
			e.waitSessionsBelow(ctx, nf)
		}
		res.RSSAway = sumRSS(e.target.Procs)
	}

	e.prog.set("storing", int64(n)*int64(cfg.Messages), nil)
	start := time.Now()
	feed(ctx, e, fdevs, users, cfg.Messages, func(j int) bool { return j < cfg.Sample })
	res.FeedSeconds = time.Since(start).Seconds()
	res.Stored = l.sent.Load()
	res.FeedPerSec = float64(res.Stored) / res.FeedSeconds
	e.prog.set("settling", 0, nil)
	// What the stored messages cost at rest: the functions that read
	// every stored message are done with them first.
	e.waitFunctionsIdle(ctx)
	e.settle(ctx)
	rep.Processes = w.stop()
	if delta, ok := rssDelta(rep.Processes); ok {
		for _, p := range rep.Processes {
			if p.Error == "" && p.Role != roleBench {
				res.RSSBefore += p.RSSBefore
				res.RSSAfter += p.RSSAfter
			}
		}
		res.BytesPerUser = float64(delta) / float64(n)
		res.RSSMeasured = true
	}
	if diskAfter, ok := inboxBytes(ctx, e.target); ok && diskOK {
		if res.Stored > 0 {
			res.StreamBytesPerMsg = float64(diskAfter-diskBefore) / float64(res.Stored)
		}
	}

	e.prog.set("draining sample", int64(cfg.Sample), func() string {
		return fmt.Sprintf("delivered %d", l.delivered.Load())
	})
	lat := newHist()
	drainStart := time.Now()
	devs := e.fleet.connectAll(ctx, users[:cfg.Sample], cfg.ConnectConcurrency, 64, func(j int) handlers {
		return e.recipientHandlers(j, index, &inbox{}, nil)
	}, lat, func() { e.prog.add(1) })
	res.Drain.Seconds = time.Since(drainStart).Seconds()
	res.Drain.Connected = connected(devs)
	res.Drain.PerSec = float64(res.Drain.Connected) / res.Drain.Seconds
	res.Drain.Latency = lat.summary()
	res.Drained = waitUntil(ctx, cfg.DrainTimeout, func() bool { return l.owedMsgs.Load() <= 0 })
	if last := l.lastDeliver.Load(); last > 0 {
		res.DrainSeconds = time.Unix(0, last).Sub(drainStart).Seconds()
		res.DrainPerSec = rate(l.delivered.Load(), drainStart, last)
	}
	res.RSSAfterDrain = sumRSS(e.target.Procs)
	e.prog.set("receipts", 0, nil)
	waitUntil(ctx, min(cfg.DrainTimeout, 20*time.Second), func() bool { return l.owedReceipts.Load() <= 0 })
	return nil
}

// sumRSS is the processes' resident memory now, summed.
func sumRSS(procs []Proc) int64 {
	var sum int64
	for _, p := range procs {
		if s, err := readProc(p.PID); err == nil {
			sum += s.rss
		}
	}
	return sum
}
