package load

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// env is what every scenario works with.
type env struct {
	cfg    Config
	target Target
	run    string
	fleet  *fleet
	errs   *errorCounts
	prog   *progress
	procs  []Proc // the targets' processes and this one
	ctrs   *counters
	// consumers is the raw consumer baseline, taken inside idle while
	// its devices are still connected (see idle.go).
	consumers *ConsumerBaseline
	ledger    *ledger
}

// Run runs one scenario against t and the raw baseline on the same NATS,
// and returns every figure. A report comes back even with an error,
// holding what was measured before it.
//
// Where the baseline goes matters. The memory scenarios (idle, offline)
// run it last, so their figures start from a server the baseline has not
// grown. The throughput scenarios (pairs, storm) run it first: after
// them the worker functions may still be working through a backlog of
// receipts, which would slow the baseline and flatter the ratios.
func Run(ctx context.Context, cfg Config, t Target) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	e := &env{cfg: cfg, target: t, run: runID(), errs: newErrorCounts()}
	e.fleet = newFleet(t, cfg, e.run, e.errs)
	e.prog = newProgress(cfg.Progress)
	defer e.prog.close()
	e.procs = append(append([]Proc(nil), t.Procs...), Proc{Role: roleBench, PID: os.Getpid()})

	rep := &Report{
		Schema: Schema, Scenario: cfg.Scenario, RunID: e.run, Started: time.Now(), Args: cfg.Args,
		Host:   thisHost(),
		Target: TargetInfo{URLs: t.URLs, MetricsURLs: t.MetricsURLs, NATSURL: t.NATSURL, Procs: t.Procs, SourceAddrs: 1},
		Config: configInfo(cfg),
	}
	if e.fleet.perSource > 0 {
		rep.Target.SourceAddrs = min((e.cfg.devicesTotal()+e.fleet.perSource-1)/e.fleet.perSource, 254)
	}
	baselineFirst := cfg.Scenario == ScenarioPairs || cfg.Scenario == ScenarioStorm || cfg.Scenario == ScenarioGroups || cfg.Scenario == ScenarioGroupStorm
	wantBaseline := !cfg.SkipBaseline && t.NATSURL != ""
	settleDisk()
	if wantBaseline && baselineFirst {
		rep.Baseline = e.baseline(ctx)
		settleDisk()
	}
	e.ctrs = startCounters(ctx, t.MetricsURLs)
	var err error
	switch cfg.Scenario {
	case ScenarioIdle:
		err = runIdle(ctx, e, rep)
	case ScenarioPairs:
		err = runPairs(ctx, e, rep)
	case ScenarioStorm:
		err = runStorm(ctx, e, rep)
	case ScenarioOffline:
		err = runOffline(ctx, e, rep)
	case ScenarioGroups:
		err = runGroups(ctx, e, rep)
	case ScenarioGroupStorm:
		err = runGroupStorm(ctx, e, rep)
	}
	e.fleet.closeRest()
	if e.ledger != nil {
		rep.Messages = e.ledger.count()
	}
	rep.Messages.SDKDuplicatesDropped, rep.Messages.Reconnects = e.fleet.stats()
	rep.Errors, rep.ErrorExamples = e.errs.snapshot()
	// A gateway counts a close once the session has stopped, a moment
	// after the socket: wait for that, or the last closes go missing.
	if e.ctrs.startSessions >= 0 {
		e.waitSessionsBelow(ctx, e.ctrs.startSessions)
	}
	rep.Server = e.ctrs.delta(ctx)

	if err == nil && wantBaseline && !baselineFirst {
		settleDisk()
		rep.Baseline = e.baseline(ctx)
	}
	if e.consumers != nil {
		if rep.Baseline == nil {
			rep.Baseline = &Baseline{}
		}
		rep.Baseline.Consumers = e.consumers
	}
	rep.ratios()
	rep.Seconds = time.Since(rep.Started).Seconds()
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

// baseline runs the raw baseline; a failure is reported in it, not fatal
// to the scenario.
func (e *env) baseline(ctx context.Context) *Baseline {
	b, err := runBaseline(ctx, e.cfg, e.target, e.run, e.prog)
	if err != nil {
		return &Baseline{Size: e.cfg.Size, Error: err.Error()}
	}
	return b
}

// devicesTotal is how many connections the scenario opens at most.
func (c Config) devicesTotal() int {
	switch c.Scenario {
	case ScenarioIdle:
		return c.Devices
	case ScenarioPairs:
		return 2 * c.Pairs
	case ScenarioStorm:
		return 2*c.Devices + c.Senders
	case ScenarioGroups:
		return c.GroupSize * c.Groups
	case ScenarioGroupStorm:
		return 2*c.Groups*(c.GroupSize-1)/max(c.Memberships, 1) + c.Groups
	case ScenarioOffline:
		n := c.Senders + c.Sample
		if c.FirstConnect {
			n += c.Users
		}
		return n
	}
	return 0
}

// waitUntil polls cond every 20ms until it holds or d passes, and says
// which.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle pauses so that work still in flight is not counted as resident
// cost.
func (e *env) settle(ctx context.Context) {
	if e.cfg.Settle <= 0 {
		return
	}
	select {
	case <-time.After(e.cfg.Settle):
	case <-ctx.Done():
	}
}

