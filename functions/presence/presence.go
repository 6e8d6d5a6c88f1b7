// Package presence is the presence worker function: who is online and when
// each user was last seen.
//
// Gateways report a device online by writing its lease,
// lease.<user>.<device> in the PRESENCE bucket, with a per-key TTL
// (nats-server message TTLs) that they refresh while the session lives,
// and report it offline by deleting the lease. A gateway that dies without
// reporting stops refreshing, and the server expires its leases within the
// TTL, leaving a delete marker. This function consumes every lease change
// through one durable consumer shared by all instances and keeps one
// record per user, user.<user>: the devices online and the last seen time.
// When a user comes online or goes offline it publishes the new state on
// sb.presence.<user> (core NATS, never stored) for the gateways whose
// clients subscribed.
//
// Events may be applied out of order (many instances), so the record keeps,
// per device, the stream sequence of the latest change applied, and a
// change older than that is ignored. Applying changes in any order, or
// twice, therefore gives the record the latest change says.
//
// Privacy: each answer and update honours the user's last_seen setting
// (SETTINGS): everyone, contacts (users on the user's own contact list) or
// nobody. It covers both online and last seen; a viewer who may not see
// them gets {"hidden": true}.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
)

// Version is the micro service version.
const Version = "1.0.0"

// Config tunes an instance.
type Config struct {
	Workers     int
	MaxAttempts int
	// AckWait overrides the durable's ack wait when set.
	AckWait time.Duration
}

// DefaultConfig is what the binary runs with.
func DefaultConfig() Config { return Config{Workers: 8, MaxAttempts: 100} }

// Service is one running instance.
type Service struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	settings jetstream.KeyValue
	cfg      Config
	log      *slog.Logger

	svc  micro.Service
	pool *worker.Pool

	changes atomic.Int64
	sweeps  atomic.Int64 // sweeps after a gap in lease changes (missedExpiries)
	// sweeping runs the sweep; stopSweep ends it.
	sweeping  sync.WaitGroup
	stopSweep context.CancelFunc
}

// Start binds the durable consumer and the micro service. The streams and
// buckets must exist (streams.Apply).
func Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Workers <= 0 || cfg.MaxAttempts <= 0 {
		return nil, fmt.Errorf("presence: workers and max attempts must be positive")
	}
	s := &Service{nc: nc, js: js, cfg: cfg, log: log.With("function", "presence")}
	var err error
	if s.kv, err = js.KeyValue(ctx, contract.PresenceKV); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	if s.settings, err = js.KeyValue(ctx, contract.SettingsKV); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	// Asked before this instance takes any change, which would make it
	// recent.
	missed, lastTaken := s.missedExpiries(ctx)
	s.svc, s.pool, err = worker.Serve(ctx, nc, js, worker.Service{
		Stream:  "KV_" + contract.PresenceKV,
		AckWait: cfg.AckWait,
		Micro: micro.Config{
			Name:         "presence",
			Version:      Version,
			Description:  "Keeps who is online and last seen from gateway leases; answers with privacy applied",
			StatsHandler: s.stats,
		},
		Endpoint: "get", Subject: contract.PresenceGetSubject, Example: `{"viewer":"alice","users":["bob"]}`, Handler: s.handleGet,
	}, worker.Options{
		Function: "presence", Workers: cfg.Workers, MaxAttempts: cfg.MaxAttempts,
		// One user's changes in stream order, within an instance: fewer
		// compare-and-set retries on their record.
		Key: func(m jetstream.Msg) string { u, _, _ := parseLeaseSubject(m.Subject()); return u },
	}, s.log, s.handle)
	if err == nil {
		err = s.svc.AddEndpoint("announce", micro.HandlerFunc(s.handleAnnounce), micro.WithEndpointSubject(contract.PresenceAnnounceSubject),
			micro.WithEndpointMetadata(map[string]string{"request": `{"user":"bob"}`}))
		if err != nil {
			s.pool.Stop()
			_ = s.svc.Stop()
		}
	}
	if err != nil {
		return nil, err
	}
	if missed {
		s.sweeps.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		s.stopSweep = cancel
		s.sweeping.Add(1)
		go func() {
			defer s.sweeping.Done()
			defer cancel()
			s.sweepMissed(ctx, lastTaken)
		}()
	}
	return s, nil
}

