package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Paths served over HTTP.
const (
	PathWS      = "/v1/ws"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// Server is one gateway: it accepts WebSocket connections (and event
// streams, the HTTP fallback: transport_sse.go) and runs a session per
// device. It keeps no state that outlives a connection; any
// number of gateways can share one NATS.
type Server struct {
	cfg        Config
	keys       *Keys
	log        *slog.Logger
	nc         *nats.Conn
	js         jetstream.JetStream
	inbox      jetstream.Stream
	devices    *devices
	presenceKV jetstream.KeyValue
	routes     []Route // mounted APIs: see Mount
	settingsKV jetstream.KeyValue
	// groupInfo is GROUP_INFO, for members' checks (see groupBucket);
	// groups keeps its records (grouprecords.go); groupTTL is the
	// Nats-TTL of a stored group message (empty: none).
	groupInfo groupBucket
	groups    *groupRecords
	// literalLogs says a group's log is read by its two subjects (GROUPS
	// has one replica: grouplogread.go).
	literalLogs bool
	// afterMsgsRead, for tests, runs between a literal log read's read of
	// messages and its read of changes.
	afterMsgsRead func()
	groupTTL      string
	maxInflight   int
	groupBudget   int // what a device may hold unacked of all its log groups (Config.groupBudget)
	// id names this gateway in presence leases.
	id        string
	origins   map[string]bool
	anyOrigin bool
	upgrader  websocket.FastHTTPUpgrader
	http      *fasthttp.Server // every request but WebSocket upgrades
	wsHTTP    *fasthttp.Server // WebSocket upgrades (listener.go)

	metrics     *metrics
	metricsHTTP *http.Server // serves metrics on listeners of their own (ServeMetrics)

	mu       sync.Mutex // guards sessions and sorters
	sessions map[*session]struct{}
	sorters  []*sorter // what Serve accepts with, closed by Shutdown
	closing  atomic.Bool
	sse      sseSessions // event streams by session id, for their POSTs

	starts chan struct{} // one token per session start in progress

	router    *router      // sessions' subscriptions: live copies, events, kicks, presence
	limits    *limitKeeper // devices' rate limits, kept across their sessions (ratekeep.go)
	positions *positions   // group delivered positions, gathered (positions.go)
	replies   *replies     // answers to reads of the stream, PubAcks, lease writes
	// calls asks the worker functions, whose answers come on a prefix of
	// their own (contract.CallPrefix): a function may answer there, and
	// may not publish where JetStream answers this gateway.
	calls     *contract.Caller
	backlog   *backlog   // reads shared by many sessions at once (storms)
	groupLogs *groupLogs // readers of group logs, one per group followed here (grouplog.go)
	own       *ownCheck  // whether senders have other devices, for own copies
	leaderSub *nats.Subscription
	// The seams to JetStream that sessions' parts use, the Server's own
	// in production and fakes in tests.
	stream  streamReader // reads of INBOX
	cursors cursorStore  // writes of CURSORS

	regions *regions // homes and cross-region sends (regions.go); nil: one region

	leaseStop     chan struct{} // ends leaseLoop and sweepLoop
	leaseDone     chan struct{}
	sweepDone     chan struct{}
	leaseStopOnce sync.Once
}

// New builds a gateway on an established NATS connection. The streams must
// already exist (streams.Apply).
func New(ctx context.Context, cfg Config, keys *Keys, nc *nats.Conn, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, fmt.Errorf("%w: no token keys", ErrConfig)
	}
	// Sessions publish their writes themselves and take the PubAcks
	// through replies (pubqueue.go); this context makes the requests that
	// are waited for (KV reads, the final cursor, stream info).
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	inbox, err := js.Stream(ctx, contract.Inbox)
	if err != nil {
		return nil, fmt.Errorf("gateway: stream %s: %w", contract.Inbox, err)
	}
	kv, err := js.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		return nil, fmt.Errorf("gateway: bucket %s: %w", contract.DevicesKV, err)
	}
	presenceKV, err := js.KeyValue(ctx, contract.PresenceKV)
	if err != nil {
		return nil, fmt.Errorf("gateway: bucket %s: %w", contract.PresenceKV, err)
	}
	settingsKV, err := js.KeyValue(ctx, contract.SettingsKV)
	if err != nil {
		return nil, fmt.Errorf("gateway: bucket %s: %w", contract.SettingsKV, err)
	}
	cursors, err := js.KeyValue(ctx, contract.CursorsKV)
	if err != nil {
		return nil, fmt.Errorf("gateway: bucket %s: %w", contract.CursorsKV, err)
	}
	groupInfo, err := js.KeyValue(ctx, contract.GroupInfoKV)
	if err != nil {
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("gateway: bucket %s: %w", contract.GroupInfoKV, err)
		}
		// Made later (an upgrade whose setup has not run yet): looked
		// for again when a group needs it.
		log.Warn("no GROUP_INFO bucket: group sends and typing are unavailable until it is made")
		groupInfo = nil
	}
	// GROUPS' replicas as of the start: a stream an operator replicates
	// later is read the literal way until the gateway restarts, by then
	// from replicas made current before they answer.
	literalLogs := false
	if gs, err := js.Stream(ctx, contract.GroupsStream); err == nil {
		literalLogs = gs.CachedInfo().Config.Replicas <= 1
	}
	s := &Server{
		literalLogs: literalLogs,
		cfg:         cfg,
		keys:        keys,
		log:         log.WithGroup("gateway"),
		nc:          nc,
		js:          js,
		inbox:       inbox,
		devices:     &devices{nc: nc, js: js, inbox: inbox, kv: kv, cursors: cursors, created: inbox.CachedInfo().Created},
		presenceKV:  presenceKV,
		settingsKV:  settingsKV,
		groupInfo:   groupBucket{js: js, kv: groupInfo},
		groupTTL:    groupTTL(inbox.CachedInfo().Config.MaxAge),
		maxInflight: cfg.maxInflight(),
		groupBudget: cfg.groupBudget(),
		id:          nats.NewInbox()[len(nats.InboxPrefix):],
		origins:     map[string]bool{},
		sessions:    map[*session]struct{}{},
		leaseStop:   make(chan struct{}),
		starts:      make(chan struct{}, cfg.MaxConcurrentStarts),
		leaseDone:   make(chan struct{}),
		sweepDone:   make(chan struct{}),
		router:      newRouter(nc),
	}
	s.limits = newLimitKeeper(&s.cfg)
	if s.calls, err = contract.NewCaller(nc, contract.CallPrefix("gateway")); err != nil {
		s.router.close()
		return nil, err
	}
	s.positions = newPositions(func(ctx context.Context, req contract.GroupPositionsRequest) (contract.GroupPositionsReply, error) {
		var reply contract.GroupPositionsReply
		err := contract.Call(ctx, s.calls, contract.GroupPositionsSubject, req, &reply)
		return reply, err
	}, cfg.FunctionTimeout)
	s.stream, s.cursors = s, s.devices
	if s.regions, err = newRegions(ctx, cfg, js); err != nil {
		s.router.close()
		s.calls.Close()
		return nil, err
	}
	s.metrics = newMetrics(func() float64 { return float64(s.Sessions()) })
	if s.regions != nil {
		s.metrics.reg.MustRegister(newLinkCollector(s)) // regions.go
	}
	s.metricsHTTP = newMetricsHTTP(s.metrics, &s.cfg)
	if s.replies, err = newReplies(nc); err != nil {
		s.router.close()
		s.calls.Close()
		return nil, err
	}
	s.backlog = newBacklog(s)
	var remote func(context.Context, string) (contract.GroupRecord, error)
	if s.regions != nil {
		remote = s.regions.group
	}
	s.groups = newGroupRecords(nc, s.groupInfo.load, remote, cfg.FunctionTimeout)
	s.groupLogs = newGroupLogs(nc, s.readGroupLog, log, s.leaseStop, bellQueue)
	s.groupLogs.hosted = groupsHosted(js, nc)
	s.groupLogs.checkBells()
	s.own = &ownCheck{read: s.readDevices, changed: s.devicesChanged, created: s.devices.created}
	if err := s.watchLive(); err != nil {
		s.closeRouting()
		return nil, err
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			s.anyOrigin = true
			continue
		}
		n, _ := normalizeOrigin(o)
		s.origins[n] = true
	}
	s.upgrader = websocket.FastHTTPUpgrader{
		HandshakeTimeout:  cfg.HandshakeTimeout,
		Subprotocols:      []string{protocol.Subprotocol},
		CheckOrigin:       func(*fasthttp.RequestCtx) bool { return true }, // checked before upgrading
		EnableCompression: false,                                           // no compression bombs
		// The upgrade's server hands the socket over without a buffer
		// of its own (listener.go: wsServer); frames are read through
		// this small one, and a large frame straight into its buffer.
		ReadBufferSize:  256,
		WriteBufferSize: 4096,
		// Idle connections hold no write buffer: one is taken from the
		// pool per message and given back after it.
		WriteBufferPool: &sync.Pool{},
	}
	s.http = s.newHTTPServer(true)
	s.wsHTTP = s.newHTTPServer(false)
	go s.leaseLoop()
	go s.sweepLoop()
	return s, nil
}

