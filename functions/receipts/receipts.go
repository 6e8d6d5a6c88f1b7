// Package receipts is the receipts worker function: it turns positions
// into ticks, and answers what a sender may know of its message.
//
// Nothing is kept per message. A device's position in its inbox (its
// cursor) already says "everything up to here is settled", and a read is
// "everything up to here is read", as Matrix's m.read and Tinode's recv and
// read sequences are. So:
//   - Delivered: when a device has acked a range of its inbox, its gateway
//     asks (DeliveredRequest) before moving the device's cursor; the
//     function stores one receipt in each sender's inbox covering all of
//     that sender's messages in the range. A device that acks 200 messages
//     from 3 senders costs 3 stored writes, not 200.
//   - Read: the gateway asks (ReadRequest) with the newest message read;
//     the function raises the conversation's read position in READS and,
//     when both users have read receipts on (as WhatsApp does), stores one
//     receipt in the sender's inbox covering everything up to it.
//   - Status (StatusRequest, for the sender only): delivered if any of the
//     recipient's devices has the message inside its settled range (from
//     where it joined to its cursor); read if the conversation's read
//     position is at or past it and both have read receipts on.
//   - Groups (GroupPositionRequest): members' positions in each group's
//     log, and one receipt per sender when the group's lowest position
//     rises; see groups.go.
//
// Delivery never waits on this function: a gateway whose delivered request
// is not answered in time stores it in TICKS, a work queue every instance
// drains through one durable consumer, and settles its device's acks; so
// an outage of the function costs a second stored write per tick while it
// lasts, and loses nothing.
//
// Crash safety: every request is idempotent. A receipt's dedup id is its
// status, reader, sender and range, so a request asked again (the gateway
// got no answer, an instance died mid-way) stores nothing twice; the read
// position only rises, and is raised after the receipt is stored, so a
// read seen as done has its receipt. Any number of instances answer in a
// queue group; the function keeps no state of its own.
//
// Senders' apps see each tick once per message (the SDKs keep the highest
// tick per message), and a tick never goes back.
//
// Regions: a sender homed in another region knows its messages by their
// sequences in its region's OUTBOX (its "sent"), not by where they landed
// in the reader's INBOX. The gateway names those (DeliveredRequest's
// Origins, ReadRequest's Region and Origin), and the tick, naming them, is
// stored in this region's OUTBOX: a delivered tick on
// out.<region>.<sender>, which the sender's home INBOX sources, so it
// reaches the sender's app as any tick does once the link is up; a read
// tick on out.<region>.t.<sender>, which the sender's home TICKS sources,
// where that region's receipts function applies the sender's own
// read-receipt setting (kept there) before storing it (applyReadTick).
// READS keeps the read position in this region's terms.
package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/worker"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// Version is the micro service version.
const Version = "2.0.0"

// MaxSenders bounds the senders of one DeliveredRequest: a gateway asks
// for at most as many as a device may hold unacked.
const MaxSenders = 1024

// Config tunes an instance.
type Config struct {
	// Workers is how many requests an instance handles at once.
	Workers int
	// Timeout bounds one request's work.
	Timeout time.Duration

	// watchThrough, when set, wraps GROUP_INFO for the watch of group
	// records (a test's watch that lags at will).
	watchThrough func(jetstream.KeyValue) jetstream.KeyValue
	// probeReads, when set, is a search's budget of direct gets
	// (xrstatus.go; a test's smaller one).
	probeReads int
}

// DefaultConfig is what the binary runs with.
func DefaultConfig() Config { return Config{Workers: 64, Timeout: 5 * time.Second} }