// missedExpiries reports whether expiries may have left no trace the
// durable could deliver: no instance took a lease change for longer
// than the bucket keeps expiry markers (or for half of it, for clock
// skew; an unknown durable counts as never). A user whose last device's
// lease expired then would stay online in their record, and to the
// followers told so, for good. It also returns when a change was last
// taken (zero: never), the earliest any such device can have gone.
func (s *Service) missedExpiries(ctx context.Context) (bool, time.Time) {
	st, err := s.js.Stream(ctx, "KV_"+contract.PresenceKV)
	if err != nil {
		return true, time.Time{}
	}
	keep := st.CachedInfo().Config.SubjectDeleteMarkerTTL
	cons, err := s.js.Consumer(ctx, "KV_"+contract.PresenceKV, "presence")
	if err != nil {
		return true, time.Time{}
	}
	last := cons.CachedInfo().Delivered.Last
	if last == nil {
		return true, time.Time{}
	}
	return time.Since(*last) > keep/2, *last
}

// sweepMissed takes out of every record the devices whose lease left no
// trace (dropMissed), and publishes each user that went offline so, with
// last seen at least lastTaken. Run once, in the background, by an
// instance starting after such a gap.
func (s *Service) sweepMissed(ctx context.Context, lastTaken time.Time) {
	keys, err := s.kv.ListKeysFiltered(ctx, contract.PresenceUserKey("*"))
	if err != nil {
		s.log.Warn("cannot list presence records to sweep", "err", err)
		return
	}
	defer func() { _ = keys.Stop() }()
	n := 0
	for key := range keys.Keys() {
		user := strings.TrimPrefix(key, contract.PresenceUserKey(""))
		gone, err := s.dropGone(ctx, user, lastTaken)
		if err != nil {
			s.log.Warn("cannot sweep a presence record", "user", user, "err", err)
		}
		if gone {
			n++
		}
	}
	s.log.Info("swept presence records after a gap in lease changes", "offline", n)
}

// dropGone takes user's devices whose lease left no trace out of their
// record and reports whether that took the user offline (published).
func (s *Service) dropGone(ctx context.Context, user string, lastTaken time.Time) (bool, error) {
	var rec contract.PresenceRecord
	var gone bool
	rev, err := contract.Swap(ctx, s.kv, contract.PresenceUserKey(user), func(cur []byte, _ uint64) ([]byte, error) {
		rec, gone = contract.PresenceRecord{}, false
		if cur == nil || json.Unmarshal(cur, &rec) != nil || !rec.Online() {
			return nil, nil
		}
		listed := len(rec.Devices)
		s.dropMissed(ctx, user, &rec)
		if len(rec.Devices) == listed {
			return nil, nil
		}
		if gone = !rec.Online(); gone {
			rec.LastSeen = max(rec.LastSeen, lastTaken.UnixMilli())
		}
		return json.Marshal(&rec)
	})
	if err != nil || !gone {
		return false, err
	}
	s.changes.Add(1)
	s.publish(ctx, user, &rec, rev)
	return true, nil
}

// Stop stops pulling, finishes the events in hand and hands the rest back
// for another instance.
func (s *Service) Stop() {
	if s.stopSweep != nil {
		s.stopSweep()
	}
	s.sweeping.Wait()
	s.pool.Stop()
	_ = s.svc.Stop()
}

func (s *Service) stats(*micro.Endpoint) any {
	return map[string]int64{
		"applied":       s.pool.Applied.Load(),
		"changes":       s.changes.Load(),
		"sweeps":        s.sweeps.Load(),
		"retried":       s.pool.Retried.Load(),
		"dead_lettered": s.pool.DeadLettered.Load(),
	}
}

// parseLeaseSubject splits $KV.PRESENCE.lease.<user>.<device>.
func parseLeaseSubject(subj string) (user, device string, ok bool) {
	rest, found := strings.CutPrefix(subj, "$KV."+contract.PresenceKV+".lease.")
	if !found {
		return "", "", false
	}
	user, device, found = strings.Cut(rest, ".")
	return user, device, found && protocol.ValidID(user) && protocol.ValidID(device)
}

