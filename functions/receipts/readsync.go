package receipts

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-im/switchboard/contract"
)

// Read state on every device.
//
// When a conversation's read position rises, the reader's other devices
// are told with one small marker in the reader's own inbox (kind
// read_sync: the peer and the seq read up to), which every device of the
// reader reads and the gateway turns into a read_sync frame; the device
// that read skips it. It is a watermark, one per raise whatever the
// number of messages, and no second receipt reaches the sender. It is
// stored before the position, as the receipt is, with a dedup id of
// reader, peer and seq, so a request asked again stores it once. A reader
// with one device gets none.

// syncRead stores the read_sync marker of req for the reader's other
// devices, if there is one.
func (s *Service) syncRead(ctx context.Context, req contract.ReadRequest) error {
	// seq 0: any other device, whenever it joined; one that joined after
	// the message read still shows the conversation.
	other, err := contract.OtherDevice(ctx, s.devices, time.Unix(0, s.inbox), req.Reader, req.Device, 0)
	if err != nil || !other {
		return err
	}
	m := &nats.Msg{Subject: contract.InboxSubject(req.Reader), Header: nats.Header{
		contract.HdrMsgID:  {contract.ReadSyncDedupID(req.Reader, req.Sender, req.Seq)},
		contract.HdrKind:   {contract.KindReadSync},
		contract.HdrFrom:   {req.Reader},
		contract.HdrDevice: {req.Device},
		contract.HdrPeer:   {req.Sender},
		contract.HdrSeqTo:  {strconv.FormatUint(req.Seq, 10)},
		contract.HdrTS:     {strconv.FormatInt(time.Now().UnixMilli(), 10)},
	}}
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return err
	}
	s.stored.Add(1)
	return nil
}
