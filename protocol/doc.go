// Package protocol is the single definition of Switchboard's wire protocol:
// frame types, their fields, error codes and WebSocket close codes.
//
// The gateway and the client SDK both import it, and PROTOCOL.md beside it is
// checked against it by a test, so no frame name or code is typed twice.
// The package owns encoding and validation of frames; it must not know about
// sockets, NATS or sessions.
package protocol
