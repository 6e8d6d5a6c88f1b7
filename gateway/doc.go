// Package gateway is Switchboard's WebSocket edge: it authenticates devices,
// speaks the wire protocol (package protocol, documented in protocol/PROTOCOL.md) and
// runs one session per connected device.
//
// A session publishes the device's sends to JetStream (inbox.<recipient>)
// and answers "sent" only on the PubAck. It delivers the copies INBOX
// republishes on sb.live.<user> once a message is stored, and reads the
// stream itself (a batched direct get) only to fill a gap: on connect, from
// the device's cursor, and whenever a live copy may have been missed or was
// let go (the device had too many unacked). A device holds no consumer: its
// position is a cursor in the CURSORS bucket, moved past a message only
// once the device acked it and, for a chat message, its delivered event is
// stored. Everything a session knows is also in JetStream, so a gateway
// holds no state that outlives a connection and any number of gateways can
// share one NATS.
//
// Files: server.go (HTTP, upgrade, origin, shutdown), conn.go (the read
// loop and an on-demand writer behind the transport seam), session.go (one
// device: sends, acks), pubqueue.go (its writes awaiting their PubAcks:
// sends in order, one at a time, published again when refused or lost),
// feed.go (delivery: live copies, stream reads, settling, the cursor),
// live.go (what makes sessions read the stream or publish again: a
// restored connection, an INBOX leader change, an overflow, the sweep),
// router.go (NATS subscriptions shared by a gateway's sessions),
// replies.go (one reply subscription for stream reads and PubAcks),
// backlog.go (one reader for many sessions' backlogs at once, in storms),
// devices.go (the DEVICES registry and cursors), httplog.go (fasthttp's
// own log lines, without the request's credentials), presence.go,
// media.go, auth.go, config.go, metrics.go (Prometheus metrics, served on
// a listener of their own: ServeMetrics).
//
// Concurrency: Server methods are safe from many goroutines. Each
// connection has one read goroutine, which runs the session's frame
// handling. Writing (wsConn.writer) and delivery (session.feedRunner) each
// run in a goroutine started when there is work and ended when there is
// none, and PubAcks arrive on the replies goroutine (pubQueue.onReply), so
// an idle connection holds only its read goroutine; pings are a timer. Only the writer writes data
// frames. One router goroutine per gateway hands live copies and events to
// the sessions. One backlog goroutine per gateway delivers to sessions
// whose feedRunner is waiting on it (backlog.read), so a session's
// messages are still handed on by one goroutine at a time. Handlers must
// not block: a media send's grant and a read's lookup are steps of the
// PubAck queue, worker-function requests run in goroutines of their own.
// Two wait on purpose: a full PubAck queue stops reading from that socket
// (backpressure on a sender that outruns the store), and a settings frame
// waits for its KV write, so the frames after it are judged by it.
//
// Locks: router.mu (the routes) is held while a handler runs, so handlers
// take only session.mu or session.evMu. pubQueue.mu (the PubAck queue) is
// held while it publishes, answers (wsConn.mu) and settles (session.mu),
// so the queue's order is the order of its writes and answers. Server.mu
// (the session set), session.mu (the delivery state and the feed) and
// session.evMu (welcome before events) are never held together, nor while
// calling into NATS or writing to a socket (evMu covers only an enqueue,
// which takes wsConn.mu last).
package gateway
