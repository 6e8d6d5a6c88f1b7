// Package push is the push worker function: it wakes a user's devices
// when a chat message lands in their inbox while none of them is online.
//
// It owns the push decision and the webhook call. It must not carry message
// content anywhere: a notification names the message and the device wakes
// to fetch it over its own session, so neither the webhook, nor FCM or
// APNs behind it, nor the dead-letter queue ever sees a body.
//
// # Flow
//
// Every instance pulls from the one durable consumer `push` on INBOX
// (streams/consumers/push.json, filter inbox.*), so N instances share the
// work. For each stored message with Sb-Kind msg (receipts are acked and
// ignored) for user U = the subject's last token:
//
//  1. U online (PRESENCE user.U lists a device): ack, no push.
//  2. U has no DEVICES record (never connected): ack, counted as
//     skipped_no_device; there is no device to wake, and the first
//     connection delivers everything anyway.
//  3. Coalescing: create key U in the PUSH bucket with a per-key TTL and
//     value {"seq":<this message's stream seq>,"sent":[]}. Whoever creates
//     it owns the user's window and pushes; a message that finds the key
//     naming another seq that has woken a device ("sent" not empty) is
//     coalesced (acked, no push). One that finds a holder that has woken
//     none yet is nak'd with backoff and decided again: the holder may end
//     having woken nobody and take its key away (5), and a message acked
//     behind it would never be pushed. A message that
//     finds its own seq is a later delivery of its own attempt and pushes
//     only the devices not yet in "sent" (or "dead").
//  4. Per device (sorted by name): the device's position is its cursor
//     in CURSORS (where it joined, before its first save); a device
//     already past the message is skipped, and the pending count is what
//     INBOX holds for U past that position (one direct get: its
//     Nats-Num-Pending, at least 1). The webhook is called, and after each success
//     the key is rewritten (compare-and-set on its revision) with the
//     device added to "sent", so a crash, a Stop or a retry never posts
//     a device twice.
//  5. All devices done: the message is acked, then the key is rewritten
//     to live one Window from now (deleted if the message woke no device).
//     In that order: a Window may be shorter than the ack wait, and an
//     instance that dies between the two must leave the longer hold, not
//     a key that expires before the message comes again. Leading edge:
//     the first message of a burst pushes at once, the rest of the window
//     is quiet.
//
// A second durable, push-gone on KV_PRESENCE (headers only), reads the
// leases' changes: a lease gone, of a user left with no device online,
// wakes that device for the newest message it lacks, if that was stored
// before the lease went (gone.go): a message that found the user online
// through a lease that outlived its connection. It looks in the inbox and
// in the logs of the groups the device reads from there (each group's
// last message past the device's place, one batched direct get).
//
// A third durable, push-groups on GROUPS (group.*.*.m, headers only),
// reads group messages. A group still on copies is acked at once: each
// member's copy is an INBOX message, pushed as above. A group whose
// members read its log (docs/GROUP-LOG.md) has its messages in no inbox:
// each member as of the message (the group's last change stored before
// it, read through the stream's leader), the sender aside, goes through
// steps 1 to 5 as one message's recipient, up to 16 members at a time,
// with two differences. The claim names the message by group and GROUPS
// sequence ({"seq":<gseq>,"group":"<group>","sent":[...]}), so group and
// 1:1 messages share one window per user. And a device is skipped once
// its place in the group's log (CURSORS <user>.<device>=g) has passed
// the message; its pending count is its inbox's plus what the group's
// log holds past its place (1, the message, if it has none yet). The
// message is acked when every member is done with, and a retry or a
// dead letter is per member and device, as for one recipient's devices.
//
// While a message is still being worked on (first attempt, waiting for a
// retry), the key's TTL is its hold: the retry delay + the consumer's ack
// wait + Window. It must outlive the next delivery of the message, or that
// delivery would find no key, open a new window and push again devices
// already done. Each rewrite carries its own TTL: a KV value written
// without one never expires, because the server keeps TTLs per revision.
//
// # Webhook
//
// One POST per device to Config.WebhookURL, with Content-Type
// application/json, "Authorization: Bearer <WebhookSecret>" when a secret
// is set, and at most Config.Timeout per call. The body is exactly, in this
// field order:
//
//	{"user":"bob","device":"phone","message_id":"m-1","from":"alice","pending":3,"seq":42,"ts":1795582349000}
//
// user and device say whom to wake; message_id (Sb-Id) and from (Sb-From)
// name the newest message; pending is how many messages wait for the
// device; seq is the INBOX stream sequence; ts is Sb-Ts, ms since epoch
// when the gateway accepted the message. A message of a group read from
// its log adds "group" and "gseq", its place in GROUPS, with seq 0:
//
//	{"user":"bob","device":"phone","message_id":"m-2","from":"alice","pending":1,"seq":0,"ts":1795582349000,"group":"crew","gseq":77}
//
// seq 0 with no gseq marks a test push from the notify endpoint (its
// message_id and from are empty).
//
// A 2xx answer is success. 429, 5xx and transport errors are retried: the
// message is nak'd with exponential backoff and jitter (BaseBackoff
// doubling up to MaxBackoff, never under a Retry-After the receiver sent),
// and the attempt number is the delivery count. After MaxAttempts, or at
// once for any other answer (4xx, or 3xx, as redirects are not followed),
// the notification is dead-lettered: stored on dlq.push.<user> in the DLQ
// stream with the webhook JSON as its body and headers Sb-Reason (the last
// error), Sb-Attempts, Sb-Seq and the Sb-Origin-* headers every function's
// dead letters carry; then the message is terminated. A malformed message
// (no Sb-Kind, Sb-From, Sb-Id or Sb-Ts, or an invalid user in the subject)
// is dead-lettered the same way at once, with what could be read.
//
// # FCM and APNs
//
// The webhook JSON is provider-neutral: the receiver knows each device's
// provider token, which Switchboard does not keep. FCMRequest and
// APNsRequest build the provider calls from it, for a relay written in Go
// or a later in-process sender:
//
//	webhook     FCM HTTP v1 (message.*)                APNs (/3/device/<token>)
//	user        data.user, android.collapse_key,       sb.user, apns-collapse-id
//	            apns.headers.apns-collapse-id
//	device      data.device                            sb.device
//	message_id  data.message_id                        sb.message_id
//	from        data.sender ("from" is reserved by FCM) sb.from
//	pending     data.pending (as a string)             sb.pending
//	seq         data.seq (as a string)                 sb.seq
//	group, gseq data.group, data.gseq (when set)       sb.group, sb.gseq
//	ts          data.ts (as a string); apns-expiration  sb.ts; apns-expiration
//	            = ts + ProviderTTL, android.ttl
//
// Both are data-only wake-ups, never an alert composed by the server: FCM
// android.priority high (what wakes a dozing Android device), APNs
// apns-push-type background with apns-priority 5 and
// {"aps":{"content-available":1}} (iOS refuses background pushes at 10).
// The collapse id is the user, so a provider holding several undelivered
// wake-ups for a device keeps only the newest.
//
// # Operators
//
// The function is the micro service "push" (`nats micro ls`; `nats micro
// stats push --json` shows the counters as endpoint data, per instance,
// which the table view leaves out). Its endpoint notify on
// sb.fn.push.notify takes {"user":"bob"}, posts a test notification to each
// of the user's devices now, bypassing presence and coalescing, and answers
// {"sent":N}; a bad request gets micro error 400.
//
// # Concurrency
//
// Start and Stop may be called from any goroutine; Stop is idempotent and
// waits for the messages in hand. An instance works on up to 32 messages,
// 32 lease changes and 8 group messages (16 members of each) at once;
// webhook calls are not made under any lock.
package push
