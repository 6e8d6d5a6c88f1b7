package gateway

import (
	"errors"
	"net"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-im/switchboard/protocol"
)

// PathMetrics serves Prometheus metrics, on the metrics listener only
// (ServeMetrics), never on the WebSocket one.
const PathMetrics = "/metrics"

// ServeMetrics serves Prometheus metrics at PathMetrics on ln until
// Shutdown; every other path answers 404. The WebSocket listener does not
// serve them: they tell whoever reads them how loaded the gateway is and
// what is failing, so ln should be reachable by operators only (the binary
// listens on loopback by default). It may be called for several listeners.
func (s *Server) ServeMetrics(ln net.Listener) error {
	err := s.metricsHTTP.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// newMetricsHTTP is the metrics listener's server: plain net/http, as
// nothing on it is on the hot path.
func newMetricsHTTP(m *metrics, cfg *Config) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(PathMetrics, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.PongTimeout,
	}
}

// metrics are one gateway's Prometheus metrics, in a registry of its own so
// several gateways can live in one process (tests, embedding).
type metrics struct {
	reg          *prometheus.Registry
	sessions     prometheus.GaugeFunc
	refused      *prometheus.CounterVec        // handshakes refused, by code
	closes       *prometheus.CounterVec        // connections closed, by close code
	framesIn     *prometheus.CounterVec        // client frames accepted, by type
	frameIn      map[string]prometheus.Counter // framesIn resolved per type
	errors       *prometheus.CounterVec        // error frames sent, by code
	delivered    prometheus.Counter            // msg and receipt frames queued to devices
	stored       prometheus.Counter            // sends confirmed "sent"
	ticks        prometheus.Counter            // delivered-tick requests answered
	ticksQueued  prometheus.Counter            // delivered-tick requests left in TICKS
	republished  map[string]prometheus.Counter // writes published again, by reason
	catchUps     *prometheus.CounterVec        // stream reads started off the live path, by reason
	inboxGets    prometheus.Counter            // batched direct gets of inbox messages
	sweeps       prometheus.Counter            // the sweep's batched asks of inboxes' newest messages
	fdFull       prometheus.Counter            // accepts held back: out of file descriptors
	sharedPasses prometheus.Counter            // passes of the shared backlog reader
	skipped      *prometheus.CounterVec        // inbox messages skipped, not delivered, by reason
	ownReads     prometheus.Counter            // reads of DEVICES for own copies (owncheck.go)
	ownCopies    prometheus.Counter            // copies stored in senders' own inboxes
}

// newMetrics makes the metrics; sessions counts the connected devices.
func newMetrics(sessions func() float64) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	ns := "switchboard_gateway"
	m.sessions = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "sessions",
		Help: "Connected device sessions."}, sessions)
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "handshakes_refused_total",
		Help: "WebSocket upgrades refused, by reason code."}, []string{"code"})
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "closes_total",
		Help: "Connections closed, by WebSocket close code."}, []string{"code"})
	m.framesIn = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "frames_in_total",
		Help: "Client frames accepted, by type."}, []string{"type"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "error_frames_total",
		Help: "Error frames sent, by code."}, []string{"code"})
	m.delivered = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "deliveries_total",
		Help: "Messages and receipts handed to devices (repeats after a reconnect included)."})
	m.stored = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "sends_stored_total",
		Help: "Sends stored in JetStream and answered \"sent\"."})
	m.ticks = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "delivered_tick_requests_total",
		Help: "Stretches of acked messages settled with their senders' delivered ticks stored or queued (one request each, however many messages)."})
	m.ticksQueued = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "delivered_ticks_queued_total",
		Help: "Stretches of acked messages whose ticks were left in TICKS because the receipts function did not answer in time."})
	m.catchUps = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "catchups_total",
		Help: "Sessions that read their inbox from the stream after connecting, by reason: a gap in live copies, " +
			"the NATS connection restored, a subscription overflowed, an INBOX leader change, the periodic sweep."},
		[]string{"reason"})
	republished := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "republished_total",
		Help: "Sends a session published again under the same dedup id, by reason: refused " +
			"(the stream answered 503 or no responders), overdue (no PubAck within a second, doubling), leader (INBOX " +
			"elected a leader), reconnect (the NATS connection was restored)."}, []string{"reason"})
	m.inboxGets = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "inbox_reads_total",
		Help: "Batched reads of device inboxes from the stream (connects and catch-ups)."})
	m.sweeps = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "sweep_reads_total",
		Help: "The periodic sweep's batched reads of inboxes' newest messages (up to 128 inboxes each)."})
	m.fdFull = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "accept_waits_total",
		Help: "Times accepting connections waited because the process ran out of file descriptors."})
	m.sharedPasses = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "shared_backlog_passes_total",
		Help: "Passes of the reader that reads many sessions' backlogs at once (reconnect storms)."})
	m.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "inbox_skipped_total",
		Help: "Messages in device inboxes skipped rather than delivered, by reason: malformed (not a chat message or " +
			"receipt the gateway could have stored), invalid_utf8 (its frame would not be UTF-8). They stay in INBOX."},
		[]string{"reason"})
	m.ownReads = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "device_record_reads_total",
		Help: "Batched reads of DEVICES asking whether the senders of 1:1 sends stored meanwhile have another device (only records written since each sender was last found alone are sent)."})
	m.ownCopies = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "own_copies_total",
		Help: "1:1 sends found to need a copy in their senders' own inboxes, for the senders' other devices (or copied because the check could not be made)."})
	m.reg.MustRegister(m.sessions, m.refused, m.closes, m.framesIn, m.errors, m.delivered, m.stored, m.ticks, m.ticksQueued, republished, m.catchUps, m.inboxGets, m.sweeps, m.fdFull, m.sharedPasses, m.skipped,
		m.ownReads, m.ownCopies,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Pre-create the label values operators alert on, so they read 0
	// rather than being absent.
	m.frameIn = map[string]prometheus.Counter{}
	for _, typ := range protocol.ClientTypes {
		m.frameIn[typ] = m.framesIn.WithLabelValues(typ)
	}
	for _, e := range protocol.Errors {
		m.errors.WithLabelValues(string(e.Code))
	}
	m.republished = map[string]prometheus.Counter{}
	for _, r := range republishReasons {
		m.republished[r] = republished.WithLabelValues(r)
	}
	for _, r := range catchUpReasons {
		m.catchUps.WithLabelValues(r)
	}
	for _, r := range skipReasons {
		m.skipped.WithLabelValues(r)
	}
	for _, c := range protocol.Closes {
		m.closes.WithLabelValues(strconv.Itoa(c.Code))
	}
	return m
}
