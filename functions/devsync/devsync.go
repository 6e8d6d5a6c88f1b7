// Package devsync is the sync worker function: it gives a user's other
// devices the messages the user sent from one of them.
//
// A 1:1 message is stored in the recipient's inbox only. This function
// reads INBOX through one durable consumer (every instance shares it) and,
// for each chat message that is neither a group copy nor itself a copy,
// stores a copy in the sender's own inbox (contract.HdrTo names the
// recipient, contract.HdrSentSeq where the original is stored, the seq its
// sent frame and receipts name). Every device of the sender reads its
// inbox, so the copy reaches each of them in that inbox's order, online or
// later, through the same cursors, gap fills and sweeps as any message,
// and the sender's ticks, which already land in that inbox, reach them
// too. The gateway does not hand the copy to the device that sent it.
//
// A copy is made only when the sender has another device that is to get
// it: one that joined at or before the original was stored (a device
// added later starts from when it joined, as for any message). An
// instance keeps the DEVICES records of users with two or more devices
// (roster.go) and reads the bucket onward once per round of messages, not
// once per message: a user with one device costs no read of their record
// and no stored write.
//
// Crash safety: a message is acked only once its copy is stored, and the
// copy's Nats-Msg-Id is the sender and the client's id
// (contract.OwnCopyDedupID), so a message an instance dies with comes
// again to another and its copy is stored once (within INBOX's duplicate
// window, longer than the ack wait).
//
// Order: the durable is pinned to one instance at a time (a priority
// group; the others stand by and take over once it stops pulling), which
// applies one sender's messages one at a time in the order the durable
// hands them over (the pool's key is the sender), retrying a failed copy
// in place, so a sender's copies are stored in the order of the originals.
// A copy that keeps failing for the whole timeout is handed back and can
// land after the next one; after an instance dies, its unacked messages
// come again to the next and can land after newer ones. Each copy names
// its original's seq.
package devsync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
const Version = "1.0.0"

// Name is the function's name: its role, durable and dead-letter prefix.
const Name = "sync"

// priorityGroup is the durable's one priority group: the server hands its
// messages to one instance at a time (pinned), so two instances never
// copy one sender's messages at once.
const priorityGroup = "sync"

// rosterTimeout bounds one read of DEVICES by the roster; questions of a
// round that ran out read their sender's record instead.
const rosterTimeout = 2 * time.Second

// pinHeader names the pin a pinned consumer's message was handed over
// under.
const pinHeader = "Nats-Pin-Id"

// Config tunes an instance.
type Config struct {
	// Workers is how many senders' messages an instance copies at once.
	Workers int
	// AckWait overrides the durable's ack wait when set: how long a
	// message an instance dies with waits before another gets it.
	AckWait time.Duration
	// PinnedTTL overrides how long the durable stays pinned to an
	// instance that stopped pulling before another takes over; it must
	// outlast the ack wait.
	PinnedTTL time.Duration
	// Timeout bounds one copy.
	Timeout time.Duration
	// DevicesCheck is how often the instance looks at the DEVICES
	// stream itself, to notice one deleted and created again (default
	// 5s; roster.go).
	DevicesCheck time.Duration
}

// DefaultConfig is what the binary runs with.
func DefaultConfig() Config { return Config{Workers: 32, Timeout: 10 * time.Second} }

// Service is one running instance.
type Service struct {
	js      jetstream.JetStream
	inbox   jetstream.Stream
	devices jetstream.KeyValue
	created time.Time // when INBOX was created
	log     *slog.Logger
	svc     micro.Service
	pool    *worker.Pool
	roster  *roster

	copied, single, ignored, fallbacks atomic.Int64
	// pin is the id the server pinned this instance with, as the last
	// message it handed over said (Nats-Pin-Id).
	pin atomic.Pointer[string]
}

