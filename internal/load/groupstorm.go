package load

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-im/switchboard/client"
)

// runGroupStorm is P5 for users in many small groups: Groups groups of
// GroupSize members, each member user in Memberships of them (so
// Groups×(GroupSize−1)/Memberships users, besides a sender per group who
// stays online). Every member connects and gets its groups' setup, then
// goes away; each group's sender sends it Pending messages; then every
// member reconnects at the same instant (with SendersAway, the senders
// having gone away too). The figures are the time until
// all are back and every member has every message of every group it is
// in, the servers' CPU meanwhile, and what was lost, duplicated or
// reordered per member. It compares how a group's messages reach a
// member who was away, by copies in their inbox or from the group's log,
// as a user's groups multiply.
func runGroupStorm(ctx context.Context, e *env, rep *Report) error {
	cfg := e.cfg
	size, ng, k := cfg.GroupSize, cfg.Groups, cfg.Memberships
	nu := ng * (size - 1) / k
	res := &GroupStormResult{GroupSize: size, Groups: ng, Memberships: k, SendersAway: cfg.SendersAway, Users: nu, Connects: Connects{Devices: nu + ng}}
	rep.GroupStorm = res

	// Member slot i ≥ 1 of group g is pool user (g×(size−1) + i−1) mod
	// nu: consecutive, so distinct within a group, and each user lands in
	// exactly k groups.
	pool := make([]string, nu)
	for u := range pool {
		pool[u] = e.fleet.user("gp", u)
	}
	senders := make([]string, ng)
	gs := make([]*groupRun, ng)
	byID := make(map[string]int, ng)
	slots := make([]map[int]int, nu) // pool user → group → slot
	for u := range slots {
		slots[u] = make(map[int]int, k)
	}
	for g := range gs {
		senders[g] = e.fleet.user("gs", g)
		gr := &groupRun{id: fmt.Sprintf("%sgs%d", e.run, g), members: make([]string, size)}
		gr.members[0] = senders[g]
		for i := 1; i < size; i++ {
			u := (g*(size-1) + i - 1) % nu
			gr.members[i] = pool[u]
			slots[u][g] = i
		}
		gr.got = make([]memberLog, size)
		gr.fencedBy = make([]atomic.Bool, size)
		gs[g] = gr
		byID[gr.id] = g
	}

	clock := newStormClock(nu)
	var dups, foreign, deliveries, lastDel atomic.Int64
	hfor := func(u int) handlers {
		return handlers{msg: func(d *device, m client.Message) {
			d.ack(m)
			g, ok := byID[m.Group]
			i := 0
			if ok {
				i = slots[u][g] // 0: not this user's group
			}
			if i == 0 {
				foreign.Add(1)
				return
			}
			gr := gs[g]
			if m.Event != nil {
				gr.changed(i, m.Event)
				return
			}
			n := parseMsgID(m.ID)
			if n < 0 {
				foreign.Add(1)
				return
			}
			if !gr.got[i].record(n) {
				dups.Add(1)
				return
			}
			now := time.Now().UnixNano()
			deliveries.Add(1)
			atomicMax(&lastDel, now)
			gr.delivered(n, now)
			clock.delivered(u)
		}}
	}

	e.prog.set("connecting", int64(nu+ng), nil)
	lat := newHist()
	t0 := time.Now()
	devs := e.fleet.connectAll(ctx, pool, cfg.ConnectConcurrency, 64, hfor, lat, func() { e.prog.add(1) })
	res.Connects.Seconds = time.Since(t0).Seconds()
	res.Connects.Connected = connected(devs)
	res.Connects.PerSec = float64(res.Connects.Connected) / res.Connects.Seconds
	res.Connects.Latency = lat.summary()
	sdevs := e.fleet.connectAll(ctx, senders, cfg.ConnectConcurrency, 256, func(int) handlers {
		return handlers{msg: func(d *device, m client.Message) { d.ack(m) }}
	}, nil, func() { e.prog.add(1) })
	if c := connected(devs) + connected(sdevs); c < nu+ng {
		return fmt.Errorf("load: groupstorm: %d of %d devices connected", c, nu+ng)
	}

	var err error
	if res.SetupSeconds, err = makeGroups(ctx, e, gs, func(g int) *client.Client { return sdevs[g].c }); err != nil {
		return fmt.Errorf("load: groupstorm: %w", err)
	}

	e.prog.set("disconnecting", 0, nil)
	closeAll(devs)
	e.waitSessionsBelow(ctx, ng)

	e.prog.set("storing backlogs", int64(ng*cfg.Pending), nil)
	feedStart := time.Now()
	var wg sync.WaitGroup
	var sent atomic.Int64
	for g, gr := range gs {
		var next atomic.Int64
		for range max(cfg.Inflight, 1) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && next.Add(1) <= int64(cfg.Pending) {
					at := time.Now()
					n := gr.begin(at)
					sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					s, err := sdevs[g].c.SendGroup(sctx, gr.id, msgID(n), putBody(make([]byte, cfg.Size), at))
					cancel()
					if err != nil {
						e.errs.add(sendKind(err), err)
						continue
					}
					gr.confirm(n, s.Seq)
					sent.Add(1)
					e.prog.add(1)
				}
			}()
		}
	}
	wg.Wait()
	res.FeedSeconds = time.Since(feedStart).Seconds()
	res.Sent = sent.Load()
	e.waitFunctionsIdle(ctx)
	if cfg.SendersAway {
		closeAll(sdevs)
		e.waitSessionsBelow(ctx, 0)
	}
	confirmed := make([]int64, ng)
	for g, gr := range gs {
		gr.mu.Lock()
		for _, m := range gr.msgs {
			if m.confirmed {
				confirmed[g]++
			}
		}
		gr.mu.Unlock()
	}
	for u := range pool {
		for g := range slots[u] {
			clock.expected[u] += confirmed[g]
		}
		res.Backlog += clock.expected[u]
	}
	owed := func() int64 {
		var o int64
		for _, gr := range gs {
			o += gr.owed(size - 1)
		}
		return o
	}

	e.prog.set("storm", int64(nu), func() string {
		return fmt.Sprintf("delivered %d of %d", deliveries.Load(), res.Backlog)
	})
	res.StormTimes, rep.Processes = clock.run(ctx, e, pool, hfor, func() bool { return owed() <= 0 }, lastDel.Load, res.Backlog)
	res.Lost = owed()
	var reordered int64
	for _, gr := range gs {
		reordered += gr.reordered()
	}
	res.Duplicated, res.Reordered, res.Foreign = dups.Load(), reordered, foreign.Load()
	rep.Messages = Counts{Attempted: int64(ng * cfg.Pending), Sent: res.Sent, Delivered: deliveries.Load(),
		Checked: res.Backlog, Lost: res.Lost, Duplicated: res.Duplicated, Reordered: res.Reordered}
	return nil
}
