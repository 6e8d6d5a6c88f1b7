package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Regions.
//
// In a regions deployment (README, "Regions"; contract/regions.go) every
// user has one home region, recorded in the HOMES bucket (the directory
// region's, mirrored into every other, so it is read locally). A gateway:
//   - serves only devices of users homed in its own region: their inbox
//     and cursors are there, and positions in one region's INBOX mean
//     nothing in another's. A device of a user homed elsewhere is refused
//     at the handshake with 421 wrong_region, naming the home region and
//     its URL; one of a user with no home region with 403 no_home_region;
//   - stores a send to a user homed elsewhere in its region's OUTBOX, on
//     out.<region>.<user>, so "sent" comes at local latency whether or not
//     the other region is reachable; the home region's INBOX sources it
//     from there. A send to a user with no home region (or one this
//     deployment does not know) is refused with bad_field;
//   - hands the receipts function, for a sender homed elsewhere, the
//     sequences its messages had in its region's OUTBOX, which its app
//     knows them by ("sent"), so their ticks can name them.
//
// Without a region configured all of this is off: every user is local.

// RegionsConfig places a gateway in a regions deployment. The zero value
// is a single-region deployment.
type RegionsConfig struct {
	// Region is this gateway's region, which is also its NATS server's
	// JetStream domain. Empty: a single region, no directory.
	Region string
	// URLs are the WebSocket URLs devices connect to in each region of
	// the deployment, this one included, by region name: a device of a
	// user homed elsewhere is told where to go.
	URLs map[string]string
}

func (c *RegionsConfig) validate() error {
	if c.Region == "" {
		if len(c.URLs) > 0 {
			return fmt.Errorf("%w: Regions.URLs without Regions.Region", ErrConfig)
		}
		return nil
	}
	if _, ok := c.URLs[c.Region]; !ok || len(c.URLs) < 2 {
		return fmt.Errorf("%w: Regions.URLs must name this region (%s) and at least one other", ErrConfig, c.Region)
	}
	for name, u := range c.URLs {
		if !protocol.ValidID(name) || u == "" {
			return fmt.Errorf("%w: Regions.URLs: region %q with URL %q", ErrConfig, name, u)
		}
	}
	return nil
}

// maxCachedHomes bounds the homes a gateway remembers; past it, it
// forgets them all and asks the directory again.
const maxCachedHomes = 100_000

// regions is a gateway's view of the deployment: its own region, the
// others', and the homes of the users it met. A nil *regions is a single
// region: every method then says "local".
type regions struct {
	self string
	urls map[string]string
	kv   jetstream.KeyValue // HOMES
	wait func() (context.Context, context.CancelFunc)

	mu    sync.Mutex        // guards homes
	homes map[string]string // user -> home region, as read from HOMES
}

// errNoHome is a user with no home region, or one the deployment does
// not know.
var errNoHome = errors.New("gateway: no home region")

func newRegions(ctx context.Context, cfg Config, js jetstream.JetStream) (*regions, error) {
	if cfg.Regions.Region == "" {
		return nil, nil
	}
	kv, err := js.KeyValue(ctx, contract.HomesKV)
	if err != nil {
		return nil, fmt.Errorf("gateway: bucket %s (a regions deployment needs its directory): %w", contract.HomesKV, err)
	}
	return &regions{
		self:  cfg.Regions.Region,
		urls:  cfg.Regions.URLs,
		kv:    kv,
		homes: map[string]string{},
		wait: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), cfg.FunctionTimeout)
		},
	}, nil
}

