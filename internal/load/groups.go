package load

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// runGroups has Groups groups of GroupSize members, every member online,
// and one member of each (its creator) sending into it for Duration, flat
// out (Inflight sends outstanding) or at a total Rate. Every other member
// must get every message its sender saw "sent", once, in the sender's
// order; the figures are member-deliveries per second (QUALITY.md's P7
// sets them against raw JetStream's publish rate), the time from a send
// until its last member has it, and what a group message costs the
// servers on disk.
func runGroups(ctx context.Context, e *env, rep *Report) error {
	cfg := e.cfg
	size, ng := cfg.GroupSize, cfg.Groups
	res := &GroupsResult{GroupSize: size, Groups: ng, Connects: Connects{Devices: size * ng}}
	rep.Groups = res
	gs := make([]*groupRun, ng)
	var users []string
	for g := range gs {
		gr := &groupRun{id: fmt.Sprintf("%sg%d", e.run, g), members: make([]string, size)}
		for i := range size {
			gr.members[i] = e.fleet.user(fmt.Sprintf("g%dm", g), i)
		}
		gr.got = make([]memberLog, size)
		gr.fencedBy = make([]atomic.Bool, size)
		gs[g] = gr
		users = append(users, gr.members...)
	}
	var deliveries, dups, reordered, foreign atomic.Int64
	var lastDeliver atomic.Int64
	perDeliver := newHist()
	var hmu sync.Mutex // guards perDeliver
	// Member i of group g is device g*size+i.
	hfor := func(k int) handlers {
		gr, i := gs[k/size], k%size
		return handlers{msg: func(d *device, m client.Message) {
			d.ack(m)
			if m.Event != nil {
				gr.changed(i, m.Event) // the create and the adds
				return
			}
			n := parseMsgID(m.ID)
			ts, ok := bodyTime(m.Body)
			if m.Group != gr.id || !ok || n < 0 || i == 0 {
				foreign.Add(1)
				return
			}
			now := time.Now().UnixNano()
			if !gr.got[i].record(n) {
				dups.Add(1)
				return
			}
			deliveries.Add(1)
			atomicMax(&lastDeliver, now)
			gr.delivered(n, now)
			hmu.Lock()
			perDeliver.record(time.Duration(now - ts))
			hmu.Unlock()
		}}
	}

	e.prog.set("connecting", int64(len(users)), nil)
	lat := newHist()
	start := time.Now()
	devs := e.fleet.connectAll(ctx, users, cfg.ConnectConcurrency, 256, hfor, lat, func() { e.prog.add(1) })
	res.Connects.Seconds = time.Since(start).Seconds()
	res.Connects.Connected = connected(devs)
	res.Connects.PerSec = float64(res.Connects.Connected) / res.Connects.Seconds
	res.Connects.Latency = lat.summary()
	if res.Connects.Connected < len(users) {
		return fmt.Errorf("load: groups: %d of %d devices connected", res.Connects.Connected, len(users))
	}

	// The clock starts once every member has the groups' last change: a
	// message sent before would wait in the log behind the changes'
	// fan-out (the create and the adds are system messages to every
	// member as of each), and its time would be the setup's.
	var err error
	if res.SetupSeconds, err = makeGroups(ctx, e, gs, func(g int) *client.Client { return devs[g*size].c }); err != nil {
		return fmt.Errorf("load: groups: %w", err)
	}

	diskBefore, diskOK := streamBytes(ctx, e.target)
	note := func() string {
		return fmt.Sprintf("sent %d  member deliveries %d", res.Sent, deliveries.Load())
	}
	e.prog.set("sending", cfg.Duration.Milliseconds(), note)
	w := startWatch(e.procs)
	begin := time.Now()
	deadline := begin.Add(cfg.Duration)
	var sent, lastSent atomic.Int64
	sendOne := func(g int, due time.Time) {
		gr := gs[g]
		n := gr.begin(due)
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := devs[g*size].c.SendGroup(sctx, gr.id, msgID(n), putBody(make([]byte, cfg.Size), due))
		cancel()
		if err != nil {
			e.errs.add(sendKind(err), err)
			return
		}
		gr.confirm(n, s.Seq)
		sent.Add(1)
		atomicMax(&lastSent, time.Now().UnixNano())
	}
	var wg sync.WaitGroup
	if cfg.Rate == 0 {
		for g := range gs {
			for range cfg.Inflight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						at := time.Now()
						if !at.Before(deadline) {
							return
						}
						sendOne(g, at)
					}
				}()
			}
		}
	} else {
		slots := make(chan struct{}, cfg.Inflight*ng)
		perMsg := float64(time.Second) / cfg.Rate
		for k := 0; ctx.Err() == nil; k++ {
			due := begin.Add(time.Duration(float64(k) * perMsg))
			if !due.Before(deadline) {
				break
			}
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-slots; wg.Done() }()
				sendOne(k%ng, due)
			}()
		}
	}
	for t := time.NewTicker(100 * time.Millisecond); time.Now().Before(deadline) && ctx.Err() == nil; <-t.C {
		e.prog.done.Store(time.Since(begin).Milliseconds())
	}
	wg.Wait()
	res.Sent = sent.Load()
	owed := func() int64 {
		var o int64
		for _, gr := range gs {
			o += gr.owed(size - 1)
		}
		return o
	}
	e.prog.set("draining", 0, note)
	sendEnd := time.Now()
	res.Complete = waitUntil(ctx, cfg.DrainTimeout, func() bool { return owed() <= 0 })
	res.DrainSeconds = time.Since(sendEnd).Seconds()
	rep.Processes = w.stop()

	res.SentPerSec = rate(res.Sent, begin, lastSent.Load())
	res.Deliveries = deliveries.Load()
	res.DeliveriesPerSec = rate(res.Deliveries, begin, lastDeliver.Load())
	res.Lost = owed()
	for _, gr := range gs {
		reordered.Add(gr.reordered())
	}
	res.Duplicated, res.Reordered, res.Foreign = dups.Load(), reordered.Load(), foreign.Load()
	res.SendDeliver = perDeliver.summary()
	all := newHist()
	for _, gr := range gs {
		gr.allDelivered(all, size-1)
	}
	res.SendAllDelivered = all.summary()
	if cfg.Trace != "" {
		if err := writeTrace(cfg.Trace, gs, size-1); err != nil {
			return err
		}
	}
	var attempted int64
	for _, gr := range gs {
		gr.mu.Lock()
		attempted += int64(len(gr.msgs))
		gr.mu.Unlock()
	}
	// Counted per member delivery: each confirmed message is owed to
	// every member but its sender.
	rep.Messages = Counts{Attempted: attempted, Sent: res.Sent, Delivered: res.Deliveries,
		Checked: res.Sent * int64(size-1), Lost: res.Lost, Duplicated: res.Duplicated, Reordered: res.Reordered}
	if diskAfter, ok := streamBytes(ctx, e.target); ok && diskOK && res.Sent > 0 {
		res.GroupsBytesPerMsg = float64(diskAfter.groups-diskBefore.groups) / float64(res.Sent)
		res.InboxBytesPerMsg = float64(diskAfter.inbox-diskBefore.inbox) / float64(res.Sent)
	}
	return nil
}

