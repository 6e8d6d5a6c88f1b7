// Package gateway is Switchboard's WebSocket edge: it authenticates devices,
// speaks the wire protocol (gateway/protocol, documented in PROTOCOL.md) and
// runs one session per connected device.
//
// A session publishes the device's sends to JetStream (inbox.<recipient>)
// and answers "sent" only on the PubAck; it delivers the device's queue from
// its durable consumer and acks a message in JetStream only when the device
// acks it. Everything a session knows is also in JetStream, so a gateway
// holds no state that outlives a connection and any number of gateways can
// share one NATS.
//
// Files: server.go (HTTP, upgrade, origin, shutdown), conn.go (read and
// write loops behind the transport seam), session.go (one device), devices.go
// (device consumers and the DEVICES registry), auth.go, config.go,
// metrics.go, headers.go (what stored messages carry).
//
// Concurrency: Server methods are safe from many goroutines. Each connection
// has one read goroutine (which runs the session's frame handling), one
// write goroutine, a delivery goroutine and a PubAck goroutine; only the
// write goroutine writes data frames. Handlers must not block except where
// a comment says so (a full PubAck queue stops reading from that socket:
// backpressure on a sender that outruns the store).
//
// Locks: Server.mu (the session set), session.mu (pending deliveries, the
// delivery iterator) and session.evMu (welcome before events) are never
// held together, nor while calling into NATS or writing to a socket
// (evMu covers only an enqueue).
package gateway
