package localstore

import (
	"context"
	"database/sql"
	"fmt"
)

// SchemaVersion is the schema this package writes: the number of
// migrations it knows. It is kept in the file's PRAGMA user_version.
const SchemaVersion = 3

// migrations[i] takes a store from version i to version i+1. A migration
// is never edited once released: a change is a new entry. Each one runs,
// with the version bump, in the transaction that opens the store, so a
// store is at one version or the next, never between.
var migrations = []string{
	// 1: messages (both directions; the outbox is the pending outgoing
	// ones), conversations with their read watermarks, and meta.
	`
CREATE TABLE messages (
	n      INTEGER PRIMARY KEY,        -- local order: outbox order, then arrival
	conv   TEXT    NOT NULL,           -- the conversation: the other user
	sender TEXT    NOT NULL,           -- '' for this user's own messages
	device TEXT    NOT NULL DEFAULT '',
	id     TEXT    NOT NULL,           -- the client message id
	seq    INTEGER NOT NULL DEFAULT 0, -- where the server stored it; 0 until "sent"
	ts     INTEGER NOT NULL DEFAULT 0, -- server time, Unix ms
	body   BLOB,
	media  TEXT,                       -- protocol.Media as JSON, or NULL
	status INTEGER NOT NULL,           -- see Status; only rises, except to dropped
	acked  INTEGER NOT NULL DEFAULT 0, -- incoming: this device acked it
	UNIQUE (sender, id)
);
CREATE INDEX messages_conv ON messages (conv, n);      -- history
CREATE INDEX messages_seq ON messages (seq);           -- Ack and Read name a seq
CREATE INDEX messages_outbox ON messages (n) WHERE status = 0;
CREATE INDEX messages_in ON messages (conv, seq) WHERE sender <> '';  -- unread counts
CREATE INDEX messages_unread_out ON messages (conv, seq)  -- sent, not yet read: receipts
	WHERE sender = '' AND status IN (1, 2);
CREATE TABLE conversations (
	conv     TEXT PRIMARY KEY,
	read_seq INTEGER NOT NULL DEFAULT 0 -- this user read every message up to it
) WITHOUT ROWID;
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 2: group traffic. A message and a conversation belong to a group
	// (grp) or are one to one (grp ''); a group's conversation is named
	// by the group. Repeats are told apart within a group, as a group's
	// system messages have ids unique in the group only, so the unique
	// key gains grp and both tables are built again.
	`
CREATE TABLE messages_v2 (
	n      INTEGER PRIMARY KEY,        -- local order: outbox order, then arrival
	grp    TEXT    NOT NULL DEFAULT '', -- the group; '' one to one
	conv   TEXT    NOT NULL,           -- the conversation: the other user, or the group
	sender TEXT    NOT NULL,           -- '' for this user's own messages
	device TEXT    NOT NULL DEFAULT '',
	id     TEXT    NOT NULL,           -- the client message id (a system message's: ev-<n>)
	seq    INTEGER NOT NULL DEFAULT 0, -- incoming: this user's inbox seq; own: the seq its ticks name
	ts     INTEGER NOT NULL DEFAULT 0, -- server time, Unix ms
	body   BLOB,
	media  TEXT,                       -- protocol.Media as JSON, or NULL
	event  TEXT,                       -- a group's system message: protocol.GroupEvent as JSON
	status INTEGER NOT NULL,           -- see Status; only rises, except to dropped
	acked  INTEGER NOT NULL DEFAULT 0, -- incoming: this device acked it
	UNIQUE (grp, sender, id)
);
INSERT INTO messages_v2 (n, conv, sender, device, id, seq, ts, body, media, status, acked)
	SELECT n, conv, sender, device, id, seq, ts, body, media, status, acked FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE INDEX messages_conv ON messages (grp, conv, n);
CREATE INDEX messages_seq ON messages (seq);
CREATE INDEX messages_outbox ON messages (n) WHERE status = 0;
CREATE INDEX messages_in ON messages (grp, conv, seq) WHERE sender <> '' AND event IS NULL; -- unread counts
CREATE INDEX messages_unread_out ON messages (grp, conv, seq)
	WHERE sender = '' AND status IN (1, 2);
CREATE TABLE conversations_v2 (
	grp      TEXT    NOT NULL DEFAULT '',
	conv     TEXT    NOT NULL,
	read_seq INTEGER NOT NULL DEFAULT 0, -- this user read every message up to it (inbox seq)
	PRIMARY KEY (grp, conv)
) WITHOUT ROWID;
INSERT INTO conversations_v2 (conv, read_seq) SELECT conv, read_seq FROM conversations;
DROP TABLE conversations;
ALTER TABLE conversations_v2 RENAME TO conversations;
`,
	// 3: groups read from their log (a big group's messages come with
	// their place in the log, not an inbox seq): that place on incoming
	// messages, and the read watermark in the log per group.
	`
ALTER TABLE messages ADD COLUMN gseq INTEGER NOT NULL DEFAULT 0; -- incoming from a group's log: its place there (seq 0)
CREATE INDEX messages_gseq ON messages (grp, gseq) WHERE gseq > 0;
ALTER TABLE conversations ADD COLUMN read_gseq INTEGER NOT NULL DEFAULT 0; -- read up to this place in the group's log
`,
}

// migrate brings the store on conn to len(migs), all in one IMMEDIATE
// transaction. A store at a higher version is left as it is and refused.
func migrate(ctx context.Context, conn *sql.Conn, migs []string) (err error) {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return classify(err)
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(ctx, "ROLLBACK")
		}
	}()
	var v int
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return classify(err)
	}
	if v > len(migs) {
		return &VersionError{File: v, Known: len(migs)}
	}
	for i := v; i < len(migs); i++ {
		if _, err := conn.ExecContext(ctx, migs[i]); err != nil {
			return fmt.Errorf("localstore: migration to version %d: %w", i+1, classify(err))
		}
	}
	if v < len(migs) {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migs))); err != nil {
			return classify(err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return classify(err)
	}
	return nil
}
