// Package client is the Go SDK for Switchboard's WebSocket protocol, used by
// apps, the tests and the load tool.
//
// A Client keeps one connection to a gateway and reconnects by itself with
// exponential backoff and jitter. Send returns once the message is stored
// ("sent"); sends not yet confirmed are resent under the same id after a
// reconnect, and the server stores them once. Messages and receipts arrive
// on channels with duplicates (redeliveries after a reconnect) removed.
//
// All methods are safe to call from many goroutines. The Messages and
// Receipts channels must be drained: a client that stops reading them
// stops reading its socket, and the gateway eventually closes it as slow.
package client
