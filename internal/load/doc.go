// Package load drives a running Switchboard the way real devices do: each
// simulated device is a client.Client (the project's own SDK) on its own
// WebSocket, so every figure includes the SDK, the gateway, JetStream and
// the worker functions, exactly as an app would meet them.
//
// A run measures one scenario (idle, pairs, storm, offline) and, in the
// same run and against the same NATS, a raw JetStream baseline: plain async
// publishes and a durable consumer with explicit acks, with the same
// message size. Every figure is reported next to its raw counterpart as a
// ratio, because the machines this runs on are shared and noisy and only a
// ratio taken in one run means anything (see QUALITY.md).
//
// Messages are counted the way Jepsen's queue checker counts them: every
// message acked "sent" must reach its recipient, and what did not is lost;
// what the app saw twice, or out of stored order from one sender, is
// counted too. The SDK drops redeliveries before the app sees them; those
// are counted separately from its Stats.
//
// The package owns the load and its measurement only. It never starts a
// server by itself except through Spawn, never writes to Switchboard's
// streams other than through the SDK, and creates and deletes its own
// temporary stream for the baseline.
//
// Files: config.go (what to run and against what), run.go (a run's
// skeleton), idle.go, pairs.go, storm.go, offline.go, groups.go (the
// scenarios), fleet.go (devices and their connections), ledger.go (the
// checker),
// body.go (the send time inside each message), baseline.go, hist.go,
// procstat.go, metrics.go (server-side counters), report.go (JSON and the
// table), progress.go, spawn.go.
//
// Concurrency: Run is not meant to be called twice at once in one process
// (the progress line is shared); everything inside it is safe for the
// goroutines it starts.
package load