// makeGroups has each group of gs created by its member 0 (creator(g) is
// their client) and waits until every other member has the group's last
// change; it returns how long that took.
func makeGroups(ctx context.Context, e *env, gs []*groupRun, creator func(g int) *client.Client) (float64, error) {
	e.prog.set("making groups", int64(len(gs)), nil)
	made := time.Now()
	for g, gr := range gs {
		if err := gr.create(ctx, creator(g)); err != nil {
			return 0, err
		}
		e.prog.add(1)
	}
	if !waitUntil(ctx, e.cfg.DrainTimeout, func() bool {
		for _, gr := range gs {
			if gr.fenced.Load() < int64(len(gr.members)-1) {
				return false
			}
		}
		return true
	}) {
		return 0, fmt.Errorf("members did not get their groups' last change within %s", e.cfg.DrainTimeout)
	}
	return time.Since(made).Seconds(), nil
}

// groupRun is one group of the run and the messages its sender sent.
type groupRun struct {
	id      string
	members []string // members[0] creates the group and sends
	got     []memberLog
	// last is the first user named by the group's last change (the
	// create, or the last add); fenced counts the members other than
	// the creator that got it.
	last     string
	fenced   atomic.Int64
	fencedBy []atomic.Bool

	mu   sync.Mutex // guards msgs
	msgs []groupMsg
}

type groupMsg struct {
	at        int64  // when the send was due, unix ns
	confirmed bool   // "sent" came back
	seq       uint64 // its place in the group's log, from "sent"
	got       int    // members that have it
	last      int64  // when the last of them got it, unix ns
}

// create makes the group with every member, in adds of at most 256 users
// (the protocol's bound per frame).
func (gr *groupRun) create(ctx context.Context, c *client.Client) error {
	joins := setupChunks(gr.members[1:])
	gr.last = joins[len(joins)-1][0]
	if _, err := c.CreateGroup(ctx, gr.id, "bench", joins[0]...); err != nil {
		return fmt.Errorf("create %s: %w", gr.id, err)
	}
	for _, chunk := range joins[1:] {
		if _, err := c.AddMembers(ctx, gr.id, chunk...); err != nil {
			return fmt.Errorf("add to %s: %w", gr.id, err)
		}
	}
	return nil
}