func (s *Service) handle(ctx context.Context, m jetstream.Msg) error {
	user, device, ok := parseLeaseSubject(m.Subject())
	if !ok {
		return worker.Permanent(errors.New("not a lease key: " + m.Subject()))
	}
	meta, err := m.Metadata()
	if err != nil {
		return worker.Permanent(err)
	}
	// A put is a lease taken or refreshed; a delete, a purge or the
	// server's marker for an expired lease is a lease gone.
	h := m.Headers()
	var since int64
	if h.Get("KV-Operation") == "" && h.Get(jetstream.MarkerReasonHeader) == "" {
		var l contract.Lease
		if json.Unmarshal(m.Data(), &l) != nil || l.Since <= 0 {
			l.Since = meta.Timestamp.UnixMilli()
		}
		since = l.Since
	}
	return s.apply(ctx, user, device, change{seq: meta.Sequence.Stream, since: since, at: meta.Timestamp})
}

// change is one lease change: the device online since since (0: offline),
// at stream sequence seq, at time at.
type change struct {
	seq   uint64
	since int64
	at    time.Time
}

// apply merges a lease change into the user's record, unless a later
// change of the same device was applied already, and publishes the user's
// new state if they came online or went offline. A device going moves
// the user's last seen to the change's time if that is later; it is shown
// once the last device has gone.
func (s *Service) apply(ctx context.Context, user, device string, c change) error {
	var rec contract.PresenceRecord
	var wasOnline, again, stale bool
	rev, err := contract.Swap(ctx, s.kv, contract.PresenceUserKey(user), func(cur []byte, _ uint64) ([]byte, error) {
		rec, again, stale = contract.PresenceRecord{}, false, false
		if cur != nil && json.Unmarshal(cur, &rec) != nil {
			rec = contract.PresenceRecord{} // unreadable: rebuilt from the changes to come
		}
		if _, listed := rec.Devices[device]; c.since > 0 && !listed && len(rec.Devices) > 0 {
			// Another device listed may be one whose expiry was missed
			// (dropMissed): left in, it would make this device's coming
			// online no change, and nobody would be told.
			s.dropMissed(ctx, user, &rec)
		}
		wasOnline = rec.Online()
		switch {
		case rec.Applied[device] > c.seq:
			stale = true
			return nil, nil
		case rec.Applied[device] == c.seq:
			// Applied already: a redelivery after a crash, perhaps
			// before the change was published.
			again = true
			return nil, nil
		}
		if rec.Applied == nil {
			rec.Applied = map[string]uint64{}
		}
		rec.Applied[device] = c.seq
		if c.since > 0 {
			if rec.Devices == nil {
				rec.Devices = map[string]int64{}
			}
			if _, had := rec.Devices[device]; !had {
				rec.Devices[device] = c.since
			}
		} else {
			delete(rec.Devices, device)
			s.dropMissed(ctx, user, &rec)
			// Whether or not it was the last device: changes may be
			// applied out of order (one held by an instance that died),
			// and the last one applied need not be the latest. Shown only
			// while the user is offline.
			rec.LastSeen = max(rec.LastSeen, c.at.UnixMilli())
		}
		return json.Marshal(&rec)
	})
	switch {
	case err != nil || stale:
		return err
	case again:
		// Publishing the current state again is harmless: it carries
		// the revision it was read at, so a gateway that forwarded a
		// newer one drops it.
		s.publish(ctx, user, &rec, rev)
	case wasOnline != rec.Online():
		s.changes.Add(1)
		s.publish(ctx, user, &rec, rev)
	}
	return nil
}

