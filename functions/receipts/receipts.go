// Package receipts is the receipts worker function. Gateways store a
// receipt event in RECEIPTS (receipts.<sender>) when a device acks or reads
// a message; this function applies each event to the message's status in
// the STATUS bucket and forwards every change to the sender's inbox, where
// the sender's devices get it as a receipt frame, online or later.
//
// Rules:
//   - Status is per recipient user: delivered when the first of their
//     devices acked, read when the first one read. It never goes back.
//   - A read that arrives before its delivered implies delivered; the
//     sender gets the read receipt only, which clients show as both ticks.
//   - Read receipts go only when both the reader and the sender have them
//     on (SETTINGS read_receipts), as WhatsApp does: turning them off hides
//     your reads from others and theirs from you. A read not forwarded is
//     not recorded either, so STATUS shows what the sender was told.
//   - Duplicate events change nothing and forward nothing.
//
// Crash safety: an event is acked only after its forward is stored (with a
// dedup id per status, message and recipient) and the status is written
// with compare-and-set. An instance that dies anywhere in between leaves
// the event to be redelivered; the redelivery finds the status written
// (nothing to do) or forwards again, which the inbox's duplicate window
// drops. Any number of instances pull from the one durable consumer.
//
// Records are keyed <sender>.<id> and hold a map of recipients, so a group
// message keeps one entry per member in the same record.
package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/worker"
	"github.com/switchboard-im/switchboard/protocol"
)

// Version is the micro service version.
const Version = "1.0.0"

// Config tunes an instance.
type Config struct {
	// Workers is how many events an instance applies at once.
	Workers int
	// MaxAttempts is how many times an event that fails (the store is
	// unavailable) is tried before it is dead-lettered. Retries back off
	// to 30 s, so the default of 100 rides out a long outage (a restart,
	// a leader election) without losing a tick; malformed events are
	// dead-lettered at once.
	MaxAttempts int
	// AckWait overrides the durable's ack wait (how long a dead instance
	// holds events) when set.
	AckWait time.Duration
}

// DefaultConfig is what the binary runs with.
func DefaultConfig() Config { return Config{Workers: 16, MaxAttempts: 100} }

// Service is one running instance.
type Service struct {
	js       jetstream.JetStream
	status   jetstream.KeyValue
	settings jetstream.KeyValue
	cfg      Config
	log      *slog.Logger

	svc  micro.Service
	pool *worker.Pool

	forwarded, unchanged atomic.Int64
}

// Start binds the durable consumer and the micro service and starts
// applying events. The streams and buckets must exist (streams.Apply).
func Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Workers <= 0 || cfg.MaxAttempts <= 0 {
		return nil, fmt.Errorf("receipts: workers and max attempts must be positive")
	}
	s := &Service{js: js, cfg: cfg, log: log.With("function", "receipts")}
	var err error
	if s.status, err = js.KeyValue(ctx, contract.StatusKV); err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	if s.settings, err = js.KeyValue(ctx, contract.SettingsKV); err != nil {
		return nil, fmt.Errorf("receipts: %w", err)
	}
	s.svc, s.pool, err = worker.Serve(ctx, nc, js, worker.Service{
		Stream:  contract.Receipts,
		AckWait: cfg.AckWait,
		Micro: micro.Config{
			Name:         "receipts",
			Version:      Version,
			Description:  "Applies delivered/read events to message status and forwards them to senders",
			StatsHandler: s.stats,
		},
		Endpoint: "status", Subject: contract.StatusSubject, Example: `{"user":"alice","id":"m-1"}`, Handler: s.handleStatus,
	}, worker.Options{
		Function: "receipts", Workers: cfg.Workers, MaxAttempts: cfg.MaxAttempts,
		// One message's events in stream order, within an instance.
		Key: func(m jetstream.Msg) string { return m.Subject() + " " + m.Headers().Get(contract.HdrID) },
	}, s.log, s.handle)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Stop stops pulling, finishes the events in hand and hands the rest back
// for another instance.
func (s *Service) Stop() {
	s.pool.Stop()
	_ = s.svc.Stop()
}

func (s *Service) stats(*micro.Endpoint) any {
	return map[string]int64{
		"applied":       s.pool.Applied.Load(),
		"forwarded":     s.forwarded.Load(),
		"unchanged":     s.unchanged.Load(),
		"retried":       s.pool.Retried.Load(),
		"dead_lettered": s.pool.DeadLettered.Load(),
	}
}

// event is one decoded receipt event.
type event struct {
	sender, id, status, by, device string
	ts                             int64
}