// waitFunctionsIdle waits until the worker functions reading INBOX (push's
// durable, with a webhook) and GROUPS (the groups function's fan-out,
// push's) have caught up with what was stored, so a scenario's next
// phase measures itself, not the tail of the work the previous one left.
// It gives up quietly after 30 s, or at once when the target's NATS is
// not reachable.
func (e *env) waitFunctionsIdle(ctx context.Context) {
	nc, js, ok := e.target.jetStream()
	if !ok {
		return
	}
	defer nc.Close()
	waitUntil(ctx, 30*time.Second, func() bool {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for _, stream := range []string{contract.Inbox, contract.GroupsStream} {
			st, err := js.Stream(ictx, stream)
			if err != nil {
				continue
			}
			for name := range st.ConsumerNames(ictx).Name() {
				c, err := st.Consumer(ictx, name)
				if err != nil {
					continue
				}
				if i := c.CachedInfo(); i.NumPending > 0 || i.NumAckPending > 0 {
					return false
				}
			}
		}
		return true
	})
}

// waitSessionsBelow waits until the gateways hold at most n sessions, so a
// closed device is really gone before its backlog is sent (a message
// handed to a closing session would be delivered live, not pending). It
// gives up quietly when /metrics cannot be read.
func (e *env) waitSessionsBelow(ctx context.Context, n int) {
	waitUntil(ctx, 15*time.Second, func() bool {
		s := e.ctrs.sessions(ctx)
		return s < 0 || s <= n
	})
}

// recipientHandlers are what a device of recipient to (its index in the
// ledger) does with the run's messages: check each against the ledger,
// then ack it (which sends the delivered receipt). A message the run did
// not send to this recipient is counted as a "foreign_message" error, not
// as delivered. done, if set, is called on each first delivery.
func (e *env) recipientHandlers(to int, senders map[string]int, in *inbox, done func()) handlers {
	l := e.ledger
	return handlers{msg: func(d *device, m client.Message) {
		now := time.Now()
		s, okS := senders[m.From]
		ts, okT := bodyTime(m.Body)
		known, first := false, false
		if okS && okT {
			known, first = l.deliver(s, parseMsgID(m.ID), to, ts, now)
		}
		switch {
		case !known:
			e.errs.add("foreign_message", fmt.Errorf("%s from %s (seq %d) to %s was not sent to it by this run", m.ID, m.From, m.Seq, d.user))
		case in.order(s, m.Seq):
			l.reordered.Add(1)
		}
		d.ack(m)
		if first && done != nil {
			done()
		}
	}}
}

// senderHandlers record the delivered receipts of sender i's messages.
func (e *env) senderHandlers(i int) handlers {
	l := e.ledger
	return handlers{receipt: func(_ *device, r client.Receipt) {
		if r.Status == protocol.StatusDelivered {
			l.receipt(i, parseMsgID(r.ID), time.Now())
		}
	}}
}

// send sends message n of sender i to user to, stamped at, and records
// the outcome. buf is the caller's body buffer (the SDK copies it).
func (e *env) send(ctx context.Context, d *device, i, n int, to string, at time.Time, buf []byte) {
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	e.sendBounded(sctx, d, i, n, to, at, buf)
}

// sendTimeout is how long a send may wait for "sent" before it counts
// as an error.
const sendTimeout = 30 * time.Second

// sendBounded is send under ctx's own deadline.
func (e *env) sendBounded(ctx context.Context, d *device, i, n int, to string, at time.Time, buf []byte) {
	s, err := d.c.Send(ctx, to, msgID(n), putBody(buf, at))
	if err != nil {
		e.errs.add(sendKind(err), err)
		return
	}
	e.ledger.confirmed(i, n, s.Seq, time.Now())
}

// jetStream connects to the target's NATS, for the load tool's own
// reads of its streams; ok is false when there is none to reach. The
// caller closes nc.
func (t Target) jetStream() (nc *nats.Conn, js jetstream.JetStream, ok bool) {
	if t.NATSURL == "" {
		return nil, nil, false
	}
	nc, err := nats.Connect(t.NATSURL, append(t.NATSOptions, nats.Name("switchboard-bench"))...)
	if err != nil {
		return nil, nil, false
	}
	if js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, nil, false
	}
	return nc, js, true
}

// inboxBytes reads INBOX's stored bytes: what a message costs on disk.
func inboxBytes(ctx context.Context, t Target) (uint64, bool) {
	nc, js, ok := t.jetStream()
	if !ok {
		return 0, false
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, contract.Inbox)
	if err != nil {
		return 0, false
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, false
	}
	return info.State.Bytes, true
}

// rate is n over the time from start to the unix-ns instant last.
func rate(n int64, start time.Time, last int64) float64 {
	if n == 0 || last == 0 {
		return 0
	}
	d := time.Unix(0, last).Sub(start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(n) / d
}

func connected(devs []*device) int {
	n := 0
	for _, d := range devs {
		if d != nil {
			n++
		}
	}
	return n
}
