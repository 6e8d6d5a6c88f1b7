// Package localstore is the Go SDK's local store: one SQLite file per
// device, through modernc.org/sqlite (pure Go, no cgo), that keeps what a
// Client must not forget when its process ends.
//
// It keeps the conversations, with users and in groups, and their
// messages, both directions (a group's system messages too); the
// outbox (this device's sends not yet confirmed by "sent", in the order of
// their Send and SendGroup calls); the ticks of each sent message
// (sent, delivered, read: they only rise; a group message's are the
// group's); which received messages this device acked and the highest
// acked seq (its cursor hint); and each conversation's read watermark,
// a group's too. Pass an open Store as client.Options.Store; the Client then
// writes each send here before it goes on the wire, resends the outbox
// in order under the same ids after a restart, and drops messages already
// received by an earlier process.
//
// # Files and faults
//
// The file is in WAL mode with synchronous=FULL: a write that returned is
// on disk, so a kill -9 after Send's store write loses nothing, and
// neither does a power cut or an OS crash (for a kill -9 alone the OS's
// page cache would do; FULL, an fsync of the WAL per transaction, is for
// the rest, and costs a few tenths of a millisecond per write on a
// virtual disk). Open holds the file in SQLite's EXCLUSIVE locking mode for as
// long as the Store is open: a second Open of it, from this process or
// another, fails with ErrLocked. Open checks the file (PRAGMA quick_check)
// and refuses one that is not a store or is damaged, half-written say,
// with ErrCorrupt, and one written by a newer schema with a
// *VersionError (errors.Is ErrNewerVersion) without changing it. A write
// on a full disk fails with ErrDiskFull (SQLite's SQLITE_FULL), or with
// ErrIO when the file system reports it otherwise (a file size limit
// gives EFBIG, say), and changes nothing: what was written before stays.
//
// # Schema
//
// The schema's version is the file's PRAGMA user_version; SchemaVersion
// is the one this package writes. Open applies the missing migrations in
// one transaction, so a store is at one version or the next.
//
// A Store is safe for concurrent use; its writes are serialized.
package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/switchboard-im/switchboard/protocol"
)

// Errors a Store returns, wrapped with what failed.
var (
	// ErrNewerVersion: the file's schema is newer than this package's
	// (SchemaVersion). It was not changed. The error is a *VersionError.
	ErrNewerVersion = errors.New("localstore: the store was written by a newer version of the SDK")
	// ErrCorrupt: the file is not a SQLite database, or is damaged
	// (truncated, half-written, overwritten).
	ErrCorrupt = errors.New("localstore: the store file is corrupt or not a store")
	// ErrLocked: another Store, in this process or another, has the file
	// open.
	ErrLocked = errors.New("localstore: the store is held by another open Store (in this process or another)")
	// ErrDiskFull: a write found no room. Nothing of it was kept.
	ErrDiskFull = errors.New("localstore: the disk is full")
	// ErrIO: the file system failed a read or write of the store: a
	// file that may not grow any more, a failing disk. Nothing of the
	// failed write was kept.
	ErrIO = errors.New("localstore: the store file could not be read or written")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("localstore: closed")
)

// VersionError refuses a store whose schema is newer than this package's.
type VersionError struct {
	File  int // the file's schema version
	Known int // the newest this package knows (SchemaVersion)
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("localstore: the store is at schema version %d, this SDK knows up to %d: upgrade the SDK (the file was not changed)", e.File, e.Known)
}

// Is makes errors.Is(err, ErrNewerVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrNewerVersion }

// classify maps SQLite's result codes to this package's errors.
func classify(err error) error {
	var se *sqlite.Error
	if err == nil || !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w (%v)", ErrLocked, err)
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return fmt.Errorf("%w (%v)", ErrCorrupt, err)
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w (%v)", ErrDiskFull, err)
	case sqlite3.SQLITE_IOERR:
		return fmt.Errorf("%w (%v)", ErrIO, err)
	}
	return err
}

// Status is where a message stands. An outgoing message goes from
// Pending to Sent to Delivered to Read, never back, or to Dropped; an
// incoming one is Sent (the server stored it).
type Status int8