// Service is one running instance.
type Service struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	settings jetstream.KeyValue
	reads    jetstream.KeyValue
	cursors  jetstream.KeyValue
	devices  jetstream.KeyValue
	// Groups: members' positions and aggregates, the groups' records,
	// and their logs (who sent what).
	groupTicks jetstream.KeyValue
	groupInfo  jetstream.KeyValue
	records    *groupRecords  // GROUP_INFO's records, decoded
	news       *groupNews     // groups to settle after their record changed
	bounds     positionBounds // members' positions last read, per group
	groups     jetstream.Stream
	inboxes    jetstream.Stream // INBOX, for status about messages from other regions
	gets       getReplies       // the answers to direct gets
	// region is this region (xrstatus.go), "" when the server has no
	// JetStream domain.
	region string
	inbox  int64 // when INBOX was created: positions from another are void
	cfg    Config
	log    *slog.Logger

	svc  micro.Service
	pool *worker.Pool // ticks queued in TICKS
	// newsFeed pulls the changes of group records for news.
	newsFeed jetstream.ConsumeContext
	reqs     *worker.Requests // requests in hand, Workers at most
	// forwarded holds a token per status request from another region
	// being answered (xrstatus.go).
	forwarded chan struct{}
	// wg counts the rest (the news runner, a request's stragglers,
	// added while the request is in hand), ended by stop.
	wg   sync.WaitGroup
	stop chan struct{}

	delivered, read, stored, hidden       atomic.Int64
	groupDelivered, groupRead, recomputes atomic.Int64
	gathered                              atomic.Int64 // gathered requests' groups taken
	newsSettled                           atomic.Int64 // settles the watch's news started, finished
}

// Start binds the micro service. The streams and buckets must exist.
func Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Workers <= 0 || cfg.Timeout <= 0 {
		return nil, fmt.Errorf("receipts: workers and timeout must be positive")
	}
	s := &Service{nc: nc, js: js, cfg: cfg, log: log.With("function", "receipts"),
		reqs: worker.NewRequests(cfg.Workers), forwarded: make(chan struct{}, maxForwarded), stop: make(chan struct{})}
	inbox, err := js.Stream(ctx, contract.Inbox)
	if err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	s.inbox, s.inboxes = inbox.CachedInfo().Created.UnixNano(), inbox
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		name string
	}{{&s.settings, contract.SettingsKV}, {&s.reads, contract.ReadsKV}, {&s.cursors, contract.CursorsKV}, {&s.devices, contract.DevicesKV},
		{&s.groupTicks, contract.GroupTicksKV}, {&s.groupInfo, contract.GroupInfoKV}} {
		if *b.kv, err = js.KeyValue(ctx, b.name); err != nil {
			return nil, fmt.Errorf("receipts: %w", err)
		}
	}
	if s.groups, err = js.Stream(ctx, contract.GroupsStream); err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	s.records = newGroupRecords(s.groupInfo)
	if cfg.watchThrough != nil {
		s.records.kv = cfg.watchThrough(s.groupInfo)
	}
	s.records.leader = s.leaderRecord
	s.news = newGroupNews(s.settleNews)
	s.records.ended = func() {
		s.log.Warn("the watch of group records ended; starting it again (until then every position reads its group's record)")
	}
	if err := s.records.watch(ctx); err != nil {
		// Slower, not wrong: every position reads its group's record
		// until the watch starts.
		s.log.Warn("cannot watch group records yet; reading them at each position", "err", err)
	}
	started := false
	defer func() {
		if !started {
			s.records.stop()
		}
	}()
	if err := s.gets.subscribe(nc); err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	defer func() {
		if !started {
			s.gets.unsubscribe()
		}
	}()
	s.svc, err = micro.AddService(nc, micro.Config{
		Name:         "receipts",
		Version:      Version,
		Description:  "Turns devices' positions into delivered and read ticks for senders; answers a message's status",
		StatsHandler: s.stats,
	})
	if err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	for _, e := range []struct {
		name, subject, example string
		h                      func(context.Context, micro.Request) error
	}{
		{"delivered", contract.DeliveredSubject, `{"reader":"bob","device":"phone","from":40,"to":45,"senders":["alice"]}`, s.handleDelivered},
		{"read", contract.ReadSubject, `{"reader":"bob","device":"phone","sender":"alice","seq":45}`, s.handleRead},
		{"status", contract.StatusSubject, `{"sender":"alice","recipient":"bob","seq":45}`, s.handleStatus},
		{"group", contract.GroupPositionSubject, `{"group":"friends","member":"bob","device":"phone","status":"delivered","seq":45}`, s.handleGroupPosition},
		{"group-positions", contract.GroupPositionsSubject, `{"positions":[{"group":"friends","member":"bob","device":"phone","status":"delivered","seq":45}]}`, s.handleGroupPositions},
	} {
		if err := s.svc.AddEndpoint(e.name, s.async(e.h), micro.WithEndpointSubject(e.subject),
			micro.WithEndpointMetadata(map[string]string{"request": e.example})); err != nil {
			_ = s.svc.Stop()
			return nil, fmt.Errorf("receipts: %w", err)
		}
	}
	if err := s.startRegions(ctx); err != nil {
		_ = s.svc.Stop()
		return nil, fmt.Errorf("receipts: regions: %w", err)
	}
	// Ticks gateways left while no instance answered.
	ccfg, err := streams.ConsumerConfig("receipts")
	if err == nil {
		var cons jetstream.Consumer
		if cons, err = js.CreateOrUpdateConsumer(ctx, contract.TicksStream, ccfg); err == nil {
			s.pool, err = worker.Start(js, cons, worker.Options{Function: "receipts", Workers: 4, MaxAttempts: 100}, s.log, s.applyQueued)
		}
	}
	if err != nil {
		_ = s.svc.Stop()
		return nil, fmt.Errorf("receipts: queued ticks: %w", err)
	}
	// Changes of group records, each settled once (groupnews.go).
	ncfg, err := streams.ConsumerConfig("receipts-news")
	if err == nil {
		var cons jetstream.Consumer
		if cons, err = js.CreateOrUpdateConsumer(ctx, "KV_"+contract.GroupInfoKV, ncfg); err == nil {
			s.newsFeed, err = cons.Consume(s.news.take, jetstream.PullMaxMessages(64))
		}
	}
	if err != nil {
		s.pool.Stop()
		_ = s.svc.Stop()
		return nil, fmt.Errorf("receipts: group changes: %w", err)
	}
	if err := nc.Flush(); err != nil {
		s.newsFeed.Stop()
		s.pool.Stop()
		_ = s.svc.Stop()
		return nil, fmt.Errorf("receipts: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.news.run(s.stop, s.cfg.Timeout, func(gid string, attempt int, err error) {
			s.log.Warn("cannot settle a group after its record changed; its next position will", "group", gid, "attempts", attempt+1, "err", err)
		})
	}()
	started = true
	return s, nil
}