// dropMissed takes out of rec the devices whose lease left no trace at
// all: it expired, and its expiry marker too, while no instance ran
// (markers are kept for the bucket's limit_marker_ttl), so no change will
// ever take them out. Left in, such a device would keep the user online
// in the record for good, and no update would say the user went offline.
// A device whose lease key holds anything is kept: a lease, or a delete
// or marker whose change is still to be applied. Asked only when a device
// goes and others remain, or a device not listed comes while others are,
// of the bucket's leader (a replica a step behind could miss a lease just
// written).
func (s *Service) dropMissed(ctx context.Context, user string, rec *contract.PresenceRecord) {
	for d := range rec.Devices {
		_, err := contract.GetMsg(ctx, s.nc, "KV_"+contract.PresenceKV, 0, contract.LeaseSubject(user, d))
		switch {
		case errors.Is(err, contract.ErrNoMsg):
			delete(rec.Devices, d)
		case err != nil:
			// Best effort: the change itself must not wait on it.
			s.log.Warn("cannot read a lease; the device stays listed", "user", user, "device", d, "err", err)
		}
	}
}

// publish announces a user's new state, made from revision rev of their
// record (0: unknown). It is core NATS: a gateway that misses it still
// answers correctly from the record on the next get. The record is
// written by then, so a change comes only once: a connection lost before
// the announcement is waited out (within the handler's time), or
// followers already told keep the old state until the user's next change.
func (s *Service) publish(ctx context.Context, user string, rec *contract.PresenceRecord, rev uint64) {
	set, _, err := contract.LoadSettings(ctx, s.settings, user)
	if err != nil {
		set.LastSeen = contract.VisibleNobody // unreadable: err on the private side
	}
	b, _ := json.Marshal(contract.PresenceUpdate{User: user, Online: rec.Online(), LastSeen: rec.LastSeen, Visibility: set.LastSeen, Rev: rev})
	if err := contract.PublishThroughReconnect(ctx, s.nc, contract.PresenceSubject(user), b); err != nil {
		s.log.Warn("presence change not announced", "user", user, "err", err)
	}
}

// Views returns users' presence as viewer may see it.
func (s *Service) Views(ctx context.Context, viewer string, users []string) ([]contract.PresenceView, error) {
	out := make([]contract.PresenceView, 0, len(users))
	for _, u := range users {
		set, _, err := contract.LoadSettings(ctx, s.settings, u)
		if err != nil && !errors.Is(err, contract.ErrBadRecord) {
			return nil, err
		}
		if err != nil || !set.Shows(u, viewer) {
			out = append(out, contract.PresenceView{User: u, Hidden: true})
			continue
		}
		rec, err := contract.LoadLivePresence(ctx, s.kv, u)
		if err != nil && !errors.Is(err, contract.ErrBadRecord) {
			return nil, err
		}
		out = append(out, contract.PresenceView{User: u, Online: rec.Online(), LastSeen: rec.LastSeen})
	}
	return out, nil
}

// handleAnnounce publishes a user's current state under their current
// settings, for a gateway whose device just changed them.
func (s *Service) handleAnnounce(r micro.Request) {
	var req contract.AnnounceRequest
	if err := json.Unmarshal(r.Data(), &req); err != nil || !protocol.ValidID(req.User) {
		_ = r.Error("400", "bad_id: user must be a valid id", nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := contract.LoadLivePresence(ctx, s.kv, req.User)
	if err != nil && !errors.Is(err, contract.ErrBadRecord) {
		_ = r.Error("500", "internal: "+err.Error(), nil)
		return
	}
	s.publish(ctx, req.User, &rec, 0)
	_ = r.Respond([]byte("{}"))
}

func (s *Service) handleGet(r micro.Request) {
	var req contract.PresenceRequest
	if err := json.Unmarshal(r.Data(), &req); err != nil {
		_ = r.Error("400", "bad_json: "+err.Error(), nil)
		return
	}
	if !protocol.ValidID(req.Viewer) {
		_ = r.Error("400", "bad_id: viewer must be a valid id", nil)
		return
	}
	if len(req.Users) == 0 || len(req.Users) > contract.MaxPresenceGet {
		_ = r.Error("400", fmt.Sprintf("bad_field: ask about 1 to %d users", contract.MaxPresenceGet), nil)
		return
	}
	for _, u := range req.Users {
		if !protocol.ValidID(u) {
			_ = r.Error("400", "bad_id: users must be valid ids", nil)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	views, err := s.Views(ctx, req.Viewer, req.Users)
	if err != nil {
		_ = r.Error("500", "internal: "+err.Error(), nil)
		return
	}
	_ = r.RespondJSON(contract.PresenceReply{Users: views})
}