// Statuses of a message.
const (
	Dropped   Status = -1 // withdrawn by the app, or refused by the server
	Pending   Status = 0  // in the outbox: not yet confirmed
	Sent      Status = 1  // stored by the server
	Delivered Status = 2  // the recipient's device has it
	Read      Status = 3  // the recipient read it
)

// StatusOf maps a receipt status (protocol.StatusDelivered, StatusRead)
// to a Status; anything else is Sent.
func StatusOf(s string) Status {
	switch s {
	case protocol.StatusRead:
		return Read
	case protocol.StatusDelivered:
		return Delivered
	}
	return Sent
}

// Outgoing is a send to keep in the outbox: to user To, or in Group.
type Outgoing struct {
	ID    string
	To    string
	Group string
	Body  json.RawMessage
	Media *protocol.Media
}

// Message is a stored message, either direction.
type Message struct {
	N int64 // local order: the outbox's for sends, arrival for others
	// Group is the group of a message sent in one ("" one to one); Conv
	// is the conversation: the other user, or the group.
	Group  string
	Conv   string
	From   string // the sender; "" for this user's own messages
	Device string // the sender's device (incoming)
	ID     string
	// Seq is where the server stored it: for an incoming message its seq
	// in this user's inbox (what Ack and Read name), for an own one the
	// seq its ticks name (its sent frame's: in a group, its place in the
	// group's log); 0 while Pending.
	Seq uint64
	// GSeq is, for an incoming message of a group read from its log
	// (Seq 0), its place in the log: what AckedGroup and
	// SetGroupReadPlace name.
	GSeq   uint64
	TS     time.Time
	Body   json.RawMessage
	Media  *protocol.Media
	Event  *protocol.GroupEvent // a group's system message (no Body)
	Status Status
	Acked  bool // incoming: this device acked it
}

// Store is an open local store.
type Store struct {
	path string
	mu   sync.Mutex // guards conn; serializes writes
	db   *sql.DB
	conn *sql.Conn // the one connection: it holds the lock
}

// Open opens the store at path, creating it if it does not exist, and
// brings its schema to SchemaVersion. Errors: ErrLocked, ErrCorrupt,
// *VersionError (ErrNewerVersion), ErrDiskFull, or the file system's.
func Open(path string) (*Store, error) {
	s, err := open(path, migrations)
	if err != nil {
		return nil, fmt.Errorf("localstore: open %s: %w", path, err)
	}
	return s, nil
}

func open(path string, migs []string) (_ *Store, err error) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, classify(err)
	}
	s := &Store{path: path, db: db, conn: conn}
	defer func() {
		if err != nil {
			conn.Close()
			db.Close()
		}
	}()
	// EXCLUSIVE before the first read: the connection then keeps its
	// locks until it closes, and WAL needs no shared memory.
	if _, err := conn.ExecContext(ctx, "PRAGMA locking_mode = EXCLUSIVE"); err != nil {
		return nil, classify(err)
	}
	// Read the version before changing anything: a newer file is left
	// as it is (switching it to WAL would already write to it).
	var v int
	if err := conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return nil, classify(err)
	}
	if v > len(migs) {
		return nil, &VersionError{File: v, Known: len(migs)}
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return nil, classify(err)
	}
	if mode != "wal" {
		return nil, fmt.Errorf("%w (journal mode %q, want wal)", ErrLocked, mode)
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		return nil, classify(err)
	}
	var check string
	if err := conn.QueryRowContext(ctx, "PRAGMA quick_check(1)").Scan(&check); err != nil {
		return nil, classify(err)
	}
	if check != "ok" {
		return nil, fmt.Errorf("%w (quick_check: %s)", ErrCorrupt, check)
	}
	if err := migrate(ctx, conn, migs); err != nil {
		return nil, err
	}
	return s, nil
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Close closes the store and releases its lock. Close the Client that
// uses it first.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	if e := s.db.Close(); err == nil {
		err = e
	}
	return classify(err)
}

// exec runs one statement (its own transaction).
func (s *Store) exec(query string, args ...any) (sql.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil, ErrClosed
	}
	r, err := s.conn.ExecContext(context.Background(), query, args...)
	return r, classify(err)
}