// Stop stops answering and waits for the requests in hand. A request not
// answered is asked again by its gateway, of another instance.
func (s *Service) Stop() {
	// The changes already pulled reach news, which hands back what it
	// has not settled when it stops below.
	s.newsFeed.Drain()
	select {
	case <-s.newsFeed.Closed():
	case <-time.After(5 * time.Second):
	}
	s.pool.Stop()
	_ = s.svc.Stop()
	s.reqs.Close()
	close(s.stop)
	s.wg.Wait()
	s.gets.unsubscribe()
	s.records.stop()
}

// Stats are an instance's counters.
type Stats struct {
	Delivered, Read, Stored, Hidden int64
	// GroupDelivered and GroupRead count members' group positions taken;
	// Recomputes, the times a group's positions were all read again;
	// Gathered, the groups of gathered requests taken (one settle each);
	// News, the settles of groups whose record changed, finished.
	GroupDelivered, GroupRead, Recomputes, Gathered, News int64
}

// Stats returns the instance's counters.
func (s *Service) Stats() Stats {
	return Stats{Delivered: s.delivered.Load(), Read: s.read.Load(), Stored: s.stored.Load(), Hidden: s.hidden.Load(),
		GroupDelivered: s.groupDelivered.Load(), GroupRead: s.groupRead.Load(), Recomputes: s.recomputes.Load(), Gathered: s.gathered.Load(), News: s.newsSettled.Load()}
}

func (s *Service) stats(*micro.Endpoint) any {
	st := s.Stats()
	return map[string]int64{"delivered": st.Delivered, "read": st.Read, "stored": st.Stored, "hidden": st.Hidden,
		"group_delivered": st.GroupDelivered, "group_read": st.GroupRead, "group_recomputes": st.Recomputes, "group_gathered": st.Gathered, "group_news": st.News}
}

// badRequest is a refusal the asker caused; anything else is the store's.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

