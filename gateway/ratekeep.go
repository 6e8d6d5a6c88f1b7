package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limits are a device's rate limits on the frames it sends, one token
// bucket per kind (session.go, allow).
type limits struct {
	send, frame, typing, settings, group *rate.Limiter
}

// limitKeeper hands a device's buckets from one of its sessions to the
// next. Were each session to start with full buckets, a client refused for
// its rate (or closed for flooding) could reconnect and have its whole
// burst again, as often as it connects. A session that ends leaves its
// buckets here for as long as the slowest would take to fill (past that,
// new ones are the same), and the device's next session on this gateway
// takes them. Only ended sessions' buckets are held, so a connected device
// costs nothing here. Another gateway starts afresh: a client that moves
// gateways to escape its limits goes through the handshake each time.
type limitKeeper struct {
	cfg  *Config
	keep time.Duration // how long an ended session's buckets are held

	mu        sync.Mutex
	ended     map[deviceKey]keptLimits
	lastSweep time.Time
}

// deviceKey names a device: its user and device ids.
type deviceKey struct{ user, device string }

type keptLimits struct {
	l  *limits
	at time.Time // when its session ended
}

func newLimitKeeper(cfg *Config) *limitKeeper {
	k := &limitKeeper{cfg: cfg, ended: map[deviceKey]keptLimits{}}
	for _, b := range []struct {
		rate  float64
		burst int
	}{
		{cfg.SendRate, cfg.SendBurst}, {cfg.FrameRate, cfg.FrameBurst}, {cfg.TypingRate, cfg.TypingBurst},
		{cfg.SettingsRate, cfg.SettingsBurst}, {cfg.groupRate(), cfg.groupBurst()},
	} {
		k.keep = max(k.keep, time.Duration(float64(b.burst)/b.rate*float64(time.Second)))
	}
	return k
}

// take returns the buckets for device id's session starting now: those
// its last session left, if they have not filled since.
func (k *limitKeeper) take(id Identity, now time.Time) *limits {
	if l := k.takeKept(id, now); l != nil {
		return l
	}
	return k.fresh()
}

// takeKept returns the buckets device id's last session left, nil if
// none are held or they have filled since. A session takes them again
// once its start has replaced an older session of the device, which
// leaves its buckets as it is replaced.
func (k *limitKeeper) takeKept(id Identity, now time.Time) *limits {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweepLocked(now)
	key := deviceKey{id.User, id.Device}
	e, ok := k.ended[key]
	if !ok {
		return nil
	}
	delete(k.ended, key)
	if now.Sub(e.at) > k.keep {
		return nil
	}
	return e.l
}

// give leaves an ended session's buckets for the device's next session.
func (k *limitKeeper) give(id Identity, l *limits, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ended[deviceKey{id.User, id.Device}] = keptLimits{l: l, at: now}
}

// sweepLocked forgets, at most once per keep, the buckets that have
// filled since their session ended.
//
// Lock should be held.
func (k *limitKeeper) sweepLocked(now time.Time) {
	if now.Sub(k.lastSweep) < k.keep {
		return
	}
	k.lastSweep = now
	for key, e := range k.ended {
		if now.Sub(e.at) > k.keep {
			delete(k.ended, key)
		}
	}
}

// kept is how many devices' buckets are held (tests).
func (k *limitKeeper) kept() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.ended)
}

func (k *limitKeeper) fresh() *limits {
	c := k.cfg
	return &limits{
		send:     rate.NewLimiter(rate.Limit(c.SendRate), c.SendBurst),
		frame:    rate.NewLimiter(rate.Limit(c.FrameRate), c.FrameBurst),
		typing:   rate.NewLimiter(rate.Limit(c.TypingRate), c.TypingBurst),
		settings: rate.NewLimiter(rate.Limit(c.SettingsRate), c.SettingsBurst),
		group:    rate.NewLimiter(rate.Limit(c.groupRate()), c.groupBurst()),
	}
}