// stopLeases ends the lease loop; the leases of sessions still open then
// expire on their own.
func (s *Server) stopLeases() {
	s.leaseStopOnce.Do(func() {
		close(s.leaseStop)
		if s.leaderSub != nil {
			_ = s.leaderSub.Unsubscribe()
		}
		s.groups.close()
	})
	<-s.leaseDone
	<-s.sweepDone
}

// newHTTPServer is the fasthttp server of the WebSocket upgrades
// (streams false) or of every other request (streams true).
func (s *Server) newHTTPServer(streams bool) *fasthttp.Server {
	cfg := &s.cfg
	handler := s.route
	if !streams {
		handler = s.routeUpgrade
	}
	return &fasthttp.Server{
		Handler:            handler,
		HeaderReceived:     s.requestConfig,
		Name:               "switchboard",
		ReadTimeout:        cfg.HandshakeTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		IdleTimeout:        cfg.PongTimeout,
		MaxRequestBodySize: 64 << 10,
		// Media uploads to the embedded store stream into it rather than
		// being held in memory; see requestConfig. The upgrades' server
		// streams nothing, so it can let a connection's read buffer go
		// once its request is read: a hijacked connection then keeps
		// none (4 KiB of every idle device's memory otherwise).
		StreamRequestBody: streams,
		ReduceMemoryUsage: !streams,
		// No route takes a multipart form. Parsed ahead of the handler,
		// one would be read to its declared length, past
		// MaxRequestBodySize, into temporary files, before any check.
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         false,
		CloseOnShutdown:               true,
		// Upgraded connections are closed by the gateway itself; without
		// this, closing one would be a no-op until its handler returned.
		KeepHijackedConns: true,
		// fasthttp's own lines would quote the raw request, credentials
		// and all; httpLogger keeps only what cannot carry one, and with
		// SecureErrorLogMessage fasthttp leaves the request out of its
		// errors in the first place.
		Logger:                httpLogger{log: s.log},
		SecureErrorLogMessage: true,
	}
}