// home is user's home region from the directory. Homes do not move in
// this version, so one read is remembered; a user not found is asked
// again next time (they may have been given a home meanwhile).
func (r *regions) home(user string) (string, error) {
	r.mu.Lock()
	h, ok := r.homes[user]
	r.mu.Unlock()
	if ok {
		return h, nil
	}
	ctx, cancel := r.wait()
	defer cancel()
	e, err := r.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", errNoHome
	}
	if err != nil {
		return "", err
	}
	h = string(e.Value())
	if _, known := r.urls[h]; !known {
		return "", fmt.Errorf("%w: %s's home %q is not a region of this deployment", errNoHome, user, h)
	}
	r.mu.Lock()
	if len(r.homes) >= maxCachedHomes {
		r.homes = map[string]string{}
	}
	r.homes[user] = h
	r.mu.Unlock()
	return h, nil
}

// admit lets a device in only in its user's home region; it answers the
// refusal itself and reports false otherwise.
func (r *regions) admit(s *Server, ctx *fasthttp.RequestCtx, id Identity) bool {
	if r == nil {
		return true
	}
	h, err := r.home(id.User)
	switch {
	case errors.Is(err, errNoHome):
		s.refuse(ctx, fasthttp.StatusForbidden, refusedNoHome, "this user has no home region; an operator gives it one")
		return false
	case err != nil:
		s.refuse(ctx, fasthttp.StatusServiceUnavailable, "unavailable", "the directory of home regions did not answer; retry")
		return false
	case h != r.self:
		s.metrics.refused.WithLabelValues(refusedWrongRegion).Inc()
		body, _ := json.Marshal(wrongRegion{Code: refusedWrongRegion,
			Message: "this user is served in region " + h + "; connect there", Region: h, URL: r.urls[h]})
		ctx.SetStatusCode(fasthttp.StatusMisdirectedRequest)
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
		return false
	}
	return true
}

// Handshake refusals of a regions deployment (PROTOCOL.md, "Regions").
const (
	refusedWrongRegion = "wrong_region"
	refusedNoHome      = "no_home_region"
)

// wrongRegion is the body of a 421 wrong_region refusal.
type wrongRegion struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Region  string `json:"region"`
	URL     string `json:"url"`
}

// address points a send (stored on inbox.<to> by default) at OUTBOX when
// its recipient is homed in another region, stamping this region as its
// origin. It returns an error code for a send that cannot go: no home
// region (bad_field), the directory unreadable (unavailable), media to
// another region (bad_media: objects are kept per region).
func (r *regions) address(m *nats.Msg, to string, media bool) (protocol.ErrorCode, string) {
	if r == nil {
		return "", ""
	}
	h, err := r.home(to)
	switch {
	case errors.Is(err, errNoHome):
		return protocol.ErrBadField, "to: this user has no home region"
	case err != nil:
		return protocol.ErrUnavailable, "the directory of home regions did not answer; resend"
	case h == r.self:
		return "", ""
	case media:
		return protocol.ErrBadMedia, "media does not cross regions yet: the recipient is homed in region " + h
	}
	m.Subject = contract.OutboxSubject(h, to)
	m.Header.Set(contract.HdrOriginRegion, r.self)
	return "", ""
}

// origin is where a message in this region's INBOX came from: the region
// it was stored in first and its sequence in that region's OUTBOX; "" and
// 0 for a message stored here.
func (r *regions) origin(h nats.Header) (region string, seq uint64) {
	if r == nil {
		return "", 0
	}
	region = h.Get(contract.HdrOriginRegion)
	if _, known := r.urls[region]; !known || region == r.self {
		return "", 0
	}
	if seq = contract.OriginSeq(h.Get(contract.HdrStreamSource)); seq == 0 {
		return "", 0
	}
	return region, seq
}

// addOrigin widens req's range of sender's OUTBOX sequences in region by
// seq: a delivered stretch's messages from a sender homed elsewhere.
func addOrigin(req *contract.DeliveredRequest, sender, region string, seq uint64) {
	for i := range req.Origins {
		if o := &req.Origins[i]; o.Sender == sender {
			o.From, o.To = min(o.From, seq), max(o.To, seq)
			return
		}
	}
	req.Origins = append(req.Origins, contract.Origin{Sender: sender, Region: region, From: seq, To: seq})
}
