package localstore

import (
	"context"
	"database/sql"
)

// ReceivedOwn stores a message this user sent from another device, as one
// of its own (From ""), in conversation m.Conv (in m.Group, if set) at
// m.Seq, the seq its receipts name, unless a message of this user's with
// the same ID is stored already there (sent from here, or stored
// before), and says which. Its ticks then rise with ApplyReceipt (or
// ApplyGroupReceipt) like those of a message sent from here.
func (s *Store) ReceivedOwn(m Message) (Seen, error) {
	var seen Seen
	err := s.tx(func(ctx context.Context, c *sql.Conn) error {
		st := max(m.Status, Sent)
		r, err := c.ExecContext(ctx, `INSERT INTO messages (grp, conv, sender, device, id, seq, ts, body, media, status)
VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (grp, sender, id) DO NOTHING`,
			m.Group, m.Conv, m.Device, m.ID, int64(m.Seq), m.TS.UnixMilli(), []byte(m.Body), mediaJSON(m.Media), int(st))
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 1 {
			return nil
		}
		var seq int64
		seen.Dup = true
		err = c.QueryRowContext(ctx, `SELECT seq FROM messages WHERE grp = ? AND sender = '' AND id = ?`, m.Group, m.ID).Scan(&seq)
		seen.FirstSeq = uint64(seq)
		return err
	})
	return seen, err
}