// Serve accepts connections on ln until Shutdown: each goes to the
// upgrades' server or the other one by its first request line
// (listener.go).
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("listening", "addr", ln.Addr().String())
	st := newSorter(patientListener{Listener: ln, log: s.log, onFull: s.metrics.fdFull.Inc, sleep: time.Sleep,
		peerTimeout: s.cfg.PongTimeout}, s.cfg.HandshakeTimeout)
	s.mu.Lock()
	s.sorters = append(s.sorters, st)
	s.mu.Unlock()
	served := make(chan error, 2)
	go func() { served <- s.wsHTTP.Serve(st.ws) }()
	go func() { served <- s.http.Serve(st.other) }()
	err := st.run()
	st.close()
	<-served
	<-served
	if s.closing.Load() {
		return nil
	}
	return err
}

// routeUpgrade routes a request on the upgrades' server. An upgrade
// refused is answered and its connection closed: a next request on it
// could take a body, which this server does not stream.
func (s *Server) routeUpgrade(ctx *fasthttp.RequestCtx) {
	s.route(ctx)
	if !ctx.Hijacked() {
		ctx.SetConnectionClose()
	}
}

func (s *Server) route(ctx *fasthttp.RequestCtx) {
	if pc, ok := ctx.Conn().(*prefixedConn); ok {
		pc.requestRead()
	}
	switch string(ctx.Path()) {
	case PathWS:
		s.serveWS(ctx)
	case PathSSE:
		s.serveSSE(ctx)
	case PathHealthz:
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetBodyString("ok\n")
	case PathReadyz:
		if s.closing.Load() || !s.nc.IsConnected() {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString("not ready\n")
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetBodyString("ready\n")
	default:
		if strings.HasPrefix(string(ctx.Path()), PathSSE+"/") {
			s.serveSSEPost(ctx)
			return
		}
		if r := s.mounted(ctx.Path()); r != nil {
			r.Handle(ctx)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusNotFound)
	}
}

// refuse answers a refused handshake and counts it by reason.
func (s *Server) refuse(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	s.metrics.refused.WithLabelValues(code).Inc()
	httpError(ctx, status, code, msg)
}

// httpError answers a refused handshake with a JSON body naming the reason.
func httpError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"code":"` + code + `","message":"` + msg + `"}`)
}

func (s *Server) serveWS(ctx *fasthttp.RequestCtx) {
	if s.closing.Load() {
		s.refuse(ctx, fasthttp.StatusServiceUnavailable, "shutting_down", "gateway is shutting down")
		return
	}
	if !s.checkOrigin(ctx) {
		s.refuse(ctx, fasthttp.StatusForbidden, "bad_origin", "origin not allowed")
		return
	}
	// An allowed page of another origin may read why it was refused: a
	// browser cannot see a refused handshake, so clients ask again over
	// plain HTTP (the SDK does).
	allowCrossOrigin(ctx)
	id, err := s.verifyToken(bearerToken(ctx))
	if err != nil {
		s.refuseToken(ctx, err)
		return
	}
	if !s.regions.admit(s, ctx, id) { // served only in its home region
		return
	}
	if !offersSubprotocol(ctx) {
		s.refuse(ctx, fasthttp.StatusBadRequest, "bad_subprotocol", "offer "+protocol.Subprotocol)
		return
	}
	if !websocket.FastHTTPIsWebSocketUpgrade(ctx) {
		// Plain HTTP got here with a good token: when the client's
		// WebSocket failed, something on the way stopped it, and the
		// HTTP fallback will get through.
		ctx.Response.Header.Set("Upgrade", "websocket")
		httpError(ctx, fasthttp.StatusUpgradeRequired, "upgrade_required", "not a WebSocket upgrade; the token and origin are good: where WebSockets are blocked, use "+PathSSE)
		return
	}
	// A request that fasthttp closes before the handler runs (Connection:
	// close, a failed 101 write) never reaches runConn, so nothing is
	// counted before it.
	//
	// The connection runs on a goroutine of its own and the upgrade's
	// handler returns at once: fasthttp holds the request (its context,
	// the parsed headers and their buffers) until that handler returns,
	// and with KeepHijackedConns it leaves the socket open. Held for the
	// connection's life they were 5 KB of the 39 KB an idle device cost.
	// Nothing of ctx is used past this point: id was read from it above.
	_ = s.upgrader.Upgrade(ctx, func(ws *websocket.Conn) { go s.runConn(ws, id) })
}

// refuseToken answers a request whose token verifyToken refused, with
// 401 and the reason's code.
func (s *Server) refuseToken(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="switchboard"`)
	s.refuse(ctx, fasthttp.StatusUnauthorized, tokenRefusal(err), "missing, invalid or expired token")
}