func parse(m jetstream.Msg) (event, error) {
	h := m.Headers()
	e := event{
		sender: strings.TrimPrefix(m.Subject(), contract.ReceiptsPrefix),
		id:     h.Get(contract.HdrID),
		status: h.Get(contract.HdrStatus),
		by:     h.Get(contract.HdrFrom),
		device: h.Get(contract.HdrDevice),
	}
	e.ts, _ = strconv.ParseInt(h.Get(contract.HdrTS), 10, 64)
	switch {
	case h.Get(contract.HdrKind) != contract.KindReceipt:
		return e, errors.New("not a receipt event")
	case e.status != protocol.StatusDelivered && e.status != protocol.StatusRead:
		return e, fmt.Errorf("unknown status %q", e.status)
	case !protocol.ValidID(e.sender) || !protocol.ValidID(e.id) || !protocol.ValidID(e.by) || !protocol.ValidID(e.device):
		return e, errors.New("missing or invalid sender, id, reader or device")
	case e.ts <= 0:
		return e, errors.New("missing or invalid timestamp")
	}
	return e, nil
}

func (s *Service) handle(ctx context.Context, m jetstream.Msg) error {
	e, err := parse(m)
	if err != nil {
		return worker.Permanent(err)
	}
	return s.apply(ctx, e)
}

// apply merges one event into the message's status, forwarding the change
// first so that a crash after the forward cannot lose it.
func (s *Service) apply(ctx context.Context, e event) error {
	status := e.status
	if status == protocol.StatusRead {
		on, err := s.readReceiptsOn(ctx, e.by, e.sender)
		if err != nil {
			return err
		}
		if !on {
			// The read still implies delivered.
			status = protocol.StatusDelivered
		}
	}
	key := e.sender + "." + e.id
	for {
		rec, rev, err := s.load(ctx, key)
		if err != nil {
			return err
		}
		t := rec.To[e.by]
		if t == nil {
			t = &contract.Tick{}
			rec.To[e.by] = t
		}
		switch {
		case status == protocol.StatusRead && t.Read == 0:
			t.Read = e.ts
			if t.Delivered == 0 {
				t.Delivered = e.ts
			}
		case status == protocol.StatusDelivered && t.Delivered == 0:
			t.Delivered = e.ts
		default:
			s.unchanged.Add(1)
			return nil
		}
		if err := s.forward(ctx, e, status); err != nil {
			return err
		}
		b, _ := json.Marshal(rec)
		if rev == 0 {
			_, err = s.status.Create(ctx, key, b)
		} else {
			_, err = s.status.Update(ctx, key, b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another instance changed it: merge again
		}
		return err
	}
}

func (s *Service) load(ctx context.Context, key string) (contract.Status, uint64, error) {
	rec := contract.Status{To: map[string]*contract.Tick{}}
	e, err := s.status.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return rec, 0, nil
	case err != nil:
		return rec, 0, err
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.To == nil {
		// A record this function cannot read is replaced, not kept
		// failing forever: the events still to come rebuild it.
		s.log.Warn("replacing unreadable status record", "key", key, "err", err)
		rec = contract.Status{To: map[string]*contract.Tick{}}
	}
	return rec, e.Revision(), nil
}

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

// forward stores the receipt in the sender's inbox.
func (s *Service) forward(ctx context.Context, e event, status string) error {
	m := &nats.Msg{
		Subject: contract.InboxSubject(e.sender),
		Header: nats.Header{
			contract.HdrMsgID:  {contract.ReceiptDedupID(status, e.sender, e.id, e.by)},
			contract.HdrKind:   {contract.KindReceipt},
			contract.HdrStatus: {status},
			contract.HdrFrom:   {e.by},
			contract.HdrDevice: {e.device},
			contract.HdrID:     {e.id},
			contract.HdrTS:     {strconv.FormatInt(e.ts, 10)},
		},
	}
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("forward to %s: %w", e.sender, err)
	}
	s.forwarded.Add(1)
	return nil
}

func (s *Service) handleStatus(r micro.Request) {
	var req contract.StatusRequest
	if err := json.Unmarshal(r.Data(), &req); err != nil {
		_ = r.Error("400", "bad_json: "+err.Error(), nil)
		return
	}
	if !protocol.ValidID(req.User) || !protocol.ValidID(req.ID) {
		_ = r.Error("400", "bad_id: user and id must be valid ids", nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, rev, err := s.load(ctx, req.User+"."+req.ID)
	switch {
	case err != nil:
		_ = r.Error("500", "internal: "+err.Error(), nil)
	case rev == 0:
		_ = r.Error("404", "not_found: no status for this message", nil)
	default:
		_ = r.RespondJSON(contract.StatusReply{ID: req.ID, To: rec.To})
	}
}