// async runs h on its own goroutine, at most Workers at a time, so one
// slow request does not hold the others behind it; micro answers in the
// handler's stead. A refusal is a micro error with the code the contract
// names: 400 for a bad request, 503 when the store failed.
func (s *Service) async(h func(context.Context, micro.Request) error) micro.HandlerFunc {
	return func(r micro.Request) {
		if !s.reqs.Enter() {
			return // stopping: unanswered, the gateway stores it in TICKS or asks again
		}
		go func() {
			defer s.reqs.Leave()
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
			defer cancel()
			r := direct{r, s.nc}
			err := h(ctx, r)
			var bad badRequest
			switch {
			case err == nil:
			case errors.As(err, &bad):
				_ = r.Error("400", "bad_request: "+bad.msg, nil)
			default:
				s.log.Warn("request failed", "subject", r.Subject(), "err", err)
				_ = r.Error("503", "unavailable: "+err.Error(), nil)
			}
		}()
	}
}

// direct answers a request straight on the connection. micro's own
// Respond and Error record the answer in state its handler goroutine
// reads once the handler returns, which async's handlers have by then.
type direct struct {
	micro.Request
	nc *nats.Conn
}

func (d direct) Respond(data []byte, _ ...micro.RespondOpt) error {
	if d.Reply() == "" {
		return nil
	}
	return d.nc.Publish(d.Reply(), data)
}

func (d direct) RespondJSON(v any, _ ...micro.RespondOpt) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return d.Respond(b)
}

func (d direct) Error(code, description string, data []byte, _ ...micro.RespondOpt) error {
	if d.Reply() == "" {
		return nil
	}
	return d.nc.PublishMsg(&nats.Msg{Subject: d.Reply(), Data: data,
		Header: nats.Header{micro.ErrorCodeHeader: {code}, micro.ErrorHeader: {description}}})
}

func decode(r micro.Request, v any) error {
	if err := json.Unmarshal(r.Data(), v); err != nil {
		return badRequest{"the request is not valid JSON"}
	}
	return nil
}

func (s *Service) handleDelivered(ctx context.Context, r micro.Request) error {
	var req contract.DeliveredRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := s.deliver(ctx, req); err != nil {
		return err
	}
	return r.Respond([]byte("{}"))
}

// deliver stores a delivered tick for each sender in req.
func (s *Service) deliver(ctx context.Context, req contract.DeliveredRequest) error {
	switch {
	case !protocol.ValidID(req.Reader) || !protocol.ValidID(req.Device):
		return badRequest{"reader and device must be valid ids"}
	case req.From == 0 || req.To < req.From:
		return badRequest{"from and to must be a range of sequences"}
	case len(req.Senders) > MaxSenders:
		return badRequest{"too many senders"}
	}
	for _, u := range req.Senders {
		if !protocol.ValidID(u) {
			return badRequest{"senders must be valid ids"}
		}
	}
	origins := map[string]contract.Origin{}
	for _, o := range req.Origins {
		if !protocol.ValidID(o.Sender) || !protocol.ValidID(o.Region) || !contract.IsOutboxSeq(o.From) || o.To < o.From {
			return badRequest{"origins must name a sender, a region and a range of OUTBOX sequences"}
		}
		origins[o.Sender] = o
	}
	var futs []jetstream.PubAckFuture
	for _, sender := range req.Senders {
		if sender == req.Reader {
			continue // a note to self is nobody's tick
		}
		m := s.tick(protocol.StatusDelivered, req.Reader, req.Device, sender, req.From, req.To)
		if o, ok := origins[sender]; ok {
			// Homed in another region: the tick names the messages as
			// the sender's app knows them, and goes back through OUTBOX.
			m = s.tick(protocol.StatusDelivered, req.Reader, req.Device, sender, o.From, o.To)
			m.Subject = contract.OutboxSubject(o.Region, sender)
		}
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	if err := wait(ctx, futs); err != nil {
		return err
	}
	s.delivered.Add(1)
	s.stored.Add(int64(len(futs)))
	return nil
}

// applyQueued applies a request a gateway left in TICKS, or a read tick
// another region's receipts function sent there.
func (s *Service) applyQueued(ctx context.Context, m jetstream.Msg) error {
	var err error
	switch m.Headers().Get(contract.HdrKind) {
	case contract.KindReceipt:
		return s.applyReadTick(ctx, m)
	case contract.KindGroupPosition:
		var req contract.GroupPositionRequest
		if err := json.Unmarshal(m.Data(), &req); err != nil {
			return worker.Permanent(err)
		}
		err = s.groupPosition(ctx, req)
	default:
		var req contract.DeliveredRequest
		if err := json.Unmarshal(m.Data(), &req); err != nil {
			return worker.Permanent(err)
		}
		err = s.deliver(ctx, req)
	}
	var bad badRequest
	if errors.As(err, &bad) {
		return worker.Permanent(err)
	}
	return err
}

// applyReadTick stores a read tick that another region's receipts
// function made for a sender homed here (ticks.<sender> in TICKS) in the
// sender's inbox, if the sender has read receipts on: that region knew
// only the reader's setting. Its dedup id is the one it was made with, so
// a tick taken twice is stored once.
func (s *Service) applyReadTick(ctx context.Context, m jetstream.Msg) error {
	sender := strings.TrimPrefix(m.Subject(), contract.TicksPrefix)
	h := m.Headers()
	if !protocol.ValidID(sender) || h.Get(contract.HdrStatus) != protocol.StatusRead || !protocol.ValidID(h.Get(contract.HdrFrom)) {
		return worker.Permanent(fmt.Errorf("not a read tick for a user: %s", m.Subject()))
	}
	on, err := s.readReceiptsOn(ctx, sender)
	if err != nil {
		return err
	}
	if !on {
		s.hidden.Add(1)
		return nil
	}
	// The tick as made: its own headers, not those JetStream added on
	// the way (a publish carrying Nats-Stream-Source is refused).
	tick := nats.Header{contract.HdrMsgID: {h.Get(contract.HdrMsgID)}}
	for k, v := range h {
		if !strings.HasPrefix(k, "Nats-") {
			tick[k] = v
		}
	}
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: contract.InboxSubject(sender), Header: tick}); err != nil {
		return err
	}
	s.stored.Add(1)
	return nil
}

