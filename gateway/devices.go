package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/streams"
)

// deviceRecord is one device in the DEVICES bucket.
type deviceRecord struct {
	Joined time.Time `json:"joined"`
	// Start is the first INBOX sequence this device is to receive.
	Start uint64 `json:"start"`
	// Floor is the device's ack floor when its last session ended: every
	// message at or below it was acked. Zero when never saved.
	Floor uint64 `json:"floor,omitempty"`
	// Stream is when the INBOX stream that Start and Floor count in was
	// created. Sequences restart when INBOX is recreated, so positions
	// from another stream are void.
	Stream time.Time `json:"stream"`
}

// userRecord is the value of a DEVICES key: a user's devices.
type userRecord struct {
	Devices map[string]*deviceRecord `json:"devices"`
}

// devices finds or creates each device's durable consumer.
//
// Which messages a device gets:
//   - A user's first device gets everything INBOX still holds for the user
//     (up to the stream's max age), including messages sent before the user
//     ever connected.
//   - A device added later gets the messages stored from the moment it
//     first connected. History from before is for the user's other devices
//     to hand over, end to end encrypted, as WhatsApp does; the server
//     never re-sends it.
//   - A known device whose consumer is gone (deleted by an operator, or
//     reaped) resumes after the ack floor saved when its last session ended.
type devices struct {
	js       jetstream.JetStream
	inbox    jetstream.Stream
	kv       jetstream.KeyValue
	template jetstream.ConsumerConfig
	onReset  func() // counts a rewind to the ack floor
	// created is when the INBOX stream this gateway started with was
	// created: the stream identity kept with saved positions.
	created time.Time
}

func consumerName(user, device string) string { return user + "~" + device }

// ensure returns the device's consumer, ready to deliver from the oldest
// message the device has not acked.
func (d *devices) ensure(ctx context.Context, user, device string) (jetstream.Consumer, error) {
	name := consumerName(user, device)
	c, err := d.inbox.Consumer(ctx, name)
	switch {
	case err == nil:
		ci := c.CachedInfo()
		// Settings changed since the consumer was made (--ack-wait,
		// --max-inflight) are applied to it.
		if ci.Config.AckWait != d.template.AckWait || ci.Config.MaxAckPending != d.template.MaxAckPending {
			cfg := ci.Config
			cfg.AckWait, cfg.MaxAckPending = d.template.AckWait, d.template.MaxAckPending
			if c, err = d.inbox.UpdateConsumer(ctx, cfg); err != nil {
				return nil, fmt.Errorf("gateway: update consumer: %w", err)
			}
		}
		// Anything still unacked belongs to an earlier session that is
		// gone. Rewind to the ack floor so it comes again at once and in
		// order, instead of after AckWait and behind newer messages.
		if ci.NumAckPending > 0 || ci.NumRedelivered > 0 {
			if _, err := d.inbox.ResetConsumer(ctx, name); err != nil {
				return nil, fmt.Errorf("gateway: reset consumer: %w", err)
			}
			if d.onReset != nil {
				d.onReset()
			}
		}
		return c, nil
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("gateway: consumer info: %w", err)
	}
	start, err := d.register(ctx, user, device)
	if err != nil {
		return nil, err
	}
	cfg := d.template
	cfg.Durable = name
	cfg.FilterSubject = streams.InboxSubject(user)
	cfg.Metadata = map[string]string{"user": user, "device": device}
	if start > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start
	} else {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	c, err = d.inbox.CreateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		// Another session of this device won the race; use its consumer.
		return d.inbox.Consumer(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: create consumer: %w", err)
	}
	return c, nil
}

// register records the device if it is new and returns the first sequence
// it is to receive (0: everything retained).
func (d *devices) register(ctx context.Context, user, device string) (uint64, error) {
	for attempt := 0; attempt < 10; attempt++ {
		rec, rev, err := d.load(ctx, user)
		if err != nil {
			return 0, err
		}
		if dr := rec.Devices[device]; dr != nil {
			if !dr.Stream.Equal(d.created) {
				// Saved in an INBOX since deleted and recreated: every
				// message in this one is new to the device.
				return 0, nil
			}
			if dr.Floor > 0 {
				return dr.Floor + 1, nil
			}
			return dr.Start, nil
		}
		var start uint64
		if len(rec.Devices) > 0 {
			info, err := d.inbox.Info(ctx)
			if err != nil {
				return 0, fmt.Errorf("gateway: stream info: %w", err)
			}
			start = info.State.LastSeq + 1
		}
		rec.Devices[device] = &deviceRecord{Joined: time.Now().UTC(), Start: start, Stream: d.created}
		if err := d.store(ctx, user, rec, rev); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // lost a race with another device; read again
			}
			return 0, err
		}
		return start, nil
	}
	return 0, errors.New("gateway: device registry too contended")
}

// saveFloor records how far a device has acked, so a consumer that is
// removed can be recreated at the right place.
func (d *devices) saveFloor(ctx context.Context, user, device string) error {
	c, err := d.inbox.Consumer(ctx, consumerName(user, device))
	if err != nil {
		return err
	}
	return d.recordFloor(ctx, user, device, c.CachedInfo().AckFloor.Stream)
}

// recordFloor moves a device's saved floor forward to floor.
func (d *devices) recordFloor(ctx context.Context, user, device string, floor uint64) error {
	for attempt := 0; attempt < 10; attempt++ {
		rec, rev, err := d.load(ctx, user)
		if err != nil {
			return err
		}
		dr := rec.Devices[device]
		if dr == nil || (dr.Floor >= floor && dr.Stream.Equal(d.created)) {
			return nil
		}
		dr.Floor, dr.Stream = floor, d.created
		if err := d.store(ctx, user, rec, rev); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
	}
	return errors.New("gateway: device registry too contended")
}

func (d *devices) load(ctx context.Context, user string) (*userRecord, uint64, error) {
	rec := &userRecord{Devices: map[string]*deviceRecord{}}
	e, err := d.kv.Get(ctx, user)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("gateway: device registry: %w", err)
	}
	if err := json.Unmarshal(e.Value(), rec); err != nil {
		return nil, 0, fmt.Errorf("gateway: device registry record %q: %w", user, err)
	}
	if rec.Devices == nil {
		rec.Devices = map[string]*deviceRecord{}
	}
	return rec, e.Revision(), nil
}

// store writes rec if the key is still at rev (0: must not exist yet). A
// conflict is reported as jetstream.ErrKeyExists.
func (d *devices) store(ctx context.Context, user string, rec *userRecord, rev uint64) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = d.kv.Create(ctx, user, b)
	} else {
		_, err = d.kv.Update(ctx, user, b, rev)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return jetstream.ErrKeyExists
	}
	return err
}