// tokenRefusal is the code that says why verifyToken refused a token.
func tokenRefusal(err error) string {
	switch {
	case errors.Is(err, ErrNoToken):
		return "no_token"
	case errors.Is(err, ErrTokenExpired):
		return "token_expired"
	}
	return "bad_token"
}

// offersSubprotocol accepts a client that offers switchboard.v1.json, or
// offers nothing (then v1 JSON is assumed). One that offers only other
// protocols is refused, so it cannot misread frames.
func offersSubprotocol(ctx *fasthttp.RequestCtx) bool {
	h := string(ctx.Request.Header.Peek("Sec-WebSocket-Protocol"))
	if strings.TrimSpace(h) == "" {
		return true
	}
	for _, p := range strings.Split(h, ",") {
		if strings.TrimSpace(p) == protocol.Subprotocol {
			return true
		}
	}
	return false
}

// bearerToken reads the token from the Authorization header or, for
// browsers (which cannot set headers on a WebSocket), the access_token
// query parameter.
func bearerToken(ctx *fasthttp.RequestCtx) string {
	if h := string(ctx.Request.Header.Peek("Authorization")); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return string(ctx.QueryArgs().Peek("access_token"))
}

// checkOrigin allows requests without Origin (native apps are not subject
// to cross-site hijacking), same-origin requests, and the allow-list.
func (s *Server) checkOrigin(ctx *fasthttp.RequestCtx) bool {
	o := string(ctx.Request.Header.Peek("Origin"))
	if o == "" || s.anyOrigin {
		return true
	}
	n, err := normalizeOrigin(o)
	if err != nil {
		return false
	}
	if s.origins[n] {
		return true
	}
	// Same origin: the Origin's host:port equals the Host header. The
	// scheme cannot be checked behind a TLS-terminating proxy.
	host := strings.ToLower(string(ctx.Host()))
	if !strings.Contains(host, ":") || strings.HasSuffix(host, "]") {
		if strings.HasPrefix(n, "https://") {
			host += ":443"
		} else {
			host += ":80"
		}
	}
	return n[strings.Index(n, "://")+3:] == host
}