func (s *Service) handleRead(ctx context.Context, r micro.Request) error {
	var req contract.ReadRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	switch {
	case !protocol.ValidID(req.Reader) || !protocol.ValidID(req.Device) || !protocol.ValidID(req.Sender):
		return badRequest{"reader, device and sender must be valid ids"}
	case req.Seq == 0:
		return badRequest{"seq must be a positive sequence"}
	case req.Region != "" && (!protocol.ValidID(req.Region) || !contract.IsOutboxSeq(req.Origin)):
		return badRequest{"a read of a message from another region needs the region and its OUTBOX sequence"}
	}
	key := contract.ReadKey(req.Reader, req.Sender)
	at, err := s.readPosition(ctx, key)
	if err != nil {
		return err
	}
	if req.Sender != req.Reader && at < req.Seq {
		// The receipt first, then the position: a position seen as raised
		// has its receipt stored, and a crash in between leaves a request
		// that, asked again, stores the same receipt once.
		on, err := s.readReceiptsOn(ctx, req.Reader, req.Sender)
		if err != nil {
			return err
		}
		if on {
			m := s.tick(protocol.StatusRead, req.Reader, req.Device, req.Sender, 0, req.Seq)
			if req.Region != "" {
				// Homed in another region, whose settings are kept
				// there: to that region's TICKS, whose receipts function
				// applies the sender's own setting (applyReadTick).
				m = s.tick(protocol.StatusRead, req.Reader, req.Device, req.Sender, 0, req.Origin)
				m.Subject = contract.OutboxTicksSubject(req.Region, req.Sender)
			}
			if _, err := s.js.PublishMsg(ctx, m); err != nil {
				return err
			}
			s.stored.Add(1)
		} else {
			s.hidden.Add(1)
		}
	}
	if at < req.Seq {
		if err := s.syncRead(ctx, req); err != nil { // before the position, as the receipt
			return err
		}
	}
	if _, err := contract.Swap(ctx, s.reads, key, func(cur []byte, _ uint64) ([]byte, error) {
		if n, _ := strconv.ParseUint(string(cur), 10, 64); n >= req.Seq {
			return nil, nil // read this far already: a position never goes back
		}
		return strconv.AppendUint(nil, req.Seq, 10), nil
	}); err != nil {
		return err
	}
	s.read.Add(1)
	return r.Respond([]byte("{}"))
}

