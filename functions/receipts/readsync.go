package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// syncGroupRead stores the read_sync marker of req, a read in a group,
// for the member's other devices, when it raises the member's read
// position there: the same watermark as for a conversation, with the
// group instead of the peer, naming the copy read in the member's inbox
// (what their devices know it by) and its place in the group's log. It
// is stored before the position, so a request asked again after a crash
// stores it once (its dedup id is member, group and place). The senders
// hear of the read only through the group's receipts, once: the marker
// ticks nothing. A read of a group read from its log (Log) names only
// its place in the log. A request with neither (from an older gateway)
// stores none.
func (s *Service) syncGroupRead(ctx context.Context, req contract.GroupPositionRequest) error {
	if req.InboxSeq == 0 && !req.Log {
		return nil
	}
	e, err := s.groupTicks.Get(ctx, contract.GroupTickKey(req.Group, req.Member))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return err
	default:
		var p contract.GroupPosition
		if json.Unmarshal(e.Value(), &p) == nil && p.Read >= req.Seq {
			return nil // read this far already: no rise, no marker
		}
	}
	subject := contract.InboxSubject(req.Member)
	if req.Region != "" {
		// Homed in another region: the marker goes there through OUTBOX,
		// whatever devices they have (they are recorded there).
		subject = contract.OutboxSubject(req.Region, req.Member)
	} else {
		other, err := contract.OtherDevice(ctx, s.devices, time.Unix(0, s.inbox), req.Member, req.Device, 0)
		if err != nil || !other {
			return err
		}
	}
	m := &nats.Msg{Subject: subject, Header: nats.Header{
		contract.HdrMsgID:    {contract.GroupReadSyncDedupID(req.Member, req.Group, req.Seq)},
		contract.HdrKind:     {contract.KindReadSync},
		contract.HdrFrom:     {req.Member},
		contract.HdrDevice:   {req.Device},
		contract.HdrGroup:    {req.Group},
		contract.HdrGroupSeq: {strconv.FormatUint(req.Seq, 10)},
		contract.HdrTS:       {strconv.FormatInt(time.Now().UnixMilli(), 10)},
	}}
	if req.InboxSeq != 0 {
		m.Header.Set(contract.HdrSeqTo, strconv.FormatUint(req.InboxSeq, 10))
	}
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return err
	}
	s.stored.Add(1)
	return nil
}