func (s *Server) runConn(ws *websocket.Conn, id Identity) {
	c := newWSConn(ws, &s.cfg)
	sess := newSession(s, id, c)
	if !s.startSession(sess, c) {
		c.linger()
		return
	}
	// The start went deep (registry, cursor, backlog) and grew this
	// goroutine's stack, which the runtime halves at a collection only
	// while a quarter of it is in use: parked in a read under the start's
	// frames, an idle device kept 8 KiB of stack. The frames are read on
	// a goroutine of their own, parked shallow: 4 KiB once idle, whatever
	// the traffic before.
	go s.readWS(sess, c)
}

// readWS reads c's frames into sess until c ends, then lingers for the
// close handshake.
func (s *Server) readWS(sess *session, c *wsConn) {
	s.serveSession(sess, c)
	c.linger()
}

// runSession runs sess on its connection c, whichever transport it is,
// until c ends: it starts the session, hands it c's frames and stops it.
func (s *Server) runSession(sess *session, c conn) {
	if s.startSession(sess, c) {
		s.serveSession(sess, c)
	}
}

// startSession tracks and starts sess; false when it could not, with c
// closed and the session over.
func (s *Server) startSession(sess *session, c conn) bool {
	if !s.track(sess) {
		c.Close(protocol.CloseServiceRestart, "gateway shutting down")
		<-c.finished()
		s.limits.give(sess.id, sess.in.limits, time.Now())
		return false
	}
	// Session starts take turns (MaxConcurrentStarts at once), so a storm
	// cannot pile up unbounded requests on NATS. A start of a known device
	// makes no JetStream API call (reads are direct gets, writes are
	// publishes), so the bound is generous: the more sessions catch up
	// together, the more of them share one backlog read.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StartTimeout)
	var err error
	select {
	case s.starts <- struct{}{}:
		err = sess.start(ctx)
		<-s.starts
	case <-ctx.Done():
		err = fmt.Errorf("gateway: waited %s for a turn to start: %w", s.cfg.StartTimeout, ctx.Err())
	case <-c.Done():
		err = errors.New("gateway: closed while waiting to start")
	}
	cancel()
	if err != nil {
		sess.log.Error("session start failed", "err", err)
		c.Close(protocol.CloseInternal, "session start failed")
		s.endSession(sess, c)
		return false
	}
	sess.log.Debug("connected")
	return true
}

