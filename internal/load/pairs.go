package load

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// runPairs has N senders each send to their own recipient, flat out
// (Inflight sends outstanding per sender) or at a fixed total Rate. The
// recipients ack every message, so each one travels client → gateway →
// JetStream → gateway → client and comes back as a delivered receipt; a
// message is done when its sender holds that receipt.
func runPairs(ctx context.Context, e *env, rep *Report) error {
	cfg := e.cfg
	n := cfg.Pairs
	e.ledger = newLedger(n)
	l := e.ledger
	senders, recips := make([]string, n), make([]string, n)
	index := make(map[string]int, n)
	for i := range n {
		senders[i], recips[i] = e.fleet.user("s", i), e.fleet.user("r", i)
		index[senders[i]] = i
	}
	res := &PairsResult{Connects: Connects{Devices: 2 * n}}
	rep.Pairs = res
	if p := e.target.Placement; p != nil {
		if err := e.fleet.place(ctx, p.Home, p.SenderRegion, p.SenderURLs, senders...); err != nil {
			return err
		}
		if err := e.fleet.place(ctx, p.Home, p.RecipientRegion, p.RecipientURLs, recips...); err != nil {
			return err
		}
		res.SenderRegion, res.RecipientRegion = p.SenderRegion, p.RecipientRegion
	}

	e.prog.set("connecting", int64(2*n), nil)
	lat := newHist()
	start := time.Now()
	rdevs := e.fleet.connectAll(ctx, recips, cfg.ConnectConcurrency, 256, func(i int) handlers {
		return e.recipientHandlers(i, index, &inbox{}, nil)
	}, lat, func() { e.prog.add(1) })
	sdevs := e.fleet.connectAll(ctx, senders, cfg.ConnectConcurrency, 256, e.senderHandlers, lat, func() { e.prog.add(1) })
	res.Connects.Seconds = time.Since(start).Seconds()
	res.Connects.Connected = connected(rdevs) + connected(sdevs)
	res.Connects.PerSec = float64(res.Connects.Connected) / res.Connects.Seconds
	res.Connects.Latency = lat.summary()
	if res.Connects.Connected < 2*n {
		return fmt.Errorf("load: pairs: %d of %d devices connected", res.Connects.Connected, 2*n)
	}

	note := func() string {
		return fmt.Sprintf("sent %d  delivered %d  receipts %d", l.sent.Load(), l.delivered.Load(), l.receipts.Load())
	}
	e.prog.set("sending", cfg.Duration.Milliseconds(), note)
	w := startWatch(e.procs)
	begin := time.Now()
	deadline := begin.Add(cfg.Duration)
	var wg sync.WaitGroup
	if cfg.Rate == 0 {
		for i := range n {
			for range cfg.Inflight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// One bound for all this goroutine's sends (each has at
					// least sendTimeout): a context per send had every send
					// register with ctx under its lock, and 800 goroutines
					// contending for it cost the load tool 7% of its CPU.
					sctx, cancel := context.WithDeadline(ctx, deadline.Add(sendTimeout))
					defer cancel()
					buf := make([]byte, cfg.Size)
					for ctx.Err() == nil {
						at := time.Now()
						if !at.Before(deadline) {
							return
						}
						e.sendBounded(sctx, sdevs[i], i, l.begin(i, i, at, true), recips[i], at, buf)
					}
				}()
			}
		}
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace(ctx, e, sdevs, recips, begin, deadline, &wg)
		}()
	}
	for t := time.NewTicker(100 * time.Millisecond); time.Now().Before(deadline) && ctx.Err() == nil; <-t.C {
		e.prog.done.Store(time.Since(begin).Milliseconds())
	}
	var started int64
	for _, o := range l.senders {
		o.mu.Lock()
		started += int64(len(o.msgs))
		o.mu.Unlock()
	}
	res.OfferedPerSec = float64(started) / cfg.Duration.Seconds()
	wg.Wait()
	res.SendSeconds = time.Since(begin).Seconds()

	e.prog.set("draining", 0, note)
	sendEnd := time.Now()
	res.Complete = waitUntil(ctx, cfg.DrainTimeout, func() bool {
		return l.owedMsgs.Load() <= 0 && l.owedReceipts.Load() <= 0
	})
	res.DrainSeconds = time.Since(sendEnd).Seconds()
	rep.Processes = w.stop()

	res.Throughput = Throughput{
		SentPerSec:      rate(l.sent.Load(), begin, l.lastSent.Load()),
		DeliveredPerSec: rate(l.delivered.Load(), begin, l.lastDeliver.Load()),
		ReceiptsPerSec:  rate(l.receipts.Load(), begin, l.lastReceipt.Load()),
	}
	res.SendSent, res.SendDeliver, res.SendReceipt = l.sendSent.summary(), l.sendDeliver.summary(), l.sendReceipt.summary()
	return nil
}

// pace sends at cfg.Rate in total, round-robin over the senders, each
// send in its own goroutine so that a slow one never delays the schedule:
// its latency is measured from when it was due, which keeps a stall from
// hiding the sends it held up (coordinated omission). A sender with
// Inflight sends outstanding makes the next wait, still on the clock.
func pace(ctx context.Context, e *env, sdevs []*device, recips []string, begin, deadline time.Time, wg *sync.WaitGroup) {
	cfg := e.cfg
	n := len(sdevs)
	slots := make([]chan struct{}, n)
	for i := range slots {
		slots[i] = make(chan struct{}, cfg.Inflight)
	}
	perMsg := float64(time.Second) / cfg.Rate
	for k := 0; ctx.Err() == nil; k++ {
		due := begin.Add(time.Duration(float64(k) * perMsg))
		if !due.Before(deadline) {
			return
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		i := k % n
		num := e.ledger.begin(i, i, due, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots[i] <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-slots[i] }()
			e.send(ctx, sdevs[i], i, num, recips[i], due, make([]byte, cfg.Size))
		}()
	}
}
