package localstore

import (
	"context"
	"database/sql"
)

// ReceivedOwn stores a message this user sent from another device, as one
// of its own (From ""), in conversation m.Conv at m.Seq, the seq its
// receipts name, unless a message of this user's with the same ID is
// stored already (sent from here, or stored before), and says which. Its
// ticks then rise with ApplyReceipt like those of a message sent from
// here.
func (s *Store) ReceivedOwn(m Message) (Seen, error) {
	var seen Seen
	err := s.tx(func(ctx context.Context, c *sql.Conn) error {
		st := max(m.Status, Sent)
		r, err := c.ExecContext(ctx, `INSERT INTO messages (conv, sender, device, id, seq, ts, body, media, status)
VALUES (?, '', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sender, id) DO NOTHING`,
			m.Conv, m.Device, m.ID, int64(m.Seq), m.TS.UnixMilli(), []byte(m.Body), mediaJSON(m.Media), int(st))
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 1 {
			return nil
		}
		var seq int64
		seen.Dup = true
		err = c.QueryRowContext(ctx, `SELECT seq FROM messages WHERE sender = '' AND id = ?`, m.ID).Scan(&seq)
		seen.FirstSeq = uint64(seq)
		return err
	})
	return seen, err
}