// setupChunks is how the members besides the creator join a group of
// the run: the create names the first 256, each add the next 256 (a
// group frame names at most 256 users).
func setupChunks(rest []string) [][]string {
	var chunks [][]string
	for len(rest) > 0 {
		n := min(len(rest), 256)
		chunks = append(chunks, rest[:n])
		rest = rest[n:]
	}
	return chunks
}

// changed takes member i's system message ev: the group's last change
// counts the member as having the whole setup.
func (gr *groupRun) changed(i int, ev *protocol.GroupEvent) {
	if i == 0 || (ev.Op != protocol.GroupCreate && ev.Op != protocol.GroupAdd) || !slices.Contains(ev.Users, gr.last) {
		return
	}
	if !gr.fencedBy[i].Swap(true) {
		gr.fenced.Add(1)
	}
}

func (gr *groupRun) begin(due time.Time) int {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	gr.msgs = append(gr.msgs, groupMsg{at: due.UnixNano()})
	return len(gr.msgs) - 1
}

func (gr *groupRun) confirm(n int, seq uint64) {
	gr.mu.Lock()
	gr.msgs[n].confirmed = true
	gr.msgs[n].seq = seq
	gr.mu.Unlock()
}

// reordered counts, over every member, arrivals that came after one
// stored later in the group's log: every member must see the log's order.
// A message whose "sent" never came back has no place and is skipped.
func (gr *groupRun) reordered() int64 {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	var r int64
	for i := range gr.got {
		var last uint64
		for _, n := range gr.got[i].order {
			seq := gr.msgs[n].seq
			if seq == 0 {
				continue
			}
			if seq < last {
				r++
			}
			last = max(last, seq)
		}
	}
	return r
}

func (gr *groupRun) delivered(n int, now int64) {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	if n >= len(gr.msgs) {
		return
	}
	m := &gr.msgs[n]
	m.got++
	m.last = max(m.last, now)
}

// owed is the member deliveries of confirmed messages still missing.
func (gr *groupRun) owed(members int) int64 {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	var o int64
	for _, m := range gr.msgs {
		if m.confirmed && m.got < members {
			o += int64(members - m.got)
		}
	}
	return o
}

// allDelivered records, for each message every member got, the time from
// its send until the last member had it.
func (gr *groupRun) allDelivered(h *hist, members int) {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	for _, m := range gr.msgs {
		if m.got >= members {
			h.record(time.Duration(m.last - m.at))
		}
	}
}

// writeTrace writes each group's messages, in the order they were sent,
// as CSV: group, message number, when its send was due (unix ms), how
// many members got it, and the time from then until the last of them had
// it (ms; empty unless all members did). The percentiles hide when the
// slow ones came; this shows it.
func writeTrace(path string, gs []*groupRun, members int) error {
	var b []byte
	b = append(b, "group,message,sent_unix_ms,members_got,last_member_ms\n"...)
	for _, gr := range gs {
		gr.mu.Lock()
		for n, m := range gr.msgs {
			b = fmt.Appendf(b, "%s,%d,%d,%d,", gr.id, n, m.at/1e6, m.got)
			if m.got >= members {
				b = strconv.AppendFloat(b, float64(m.last-m.at)/1e6, 'f', 3, 64)
			}
			b = append(b, '\n')
		}
		gr.mu.Unlock()
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("load: trace: %w", err)
	}
	return nil
}

// memberLog is what one member got: a bit per message number, and the
// numbers in the order they arrived.
type memberLog struct {
	mu    sync.Mutex
	bits  []uint64
	order []int32
}

// record notes message n and says whether it is the first time.
func (l *memberLog) record(n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, b := n/64, uint64(1)<<(n%64)
	for len(l.bits) <= w {
		l.bits = append(l.bits, 0)
	}
	if l.bits[w]&b != 0 {
		return false
	}
	l.bits[w] |= b
	l.order = append(l.order, int32(n))
	return true
}

type streamSizes struct{ groups, inbox uint64 }

// streamBytes reads GROUPS' and INBOX's stored bytes.
func streamBytes(ctx context.Context, t Target) (streamSizes, bool) {
	var s streamSizes
	nc, js, ok := t.jetStream()
	if !ok {
		return s, false
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for name, into := range map[string]*uint64{contract.GroupsStream: &s.groups, contract.Inbox: &s.inbox} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return s, false
		}
		info, err := st.Info(ctx)
		if err != nil {
			return s, false
		}
		*into = info.State.Bytes
	}
	return s, true
}