func (s *Service) handleStatus(ctx context.Context, r micro.Request) error {
	var req contract.StatusRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Group != "" && protocol.ValidID(req.Sender) && req.Seq > 0 {
		return s.groupStatus(ctx, req, r)
	}
	if !protocol.ValidID(req.Sender) || !protocol.ValidID(req.Recipient) || req.Seq == 0 {
		return badRequest{"sender and recipient must be valid ids and seq positive"}
	}
	t, err := s.ticksOf(ctx, req.Sender, req.Recipient, req.Seq)
	if err != nil {
		return err
	}
	return r.RespondJSON(contract.StatusReply{Recipients: map[string]contract.Ticks{req.Recipient: t}})
}

// ticksOf is what sender may know of the message to recipient stored at
// seq in recipient's inbox here.
func (s *Service) ticksOf(ctx context.Context, sender, recipient string, seq uint64) (contract.Ticks, error) {
	var t contract.Ticks
	var err error
	if t.Delivered, err = s.deliveredTo(ctx, recipient, seq); err != nil {
		return t, err
	}
	at, err := s.readPosition(ctx, contract.ReadKey(recipient, sender))
	if err != nil {
		return t, err
	}
	if at >= seq {
		on, err := s.readReceiptsOn(ctx, recipient, sender)
		if err != nil {
			return t, err
		}
		// Hidden reads still imply delivered: the message was on a device.
		t.Read, t.Delivered = on, true
	}
	return t, nil
}

// deliveredTo reports whether any of user's devices has settled seq: it
// lies between where the device joined and its cursor.
func (s *Service) deliveredTo(ctx context.Context, user string, seq uint64) (bool, error) {
	e, err := s.devices.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var ds contract.Devices
	if err := json.Unmarshal(e.Value(), &ds); err != nil {
		return false, nil // unreadable: the gateway's to fix; say nothing
	}
	for name, d := range ds.Devices {
		if d.Stream.UnixNano() == s.inbox && d.Start > seq {
			continue // joined after it
		}
		c, err := s.cursors.Get(ctx, contract.CursorKey(user, name))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if cur, ok := contract.ParseCursor(c.Value()); ok && cur.Stream == s.inbox && cur.Floor >= seq {
			return true, nil
		}
	}
	return false, nil
}

// readPosition is a conversation's read position, 0 when never read.
func (s *Service) readPosition(ctx context.Context, key string) (uint64, error) {
	e, err := s.reads.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	n, _ := strconv.ParseUint(string(e.Value()), 10, 64)
	return n, nil
}

// readReceiptsOn reports whether every one of users has read receipts on.
// An unreadable record counts as its defaults.
func (s *Service) readReceiptsOn(ctx context.Context, users ...string) (bool, error) {
	for _, u := range users {
		set, _, err := contract.LoadSettings(ctx, s.settings, u)
		if err != nil && !errors.Is(err, contract.ErrBadRecord) {
			return false, err
		}
		if !set.ReadReceipts {
			return false, nil
		}
	}
	return true, nil
}

// tick is a receipt for sender's inbox: reader's device did status to
// sender's messages stored in reader's inbox from from (0: the start) to
// to.
func (s *Service) tick(status, reader, device, sender string, from, to uint64) *nats.Msg {
	h := nats.Header{
		contract.HdrMsgID:  {contract.TickDedupID(status, reader, sender, from, to)},
		contract.HdrKind:   {contract.KindReceipt},
		contract.HdrStatus: {status},
		contract.HdrFrom:   {reader},
		contract.HdrDevice: {device},
		contract.HdrSeqTo:  {strconv.FormatUint(to, 10)},
		contract.HdrTS:     {strconv.FormatInt(time.Now().UnixMilli(), 10)},
	}
	if from > 0 {
		h.Set(contract.HdrSeqFrom, strconv.FormatUint(from, 10))
	}
	return &nats.Msg{Subject: contract.InboxSubject(sender), Header: h}
}

// wait waits for every publish to be stored.
func wait(ctx context.Context, futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
