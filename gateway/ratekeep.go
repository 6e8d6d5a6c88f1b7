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
// burst again, as often as it connects. A device's sessions on this
// gateway share one set of buckets, kept after the last ends for as long
// as the slowest would take to fill (past that, new ones are the same).
// Another gateway starts afresh: a client that moves gateways to escape
// its limits goes through the handshake each time.
type limitKeeper struct {
	cfg  *Config
	keep time.Duration // how long a set outlives its last session

	mu        sync.Mutex
	byDevice  map[deviceKey]*keptLimits
	lastSweep time.Time
}

// deviceKey names a device: its user and device ids.
type deviceKey struct{ user, device string }

type keptLimits struct {
	l     *limits
	live  int       // sessions using it
	ended time.Time // when the last one ended (live == 0)
}

func newLimitKeeper(cfg *Config) *limitKeeper {
	k := &limitKeeper{cfg: cfg, byDevice: map[deviceKey]*keptLimits{}}
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

// take returns the buckets of device id for a session starting now.
func (k *limitKeeper) take(id Identity, now time.Time) *limits {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweepLocked(now)
	key := deviceKey{id.User, id.Device}
	e := k.byDevice[key]
	if e == nil || (e.live == 0 && now.Sub(e.ended) > k.keep) {
		e = &keptLimits{l: k.fresh()}
		k.byDevice[key] = e
	}
	e.live++
	return e.l
}

// give hands back a session's buckets as it ends.
func (k *limitKeeper) give(id Identity, l *limits, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.byDevice[deviceKey{id.User, id.Device}]; e != nil && e.l == l {
		e.live--
		e.ended = now
	}
}

// sweepLocked forgets, at most once per keep, the sets no session uses
// that have filled since.
//
// Lock should be held.
func (k *limitKeeper) sweepLocked(now time.Time) {
	if now.Sub(k.lastSweep) < k.keep {
		return
	}
	k.lastSweep = now
	for key, e := range k.byDevice {
		if e.live == 0 && now.Sub(e.ended) > k.keep {
			delete(k.byDevice, key)
		}
	}
}

// kept is how many devices' buckets are held (tests).
func (k *limitKeeper) kept() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.byDevice)
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