// tx runs fn in one transaction.
func (s *Store) tx(fn func(ctx context.Context, c *sql.Conn) error) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return ErrClosed
	}
	ctx := context.Background()
	if _, err := s.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return classify(err)
	}
	if err := fn(ctx, s.conn); err != nil {
		_, _ = s.conn.ExecContext(ctx, "ROLLBACK")
		return classify(err)
	}
	if _, err := s.conn.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = s.conn.ExecContext(ctx, "ROLLBACK")
		return classify(err)
	}
	return nil
}

func mediaJSON(m *protocol.Media) any {
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func eventJSON(e *protocol.GroupEvent) any {
	if e == nil {
		return nil
	}
	b, _ := json.Marshal(e)
	return string(b)
}

// AddOutgoing puts a send at the end of the outbox, durably. A send with
// the same id (in the same group, or one to one) already pending or
// stored stays as it is; one dropped goes back into the outbox, at its
// end.
func (s *Store) AddOutgoing(o Outgoing) error {
	conv := o.To
	if o.Group != "" {
		conv = o.Group
	}
	_, err := s.exec(`INSERT INTO messages (grp, conv, sender, id, body, media, status) VALUES (?, ?, '', ?, ?, ?, 0)
ON CONFLICT (grp, sender, id) DO UPDATE SET
	n = (SELECT max(n) + 1 FROM messages), conv = excluded.conv, body = excluded.body,
	media = excluded.media, status = 0, seq = 0, ts = 0
WHERE status = -1`, o.Group, conv, o.ID, []byte(o.Body), mediaJSON(o.Media))
	if err != nil {
		return fmt.Errorf("localstore: keeping send %s: %w", o.ID, err)
	}
	return nil
}

// Outbox returns the sends not yet confirmed, oldest first.
func (s *Store) Outbox() ([]Outgoing, error) {
	ms, err := s.query(`WHERE status = 0 ORDER BY n`)
	if err != nil {
		return nil, err
	}
	out := make([]Outgoing, len(ms))
	for i, m := range ms {
		out[i] = Outgoing{ID: m.ID, Body: m.Body, Media: m.Media}
		if m.Group != "" {
			out[i].Group = m.Group
		} else {
			out[i].To = m.Conv
		}
	}
	return out, nil
}

// Confirm records that the server stored send id (to a user) at seq: it
// leaves the outbox. tick is a receipt that came before the "sent" (Sent
// if none).
func (s *Store) Confirm(id string, seq uint64, ts time.Time, tick Status) error {
	return s.ConfirmGroup("", id, seq, ts, tick)
}

// ConfirmGroup is Confirm for send id in group ("" for a send to a
// user); seq is its place in the group's log.
func (s *Store) ConfirmGroup(group, id string, seq uint64, ts time.Time, tick Status) error {
	_, err := s.exec(`UPDATE messages SET seq = ?, ts = ?, status = max(status, ?, 1)
WHERE grp = ? AND sender = '' AND id = ? AND status >= 0`, int64(seq), ts.UnixMilli(), int(tick), group, id)
	return err
}

// Drop takes a pending send to a user out of the outbox: the app
// withdrew it, or the server refused it for good.
func (s *Store) Drop(id string) error { return s.DropGroup("", id) }

// DropGroup is Drop for send id in group ("" for a send to a user).
func (s *Store) DropGroup(group, id string) error {
	_, err := s.exec(`UPDATE messages SET status = -1 WHERE grp = ? AND sender = '' AND id = ? AND status = 0`, group, id)
	return err
}

// ApplyReceipt records a receipt frame from `by`: delivered covers this
// user's messages to by stored from from to to, read every one up to to.
// Ticks only rise.
func (s *Store) ApplyReceipt(by, status string, from, to uint64) error {
	var err error
	switch StatusOf(status) {
	case Read:
		_, err = s.exec(`UPDATE messages SET status = 3
WHERE grp = '' AND conv = ? AND sender = '' AND status IN (1, 2) AND seq <= ?`, by, int64(to))
	case Delivered:
		_, err = s.exec(`UPDATE messages SET status = 2
WHERE grp = '' AND conv = ? AND sender = '' AND status = 1 AND seq BETWEEN ? AND ?`, by, int64(from), int64(to))
	}
	return err
}

// ApplyGroupReceipt records a group receipt: every other member of group
// has (delivered) or has read this user's messages there stored from
// from to to, places in the group's log. A read covers every one up to
// to, as the group's lowest read position is there. Ticks only rise.
func (s *Store) ApplyGroupReceipt(group, status string, from, to uint64) error {
	var err error
	switch StatusOf(status) {
	case Read:
		_, err = s.exec(`UPDATE messages SET status = 3
WHERE grp = ? AND conv = ? AND sender = '' AND status IN (1, 2) AND seq <= ?`, group, group, int64(to))
	case Delivered:
		_, err = s.exec(`UPDATE messages SET status = 2
WHERE grp = ? AND conv = ? AND sender = '' AND status = 1 AND seq BETWEEN ? AND ?`, group, group, int64(from), int64(to))
	}
	return err
}

// Unread returns this user's messages stored by the server and not yet
// known read by their recipient, by seq: the ones a receipt can still
// move.
func (s *Store) Unread() ([]Message, error) {
	return s.query(`WHERE sender = '' AND status IN (1, 2) ORDER BY seq`)
}

// Seen says what the store knew of a received message.
type Seen struct {
	Dup      bool   // it was stored already (by this process or an earlier one)
	FirstSeq uint64 // the seq it was first stored with
	Acked    bool   // this device acked it
}

// Received stores an incoming message unless one with the same (Group,
// From, ID) is stored already, and says which. A message in a group (or
// a group's system message, with Event) has Group and Conv the group.
func (s *Store) Received(m Message) (Seen, error) {
	var seen Seen
	err := s.tx(func(ctx context.Context, c *sql.Conn) error {
		r, err := c.ExecContext(ctx, `INSERT INTO messages (grp, conv, sender, device, id, seq, gseq, ts, body, media, event, status)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (grp, sender, id) DO NOTHING`,
			m.Group, m.Conv, m.From, m.Device, m.ID, int64(m.Seq), int64(m.GSeq), m.TS.UnixMilli(), []byte(m.Body), mediaJSON(m.Media), eventJSON(m.Event))
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 1 {
			return nil
		}
		var seq int64
		seen.Dup = true
		err = c.QueryRowContext(ctx, `SELECT seq, acked FROM messages WHERE grp = ? AND sender = ? AND id = ?`, m.Group, m.From, m.ID).Scan(&seq, &seen.Acked)
		seen.FirstSeq = uint64(seq)
		return err
	})
	return seen, err
}

// Acked records that this device acked the message at seq, and raises
// the cursor hint to it.
func (s *Store) Acked(seq uint64) error {
	if seq == 0 {
		return nil // a message with no inbox seq (one of a group's log): AckedGroup
	}
	return s.tx(func(ctx context.Context, c *sql.Conn) error {
		if _, err := c.ExecContext(ctx, `UPDATE messages SET acked = 1 WHERE seq = ? AND sender <> ''`, int64(seq)); err != nil {
			return err
		}
		_, err := c.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('cursor_hint', ?)
ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)`, int64(seq))
		return err
	})
}

// AckedGroup records that this device acked everything of group, a
// group read from its log, up to its place gseq there.
func (s *Store) AckedGroup(group string, gseq uint64) error {
	_, err := s.exec(`UPDATE messages SET acked = 1 WHERE grp = ? AND gseq > 0 AND gseq <= ? AND sender <> ''`, group, int64(gseq))
	return err
}

// SetGroupReadPlace raises the read watermark of group, a group read
// from its log, to its place gseq there.
func (s *Store) SetGroupReadPlace(group string, gseq uint64) error {
	_, err := s.exec(`INSERT INTO conversations (grp, conv, read_gseq) VALUES (?, ?, ?)
ON CONFLICT (grp, conv) DO UPDATE SET read_gseq = max(read_gseq, excluded.read_gseq)`, group, group, int64(gseq))
	return err
}

// GroupReadPlace returns the place in group's log up to which this user
// read it (0 if none), for a group read from its log.
func (s *Store) GroupReadPlace(group string) (uint64, error) {
	return s.scalar(`SELECT coalesce((SELECT read_gseq FROM conversations WHERE grp = ? AND conv = ?), 0)`, group, group)
}

// CursorHint returns the highest seq this device acked (0 if none). The
// server keeps the device's real cursor; this is the device's own record
// of where it was.
func (s *Store) CursorHint() (uint64, error) {
	return s.scalar(`SELECT coalesce((SELECT value FROM meta WHERE key = 'cursor_hint'), 0)`)
}

// MarkRead raises the read watermark of the conversation of the incoming
// message at seq (with a user or in a group) to seq. It reports false if
// no incoming message is stored at seq.
func (s *Store) MarkRead(seq uint64) (bool, error) {
	if seq == 0 {
		return false, nil // a message with no inbox seq (one of a group's log): SetGroupReadPlace
	}
	r, err := s.exec(`INSERT INTO conversations (grp, conv, read_seq)
SELECT grp, conv, seq FROM messages WHERE seq = ? AND sender <> ''
ON CONFLICT (grp, conv) DO UPDATE SET read_seq = max(read_seq, excluded.read_seq)`, int64(seq))
	if err != nil {
		return false, err
	}
	n, _ := r.RowsAffected()
	return n > 0, nil
}

// SetReadWatermark raises the read watermark of the conversation with
// user conv to seq.
func (s *Store) SetReadWatermark(conv string, seq uint64) error {
	return s.setWatermark("", conv, seq)
}

// SetGroupReadWatermark raises group's read watermark to seq, a seq of
// this user's inbox (as a group Message's Seq).
func (s *Store) SetGroupReadWatermark(group string, seq uint64) error {
	return s.setWatermark(group, group, seq)
}

func (s *Store) setWatermark(grp, conv string, seq uint64) error {
	_, err := s.exec(`INSERT INTO conversations (grp, conv, read_seq) VALUES (?, ?, ?)
ON CONFLICT (grp, conv) DO UPDATE SET read_seq = max(read_seq, excluded.read_seq)`, grp, conv, int64(seq))
	return err
}

// ReadWatermark returns the seq up to which this user read the
// conversation with user conv (0 if none).
func (s *Store) ReadWatermark(conv string) (uint64, error) {
	return s.scalar(`SELECT coalesce((SELECT read_seq FROM conversations WHERE grp = '' AND conv = ?), 0)`, conv)
}

// GroupReadWatermark returns the inbox seq up to which this user read
// group (0 if none).
func (s *Store) GroupReadWatermark(group string) (uint64, error) {
	return s.scalar(`SELECT coalesce((SELECT read_seq FROM conversations WHERE grp = ? AND conv = ?), 0)`, group, group)
}

// Count returns the number of stored messages, both directions.
func (s *Store) Count() (int, error) {
	n, err := s.scalar(`SELECT count(*) FROM messages`)
	return int(n), err
}

// Conversation is a summary of one conversation.
type Conversation struct {
	Group    string // the group of a group's conversation ("" with a user)
	Conv     string // the other user, or the group
	Messages int    // stored, both directions (dropped sends included)
	Unread   int    // incoming above the read watermark (system messages left out)
	ReadSeq  uint64 // the read watermark
	ReadGSeq uint64 // the read watermark in the group's log, for one read from its log
	LastN    int64  // local order of its newest message
}

// Conversations lists the conversations, the most recently active first.
func (s *Store) Conversations() ([]Conversation, error) {
	var out []Conversation
	err := s.read(func(ctx context.Context, c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, `WITH convs AS (
	SELECT grp, conv, count(*) AS msgs, max(n) AS last FROM messages GROUP BY grp, conv
)
SELECT v.grp, v.conv, v.msgs,
	(SELECT count(*) FROM messages m WHERE m.grp = v.grp AND m.conv = v.conv AND m.sender <> ''
		AND m.event IS NULL AND (m.gseq = 0 AND m.seq > coalesce(c.read_seq, 0) OR m.gseq > coalesce(c.read_gseq, 0))),
	coalesce(c.read_seq, 0), coalesce(c.read_gseq, 0), v.last
FROM convs v LEFT JOIN conversations c ON c.grp = v.grp AND c.conv = v.conv
ORDER BY v.last DESC`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c Conversation
			var read, readG int64
			if err := rows.Scan(&c.Group, &c.Conv, &c.Messages, &c.Unread, &read, &readG, &c.LastN); err != nil {
				return err
			}
			c.ReadSeq, c.ReadGSeq = uint64(read), uint64(readG)
			out = append(out, c)
		}
		return rows.Err()
	})
	return out, err
}

// Messages returns the last limit messages (all if limit is 0) of the
// conversation with user conv, oldest first; dropped sends are left out.
func (s *Store) Messages(conv string, limit int) ([]Message, error) {
	return s.messages("", conv, limit)
}

// GroupMessages is Messages for group's conversation, its system
// messages included.
func (s *Store) GroupMessages(group string, limit int) ([]Message, error) {
	return s.messages(group, group, limit)
}

func (s *Store) messages(grp, conv string, limit int) ([]Message, error) {
	if limit <= 0 {
		return s.query(`WHERE grp = ? AND conv = ? AND status >= 0 ORDER BY n`, grp, conv)
	}
	ms, err := s.query(`WHERE grp = ? AND conv = ? AND status >= 0 ORDER BY n DESC LIMIT ?`, grp, conv, limit)
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms, err
}

// Message returns the message (from, id) with a user, from "" for an own
// one.
func (s *Store) Message(from, id string) (Message, bool, error) {
	return s.GroupMessage("", from, id)
}

// GroupMessage returns the message (from, id) in group, from "" for an
// own one ("" group: with a user).
func (s *Store) GroupMessage(group, from, id string) (Message, bool, error) {
	ms, err := s.query(`WHERE grp = ? AND sender = ? AND id = ?`, group, from, id)
	if err != nil || len(ms) == 0 {
		return Message{}, false, err
	}
	return ms[0], true, nil
}

// RecipientOf returns whom the own message stored at seq went to, false
// if none is stored there or it went to a group.
func (s *Store) RecipientOf(seq uint64) (string, bool, error) {
	ms, err := s.query(`WHERE grp = '' AND sender = '' AND seq = ?`, int64(seq))
	if err != nil || len(ms) == 0 {
		return "", false, err
	}
	return ms[0].Conv, true, nil
}

func (s *Store) query(where string, args ...any) ([]Message, error) {
	var out []Message
	err := s.read(func(ctx context.Context, c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, `SELECT n, grp, conv, sender, device, id, seq, gseq, ts, body, media, event, status, acked FROM messages `+where, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m Message
			var seq, gseq, ts int64
			var body []byte
			var media, event sql.NullString
			if err := rows.Scan(&m.N, &m.Group, &m.Conv, &m.From, &m.Device, &m.ID, &seq, &gseq, &ts, &body, &media, &event, &m.Status, &m.Acked); err != nil {
				return err
			}
			if event.Valid {
				m.Event = new(protocol.GroupEvent)
				if err := json.Unmarshal([]byte(event.String), m.Event); err != nil {
					return fmt.Errorf("%w (message %s: event: %v)", ErrCorrupt, m.ID, err)
				}
			}
			m.Seq, m.GSeq, m.TS, m.Body = uint64(seq), uint64(gseq), time.UnixMilli(ts), body
			if media.Valid {
				m.Media = new(protocol.Media)
				if err := json.Unmarshal([]byte(media.String), m.Media); err != nil {
					return fmt.Errorf("%w (message %s: media: %v)", ErrCorrupt, m.ID, err)
				}
			}
			out = append(out, m)
		}
		return rows.Err()
	})
	return out, err
}

// read runs fn, which only reads, with the connection to itself.
func (s *Store) read(fn func(ctx context.Context, c *sql.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return ErrClosed
	}
	return classify(fn(context.Background(), s.conn))
}

// scalar returns the one integer q yields.
func (s *Store) scalar(q string, args ...any) (uint64, error) {
	var v int64
	err := s.read(func(ctx context.Context, c *sql.Conn) error {
		return c.QueryRowContext(ctx, q, args...).Scan(&v)
	})
	return uint64(v), err
}
