package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
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
//     deployment does not know) is refused with bad_field, and so is any
//     send to a user homed elsewhere from a pinned region
//     (RegionsConfig.Pinned);
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
	// Pinned keeps this region's users' messages in it: a send from here
	// to a user homed in another region, which would be stored there for
	// good, is refused (bad_field). Messages to this region's users from
	// elsewhere are stored here, passing through the sender's OUTBOX
	// only in transit. Every gateway of the region must say the same.
	Pinned bool
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
	self   string
	pinned bool // RegionsConfig.Pinned
	urls   map[string]string
	kv     jetstream.KeyValue // HOMES
	js     jetstream.JetStream
	wait   func() (context.Context, context.CancelFunc)

	mu     sync.Mutex         // guards homes, dir and outbox
	homes  map[string]string  // user -> home region, as read from HOMES
	dir    jetstream.KeyValue // GROUP_DIR, once opened
	outbox jetstream.Stream   // OUTBOX, once opened
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
		self:   cfg.Regions.Region,
		pinned: cfg.Regions.Pinned,
		urls:   cfg.Regions.URLs,
		kv:     kv,
		js:     js,
		homes:  map[string]string{},
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
	case r.pinned:
		return protocol.ErrBadField, "to: region " + r.self + " keeps its users' messages in it, and this user is homed in region " + h
	case media:
		return protocol.ErrBadMedia, "media does not cross regions yet: the recipient is homed in region " + h
	}
	m.Subject = contract.OutboxSubject(h, to)
	m.Header.Set(contract.HdrOriginRegion, r.self)
	return "", ""
}

// Groups across regions (contract/regions.go): a group lives in its home
// region, the one it was created in (GroupRecord.Region). A member homed
// elsewhere sends to it through this region's OUTBOX, and their
// positions in it go the same way to the home's TICKS; its record is read
// from GROUP_DIR, which sources every other region's GROUP_INFO.

// group reads group gid's record from GROUP_DIR (opened on first use).
func (r *regions) group(ctx context.Context, gid string) (contract.GroupRecord, error) {
	r.mu.Lock()
	dir := r.dir
	r.mu.Unlock()
	if dir == nil {
		var err error
		if dir, err = r.js.KeyValue(ctx, contract.GroupDirKV); err != nil {
			return contract.GroupRecord{}, fmt.Errorf("%w: bucket %s: %w", contract.ErrUnavailable, contract.GroupDirKV, err)
		}
		r.mu.Lock()
		r.dir = dir
		r.mu.Unlock()
	}
	g, _, err := contract.LoadGroup(ctx, dir, gid)
	return g, err
}

// inOutbox reports whether this region's OUTBOX still holds, at seq,
// user's send on subject (to a group or a user homed elsewhere): it has
// not reached that region yet (OUTBOX is a work queue: the other region's
// GROUPS or INBOX takes it out once it has stored it).
func (r *regions) inOutbox(ctx context.Context, subject, user string, seq uint64) (bool, error) {
	r.mu.Lock()
	outbox := r.outbox
	r.mu.Unlock()
	if outbox == nil {
		var err error
		if outbox, err = r.js.Stream(ctx, contract.Outbox); err != nil {
			return false, fmt.Errorf("%w: stream %s: %w", contract.ErrUnavailable, contract.Outbox, err)
		}
		r.mu.Lock()
		r.outbox = outbox
		r.mu.Unlock()
	}
	m, err := outbox.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return m.Subject == subject && m.Header.Get(contract.HdrFrom) == user, nil
}

// elsewhere is g's home region when that is not this one, else "".
func (r *regions) elsewhere(g *contract.GroupRecord) string {
	if r == nil || g.Region == "" || g.Region == r.self {
		return ""
	}
	return g.Region
}