// serveSession hands c's frames to a started sess until c ends, then ends
// the session.
func (s *Server) serveSession(sess *session, c conn) {
	_ = c.readLoop(sess.handle)
	s.endSession(sess, c)
}

// endSession stops sess once c has ended and counts how it closed.
func (s *Server) endSession(sess *session, c conn) {
	sess.stop()
	<-c.finished()
	code, reason := c.closedWith()
	sess.log.Debug("disconnected", "code", code, "reason", reason)
	s.metrics.closes.WithLabelValues(strconv.Itoa(code)).Inc()
	s.untrack(sess)
}

func (s *Server) track(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.sessions[sess] = struct{}{}
	return true
}

func (s *Server) untrack(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// beginClosing refuses new sessions and returns the current ones.
func (s *Server) beginClosing() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	all := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	return all
}

// Sessions returns the number of connected devices.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Shutdown stops accepting connections, lets in-flight PubAcks finish,
// closes every connection with 1012 and waits for them, all bounded by ctx
// (or ShutdownTimeout, whichever is sooner). The caller drains NATS after.
func (s *Server) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	all := s.beginClosing()
	s.stopLeases()
	// Metrics stay readable while the sessions drain.
	defer func() { _ = s.metricsHTTP.Close() }()

	s.closeListeners()
	lnDone := make(chan error, 2)
	go func() { lnDone <- s.http.ShutdownWithContext(ctx) }()
	go func() { lnDone <- s.wsHTTP.ShutdownWithContext(ctx) }()

	var wg sync.WaitGroup
	for _, sess := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess.beginShutdown(ctx)
		}()
	}
	wg.Wait()
	// Wait for every session to finish (they untrack themselves last).
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.Sessions() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("gateway: shutdown: %d sessions left: %w", s.Sessions(), ctx.Err())
		}
	}
	s.closeRouting()
	return errors.Join(<-lnDone, <-lnDone)
}

// closeListeners stops accepting connections and closes those not yet
// handed to a server.
func (s *Server) closeListeners() {
	s.mu.Lock()
	sts := s.sorters
	s.sorters = nil
	s.mu.Unlock()
	for _, st := range sts {
		st.close()
	}
}

// Calls asks the worker functions for this gateway (the media API
// mounted on it, say), with their answers on the call prefix.
func (s *Server) Calls() contract.Requester { return s.calls }

// closeRouting ends the router and the replies' subscription.
func (s *Server) closeRouting() {
	s.backlog.close()
	s.router.close()
	s.replies.close()
	s.calls.Close()
}

// Abort drops every connection at once with no close frame and no
// draining, as a crash would. For tests of the crash path.
func (s *Server) Abort() {
	all := s.beginClosing()
	s.stopLeases()
	for _, sess := range all {
		if c, ok := sess.t.(conn); ok {
			c.drop()
		}
	}
	s.closeListeners()
	go func() { _ = s.http.Shutdown() }()
	go func() { _ = s.wsHTTP.Shutdown() }()
	_ = s.metricsHTTP.Close()
}
