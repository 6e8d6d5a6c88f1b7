// Package gateway is Switchboard's WebSocket edge, with an HTTP fallback
// for networks that block WebSockets: it authenticates devices, speaks the
// wire protocol (package protocol, documented in protocol/PROTOCOL.md) and
// runs one session per connected device.
//
// A session publishes the device's sends to JetStream (inbox.<recipient>)
// and answers "sent" only on the PubAck. It delivers the copies INBOX
// republishes on sb.live.<user> once a message is stored, and reads the
// stream itself (a batched direct get) only to fill a gap: on connect, from
// the device's cursor, and whenever a live copy may have been missed or was
// let go (the device had too many unacked). A device holds no consumer: its
// position is a cursor in the CURSORS bucket, moved past a message only
// once the device acked it and everything before it and, for chat
// messages, their senders' delivered ticks are stored (one request to the
// receipts function per acked stretch, not per message). Everything a session knows is also in JetStream, so a gateway
// holds no state that outlives a connection and any number of gateways can
// share one NATS.
//
// Files. The gateway: server.go (HTTP, upgrade, origin, shutdown),
// router.go (NATS subscriptions shared by a gateway's sessions: live
// copies, events, kicks, presence changes), replies.go (one reply
// subscription for everything the gateway asks without waiting: stream
// reads, PubAcks, lease writes), backlog.go (one reader for many
// sessions' backlogs at once, in storms), live.go (what makes sessions
// read the stream or publish again: a restored connection, an INBOX leader
// change, an overflow, the sweep), devices.go (the DEVICES registry and
// cursors), auth.go, config.go, metrics.go (Prometheus metrics, served on
// a listener of their own: ServeMetrics), routes.go (mounted HTTP APIs),
// listener.go (accepting through a full descriptor table; each
// connection to one of two fasthttp servers by its first request line:
// WebSocket upgrades to one that keeps no read buffer once it hands the
// socket over, the rest to one that streams large bodies), httplog.go
// (fasthttp's own log lines, without the request's credentials),
// grouplog.go (one reader per group read from its log, for all the
// gateway's devices in it, docs/GROUP-LOG.md).
//
// A connection: transport.go (the seam between a session and its socket),
// transport_ws.go (the WebSocket behind it: the read loop and an
// on-demand writer) and transport_sse.go (the HTTP fallback behind the
// same seam: Server-Sent Events on a GET for the server's frames, POSTs
// for the client's, which take the read loop's turn). A session: session.go (the device: start, kicks,
// frames, stop) and its parts, each a type owning its state and its one
// lock: feed.go (delivery: live copies, stream reads, settling; own.go:
// the user's own messages and read_sync markers from their other devices),
// cursor.go (the device's cursor), pubqueue.go (writes awaiting their
// PubAcks: sends in order, one at a time, published again when refused or
// lost), ticks.go (the delivered ticks of acked stretches), lease.go (the presence lease and the loop that
// refreshes them all), follows.go (presence_sub and presence frames),
// timer.go (the session's one timer); calls.go (requests to the worker
// functions: reads, status; settings), media.go (a media send's grant)
// and groups.go (group frames to the groups function, group sends checked
// against GROUP_INFO and stored once in GROUPS, members' copies as group
// msg frames, typing in a group, and a brief cache of groups' records),
// groupticks.go (members' positions in their groups from acks and reads,
// and status about a group message), groupfeed.go (the groups the device
// reads from their logs: its place in each, frames with gseq, acks and
// reads by gseq). ratekeep.go keeps each device's rate limits across its
// sessions.
//
// Concurrency. Server methods are safe from many goroutines. Each
// connection has one read goroutine, which runs the session's frame
// handling (session.handle): the fast paths' frames on itself, any other
// on a goroutine of its own while it waits, and a WebSocket's is started
// after the session's start, so an idle one parks on a 4 KiB stack
// (session.handle and Server.runConn say why); an event stream's read goroutine only
// watches its socket, and its POSTs run session.handle in their own
// request goroutines, one at a time (sseConn.in), never after the read
// loop has ended. Handlers do not block: a media grant is a step of
// the PubAck queue, worker-function requests run in goroutines of their
// own (at most 8 per connection), and delivered ticks in the ticker's. The two
// exceptions wait on purpose: a full PubAck queue stops reading from that
// socket (backpressure on a sender that outruns the store), and a settings
// frame waits for its KV write, so the frames after it are judged by it.
// Writing (wsConn.writer, sseConn.writer), delivery (feed.run) and ticks
// (ticker.run) each run in a goroutine
// started when there is work and ended when there is none, so an idle
// connection holds only its read goroutine; its deadlines are one timer
// (sessionTimer) plus the transport's ping timer. One router goroutine
// hands live copies, events, kicks and presence changes to the sessions;
// one replies goroutine hands them their PubAcks; one backlog goroutine
// delivers to sessions whose feed waits on it (backlog.read), so a
// session's messages are still handed on by one goroutine at a time.
// Callbacks on the router's and the replies' goroutines must not block.
//
// Locks. Each lock guards its own type's state and only that type's
// methods take it; "Lock should be held" marks the methods that need it.
// Where one is taken while another is held, it is in this order (A → B:
// B may be taken while A is held, never the reverse):
//
//	follows.subMu → router.mu, follows.mu, outQueue.mu
//	router.mu    → feed.mu, follows.mu, session.evMu
//	pubQueue.mu  → sessionTimer.mu
//	ticker.mu    → feed.mu
//	cursorSaver.mu → sessionTimer.mu
//	follows.mu, session.evMu, pubQueue.mu → outQueue.mu (a transport's queue)
//	sseConn.in   → every lock session.handle takes, the router's too (a
//	               POST's frames run through handle under it; nothing
//	               takes sseConn.in while holding another lock)
//
// Server.mu, sseSessions.mu, replies.mu, backlog.mu, lease.mu, feed.mu,
// follows.opMu, regions.mu, sessionTimer.mu, groupRecords.mu, fence.mu,
// groupBucket.mu, limitKeeper.mu and outQueue.mu are leaves: nothing of
// this package is locked under them.
// No lock of a session's is held while calling the router (router.add,
// router.remove), the replies' owner callbacks run with replies.mu
// released, and the session timer runs its ops with its lock released.
// NATS calls (publishes, subscribes) are made under pubQueue.mu,
// cursorSaver.mu, lease.mu, router.mu and groupRecords.mu: nats.go calls back into this
// package only from goroutines of its own, holding none of its locks.
package gateway
