// Package client is the Go SDK for Switchboard's WebSocket protocol, used by
// apps, the tests and the load tool.
//
// A Client keeps one connection to a gateway and reconnects by itself with
// exponential backoff and jitter. Send returns once the message is stored
// ("sent"); sends not yet confirmed are resent under the same id after a
// reconnect, and the server stores them once. Messages and receipts arrive
// on channels with duplicates (redeliveries after a reconnect) removed.
//
// # Order of sends
//
// A client's messages are stored in the order of its Send calls (calls
// made at once from several goroutines are ordered as they enter Send).
// Sends are pipelined: each is written as soon as it is made, without
// waiting for the "sent" of those before it, up to 64 unanswered (more
// wait for answers: the gateway's send burst is 200, and hundreds made
// offline and written at once would be refused past it), and the gateway
// stores one connection's sends in the order they arrive. A send answered with an
// error can break that order only if newer sends overtake its resend, so:
//
//   - When a send is answered with an error that protocol.Errors marks
//     retryable (store_failed, rate_limited, internal, unavailable,
//     shutting_down), it is resent under the same id, and no newer send is
//     written until it is stored. Sends made meanwhile queue behind it.
//   - It is resent alone, once every older send has been answered, after a
//     wait: the server's retry_ms if it gave one, otherwise a random time
//     up to a bound that starts at MinBackoff and doubles with each failure
//     of the same send, up to MaxBackoff.
//   - Once it is stored, the sends not on the wire go out, in the
//     original order (those that failed behind it first), as many as the
//     window of 64 unanswered lets go, and pipelining resumes. A failure
//     among them starts a new hold.
//   - It stops holding the others back if its Send fails instead, with an
//     error resending cannot fix (bad_media, say), or if it is withdrawn.
//     The sends behind it then go ahead, in order.
//   - A send is withdrawn when the context of the Send waiting for it ends
//     (of every Send, if several wait for the same id): the client never
//     writes it again, and Send returns the context's error. A frame of
//     it already written may have been stored, in its place (a store can
//     fail to answer after storing); Send again with the same id to find
//     out (the answer is "sent" with dup) or to store it now, after the
//     others.
//   - After a reconnect the unconfirmed sends are written again, in
//     order, then the sends made while disconnected, 64 unanswered at a
//     time. A send larger than the new connection's max_frame is answered
//     ErrTooLarge and dropped from the Store, never written. A send that was
//     holding the others back keeps sends made after the reconnect waiting
//     until its "sent" comes back.
//
// What the client cannot undo is a send already on the wire behind the one
// that failed, when the store accepts it: it was stored ahead of the
// failed one before the client learned of the failure. At most the sends
// written before the error frame arrived can do so. An app that needs no
// exception at all waits for each "sent" before the next Send.
//
// # Every device of a user
//
// A message this user sent from another device arrives on Messages with To
// (whom it went to), or Group, and SentSeq (where it is stored; in a
// group, its place in the group's log): deduped like any other, and its
// ticks arrive on Receipts here too, as on the device that sent it, with
// Seq = SentSeq. A read made on another device arrives on ReadSyncs: the
// conversation with Peer, or Group, is read up to Seq (a watermark, acked
// by the client). With a Store, both are recorded: the message as this
// user's own in its conversation, the read as that conversation's read
// watermark.
//
// # Groups
//
// SendGroup stores a message once in a group's log, for its members; it
// shares Send's order, outbox and resends, and its Sent.Seq is its place
// in the group's log. Its receipts come with Receipt.Group set, one per
// message, once every other member has it (delivered) or read it (read);
// GroupStatus is its message info (Status knows only sends to users). A non-member's send fails with a *ServerError
// (not_member, unknown_group). Group operations (CreateGroup, AddMembers,
// ..., GroupOp) return the group as it is after them, or a *ServerError
// with the refusal's code; one whose connection is lost before its
// answer, or answered unavailable or rate_limited, is asked again under
// the same request id until answered or its context ends (the server
// applies a change once however often it is asked); one asked while
// reconnecting waits for the connection. Messages sent in
// a group carry Message.Group, and a group's system messages Event (what
// changed) instead of a Body; repeats are dropped by (group, from, id)
// and (group, id). SendTypingGroup and Typing.Group are typing in a group.
//
// # Closes
//
// A close whose code protocol.Closes marks "reconnect: no" (1000, 1003,
// 1007, 4002) stops the client: Done is closed, and Err, pending sends and
// later calls return a *CloseError naming the code (for 4002 it matches
// ErrReplaced). Every other close, a code the table does not know, and a
// connection lost without a close frame make the client reconnect. Each
// connect asks Options.Token for a token, so a 1008 token_expired close is
// followed by a connection with a fresh one.
//
// # Local store
//
// With Options.Store (package localstore, one SQLite file per device)
// the client remembers across restarts: each send is written to the
// store's outbox before its frame can go out, a group send's too (a store error, such as
// localstore.ErrDiskFull, fails the Send and nothing is sent) and leaves
// it when "sent" comes, before Send returns; a new client resends the
// stored outbox first, in order and under the same ids, so a send made
// before a kill -9 is stored by the server once. Nobody waits for those
// resends: a Send with the same id joins one. Sent messages not yet read
// are loaded too, so their receipts reach the app. Messages are stored
// before the app gets them; one an earlier process stored is not handed
// to the app again but acked, as the store has it (read it with
// Store.Messages, or Store.GroupMessages for a group's, its system
// messages included). Receipts' ticks, a group's too, are stored before
// the receipt is acked, Ack and Read record the cursor hint and the read
// watermark. Messages of a group read from its log are kept with their
// place in it (Message.GSeq; Store.AckedGroup and Store.SetGroupReadPlace
// by AckGroup, ReadGroup and a read_sync by place), and one this user
// sent from another device as their own, at that place. Queue and
// QueueGroup return once a send is kept, without
// waiting for its "sent" (Pending.Wait does), for an app that keeps what
// its user types whether or not it is online.
//
// # Concurrency
//
// All methods are safe to call from many goroutines. The Messages and
// Receipts channels must be drained: a client that stops reading them
// stops reading its socket, and the gateway eventually closes it as slow.
//
// Locks: Client.sendMu is taken before Client.mu and Client.writeMu, so
// choosing send frames and writing them is one step; Client.mu (the
// outbox, the connection, the dedup sets) is never held while writing.
// Files: client.go (connection, reading, sending), outbox.go (which sends
// may be written, in what order), backoff.go (waits), presence.go
// (presence, settings, status), groups.go (group operations, group sends
// and typing), lru.go.
package client
