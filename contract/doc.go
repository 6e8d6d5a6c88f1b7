// Package contract is what travels over NATS between Switchboard's
// gateways and worker functions, written down once: the stream and bucket
// names, every subject, the headers of stored messages and their dedup
// ids, the records more than one component reads (cursors, devices,
// leases, settings, presence updates), the worker functions' request and
// reply types, and the two pieces of machinery every component needs to
// use them (a compare-and-set write to a KV bucket, a call to a function).
//
// Gateways and functions meet over NATS and this package only: a test
// reads `go list -deps` and fails if the gateway imports a function, or a
// function the gateway. It imports nothing of the project, and knows
// nothing of the wire protocol spoken to devices (package protocol) or of
// how any component works inside.
package contract