// addressGroup points a send to group g at OUTBOX when g is homed in
// another region, stamping this region as its origin. It drops the
// message's TTL there: OUTBOX keeps everything until taken (a TTL would
// lose messages in a long outage), so such a message stays in its
// group's log until deleted by hand. A pinned region refuses it: the
// message would be stored for good in the group's home.
func (r *regions) addressGroup(m *nats.Msg, g *contract.GroupRecord) (protocol.ErrorCode, string) {
	h := r.elsewhere(g)
	switch {
	case h == "":
		return "", ""
	case r.pinned:
		return protocol.ErrBadField, "group: region " + r.self + " keeps its users' messages in it, and this group is homed in region " + h
	}
	m.Subject = contract.OutboxGroupSubject(h, g.ID)
	m.Header.Set(contract.HdrOriginRegion, r.self)
	m.Header.Del(contract.HdrTTL)
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

// Links.
//
// Each other region's messages reach this one through INBOX's source of
// that region's OUTBOX, which reads through a durable consumer that sends
// an idle heartbeat every second (streams/consumers/to-region.json). So a
// working link is heard from at least once a second, traffic or none: the
// source's last activity is a canary that needs no test messages. A link
// not heard from for LinkStale, or whose source reports an error, is down,
// whatever caused it (a cut network, a stopped hub or region, a source
// that was never set up right and says nothing, which is how most
// misconfigurations of sourcing fail).

// LinkStale is how long a region's source may go unheard before its link
// counts as down: ten of its heartbeats.
const LinkStale = 10 * time.Second

// Link is what this region's INBOX knows of its source of another
// region's OUTBOX.
type Link struct {
	// From is the other region.
	From string
	// Lag is how many messages the source last knew to be waiting in that
	// region's OUTBOX for this one. It is as old as Active: while a link
	// is down it is the lag when it went down.
	Lag uint64
	// Active is the time since the source last heard from that region (a
	// message or a heartbeat); negative if it never has.
	Active time.Duration
	// Error is the source's error, if the server reports one.
	Error string
}

// Up reports whether the link was heard from within LinkStale and
// reports no error.
func (l Link) Up() bool { return l.Error == "" && l.Active >= 0 && l.Active < LinkStale }

// Links reads, from INBOX's state, the link from every other region of
// the deployment. A single-region gateway has none.
func (s *Server) Links(ctx context.Context) ([]Link, error) {
	if s.regions == nil {
		return nil, nil
	}
	info, err := s.inbox.Info(ctx)
	if err != nil {
		return nil, err
	}
	return linksOf(info), nil
}

// sourcingStreams are a region's streams that source other regions
// besides INBOX, each through a consumer of its own over the same leaf
// links: group sends, group positions, other regions' group records.
var sourcingStreams = []string{contract.GroupsStream, contract.TicksStream, "KV_" + contract.GroupDirKV}

// SourceLinks reads the link from every other region as each of
// sourcingStreams sees it, by stream: a source can be broken on its own
// (its consumer deleted, say) while INBOX's works.
func (s *Server) SourceLinks(ctx context.Context) (map[string][]Link, error) {
	if s.regions == nil {
		return nil, nil
	}
	out := map[string][]Link{}
	for _, name := range sourcingStreams {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		out[name] = linksOf(st.CachedInfo())
	}
	return out, nil
}

// linksOf is the link from every other region a stream's sources report.
func linksOf(info *jetstream.StreamInfo) []Link {
	var links []Link
	for _, si := range info.Sources {
		if si.External == nil {
			continue
		}
		l := Link{From: domainOf(si.External.APIPrefix), Lag: si.Lag, Active: si.Active}
		if si.Error != nil {
			l.Error = si.Error.Error()
		}
		links = append(links, l)
	}
	// A configured source the server does not report at all is down too.
	for _, src := range info.Config.Sources {
		if src.External == nil {
			continue
		}
		from := domainOf(src.External.APIPrefix)
		if !slices.ContainsFunc(links, func(l Link) bool { return l.From == from }) {
			links = append(links, Link{From: from, Active: -1, Error: "not reported by the server"})
		}
	}
	return links
}

// domainOf is the JetStream domain an API prefix $JS.<domain>.API names.
func domainOf(api string) string {
	return strings.TrimSuffix(strings.TrimPrefix(api, "$JS."), ".API")
}

// outboxWaiting is how many messages and ticks this region's OUTBOX holds
// for other regions: a work queue, it keeps each until the other region
// has taken it.
func (s *Server) outboxWaiting(ctx context.Context) (uint64, error) {
	st, err := s.js.Stream(ctx, contract.Outbox)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.Msgs, nil
}

// linkCollector exports the links on each scrape, read then (a stream
// info or two: scrapes are seconds apart).
type linkCollector struct {
	s                           *Server
	up, active, lag, outbox, ok *prometheus.Desc
	srcUp, srcLag               *prometheus.Desc // sourcingStreams'
}

func newLinkCollector(s *Server) *linkCollector {
	ns := "switchboard_region"
	return &linkCollector{s: s,
		up: prometheus.NewDesc(ns+"_link_up", "1 if this region's INBOX heard from the region's OUTBOX (a message or a heartbeat) "+
			"within "+LinkStale.String()+" and its source reports no error, else 0: alert on 0.", []string{"from"}, nil),
		active: prometheus.NewDesc(ns+"_link_last_active_seconds", "Seconds since this region's INBOX last heard from "+
			"the region's OUTBOX; -1 if it never has.", []string{"from"}, nil),
		lag: prometheus.NewDesc(ns+"_link_lag_messages", "Messages the source last knew to be waiting in the region's "+
			"OUTBOX for this region (as old as last_active).", []string{"from"}, nil),
		outbox: prometheus.NewDesc(ns+"_outbox_messages", "Messages and ticks in this region's OUTBOX, stored here "+
			"and not yet taken by the regions they are for.", nil, nil),
		ok: prometheus.NewDesc(ns+"_links_read", "1 if the links could be read from INBOX, OUTBOX and the other sourcing streams at this scrape, else 0.", nil, nil),
		srcUp: prometheus.NewDesc(ns+"_source_up", "1 if this region's stream (GROUPS, TICKS, KV_GROUP_DIR) heard from the region "+
			"within "+LinkStale.String()+" and its source reports no error, else 0: alert on 0.", []string{"from", "stream"}, nil),
		srcLag: prometheus.NewDesc(ns+"_source_lag_messages", "Messages the stream's source last knew to be waiting in the region "+
			"for this one.", []string{"from", "stream"}, nil),
	}
}

func (c *linkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.active
	ch <- c.lag
	ch <- c.outbox
	ch <- c.ok
	ch <- c.srcUp
	ch <- c.srcLag
}

func (c *linkCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	links, err := c.s.Links(ctx)
	waiting, oerr := c.s.outboxWaiting(ctx)
	sources, serr := c.s.SourceLinks(ctx)
	ok := 1.0
	if err != nil || oerr != nil || serr != nil {
		ok = 0
	}
	for stream, ls := range sources {
		for _, l := range ls {
			up := 0.0
			if l.Up() {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.srcUp, prometheus.GaugeValue, up, l.From, stream)
			ch <- prometheus.MustNewConstMetric(c.srcLag, prometheus.GaugeValue, float64(l.Lag), l.From, stream)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.ok, prometheus.GaugeValue, ok)
	if oerr == nil {
		ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, float64(waiting))
	}
	for _, l := range links {
		up, active := 0.0, -1.0
		if l.Up() {
			up = 1
		}
		if l.Active >= 0 {
			active = l.Active.Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, l.From)
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, active, l.From)
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(l.Lag), l.From)
	}
}