// Start binds the durable consumer `sync` on INBOX and a micro service
// (for nats micro ls and stats) and begins copying. The streams and
// buckets must exist.
func Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Workers <= 0 {
		return nil, fmt.Errorf("%s: workers must be positive", Name)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{js: js, log: log.With("function", Name)}
	inbox, err := js.Stream(ctx, contract.Inbox)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	s.inbox = inbox
	s.created = inbox.CachedInfo().Created
	if s.devices, err = js.KeyValue(ctx, contract.DevicesKV); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if s.roster, err = newRoster(ctx, nc, js, rosterTimeout, cmp.Or(cfg.DevicesCheck, rosterCheck)); err != nil {
		return nil, fmt.Errorf("%s: devices: %w", Name, err)
	}
	ccfg, err := streams.ConsumerConfig(Name)
	if err != nil {
		s.roster.close()
		return nil, err
	}
	if cfg.AckWait > 0 {
		ccfg.AckWait = cfg.AckWait
	}
	if cfg.PinnedTTL > 0 {
		ccfg.PinnedTTL = cfg.PinnedTTL
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, contract.Inbox, ccfg)
	if err != nil {
		s.roster.close()
		return nil, fmt.Errorf("%s: consumer: %w", Name, err)
	}
	s.svc, err = micro.AddService(nc, micro.Config{
		Name:         Name,
		Version:      Version,
		Description:  "Copies each 1:1 message into its sender's inbox, for the sender's other devices",
		StatsHandler: func(*micro.Endpoint) any { return s.Stats() },
	})
	if err != nil {
		s.roster.close()
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	s.pool, err = worker.Start(js, cons, worker.Options{Function: Name, Workers: cfg.Workers, MaxAttempts: 100, Timeout: cfg.Timeout,
		Key:     func(m jetstream.Msg) string { return m.Headers().Get(contract.HdrFrom) },
		Consume: []jetstream.PullConsumeOpt{jetstream.PullPriorityGroup(priorityGroup)}}, s.log, s.apply)
	if err != nil {
		_ = s.svc.Stop()
		s.roster.close()
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if err := nc.Flush(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return s, nil
}

// Stop stops pulling and finishes the copies under way; messages fetched
// and not started are handed back for another instance, which takes the
// durable over at once: a stop unpins this instance, where a crash
// leaves the others waiting out the pin's timeout.
func (s *Service) Stop() {
	s.pool.Stop()
	_ = s.svc.Stop()
	s.roster.close()
	s.unpin()
}

// unpin hands the durable to an instance standing by, if this one is
// still the pinned one (unpinning another would let two instances copy
// one sender's messages at once).
func (s *Service) unpin() {
	pin := s.pin.Load()
	if pin == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := s.inbox.Consumer(ctx, Name)
	if err != nil {
		return
	}
	for _, g := range c.CachedInfo().PriorityGroups {
		if g.Group == priorityGroup && g.PinnedClientID == *pin {
			if err := s.inbox.UnpinConsumer(ctx, Name, priorityGroup); err != nil {
				s.log.Warn("unpin on stop failed; another instance takes over after the pin's timeout", "err", err)
			}
		}
	}
}

// Stats are an instance's counters: copies stored, messages whose sender
// had no other device, and messages that needed no copy (receipts, group
// copies, copies, notes to self); the users with two or more devices its
// copy of DEVICES holds, the direct gets that kept it, and the messages
// whose sender was read from the bucket because a round failed.
type Stats struct {
	Copied      int64  `json:"copied"`
	Single      int64  `json:"single_device"`
	Ignored     int64  `json:"ignored"`
	MultiDevice int    `json:"multi_device_users"`
	DeviceReads uint64 `json:"device_reads"`
	Fallbacks   int64  `json:"device_fallbacks"`
}

// Stats returns the instance's counters.
func (s *Service) Stats() Stats {
	users, reads := s.roster.stats()
	return Stats{Copied: s.copied.Load(), Single: s.single.Load(), Ignored: s.ignored.Load(),
		MultiDevice: users, DeviceReads: reads, Fallbacks: s.fallbacks.Load()}
}

// apply copies one INBOX message into its sender's inbox if it needs it.
func (s *Service) apply(ctx context.Context, m jetstream.Msg) error {
	h := m.Headers()
	if pin := h.Get(pinHeader); pin != "" {
		if old := s.pin.Load(); old == nil || *old != pin {
			s.pin.Store(&pin)
		}
	}
	to := strings.TrimPrefix(m.Subject(), contract.InboxPrefix)
	from, dev, id := h.Get(contract.HdrFrom), h.Get(contract.HdrDevice), h.Get(contract.HdrID)
	switch {
	case h.Get(contract.HdrKind) != contract.KindMsg, h.Get(contract.HdrGroup) != "", h.Get(contract.HdrTo) != "",
		from == to, !protocol.ValidID(from), !protocol.ValidID(dev), !protocol.ValidID(id), !protocol.ValidID(to):
		// Receipts, group copies (the groups function makes the
		// sender's), copies, notes to self; and what the gateway would
		// skip as malformed.
		s.ignored.Add(1)
		return nil
	}
	meta, err := m.Metadata()
	if err != nil {
		return worker.Permanent(err)
	}
	seq := meta.Sequence.Stream
	other, known := s.roster.otherDevice(ctx, s.created, from, dev, seq)
	if !known {
		s.fallbacks.Add(1)
		if other, err = contract.OtherDevice(ctx, s.devices, s.created, from, dev, seq); err != nil {
			return err
		}
	}
	if !other {
		s.single.Add(1)
		return nil
	}
	cp := contract.OwnCopy(h, to, seq, m.Data())
	for attempt := 1; ; attempt++ {
		_, err = s.js.PublishMsg(ctx, cp)
		var api *jetstream.APIError
		switch {
		case err == nil:
			s.copied.Add(1)
			return nil
		case errors.As(err, &api) && api.Code < 500:
			return worker.Permanent(err) // refused for what it is: dead-lettered
		}
		// Tried again here, not handed back, so the sender's next
		// message waits for it and the copies keep their order.
		_ = m.InProgress()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(worker.Backoff(attempt, 50*time.Millisecond, time.Second)):
		}
	}
}
