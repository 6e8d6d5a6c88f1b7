package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/functions/presence"
	"github.com/switchboard-im/switchboard/streams"
)

// ReapResult counts what one pass of Reap did.
type ReapResult struct {
	Scanned int `json:"scanned"` // device consumers looked at
	Reaped  int `json:"reaped"`  // deleted after saving their position
	Busy    int `json:"busy"`    // skipped: online, pulling, active within idle, or unregistered
}

// Reap removes the per-device durable consumers that earlier versions kept
// (this one keeps a cursor record per device instead, see devices), for
// devices away for longer than idle: each one's ack floor is carried over
// to the device's cursor first, so the device then gets every message it
// had not acked and none it had. A consumer holds ~47 KB of server memory;
// a cursor costs disk. A device that connects first carries its consumer
// over itself.
//
// A device is idle when it holds no presence lease, has no pull waiting
// and has had nothing delivered for idle. Running it from several places
// at once is safe: a cursor only ever moves forward, and deleting a
// deleted consumer is a no-op.
func Reap(ctx context.Context, js jetstream.JetStream, idle time.Duration) (ReapResult, error) {
	var res ReapResult
	inbox, err := js.Stream(ctx, streams.Inbox)
	if err != nil {
		return res, fmt.Errorf("gateway: reap: %w", err)
	}
	kv, err := js.KeyValue(ctx, streams.DevicesKV)
	if err != nil {
		return res, fmt.Errorf("gateway: reap: %w", err)
	}
	presenceKV, err := js.KeyValue(ctx, streams.PresenceKV)
	if err != nil {
		return res, fmt.Errorf("gateway: reap: %w", err)
	}
	cursors, err := js.KeyValue(ctx, streams.CursorsKV)
	if err != nil {
		return res, fmt.Errorf("gateway: reap: %w", err)
	}
	d := &devices{js: js, inbox: inbox, kv: kv, cursors: cursors, created: inbox.CachedInfo().Created}
	now := time.Now()
	// List first, then delete: deleting while paging through the list
	// would shift the pages and skip consumers.
	var infos []*jetstream.ConsumerInfo
	lister := inbox.ListConsumers(ctx)
	for ci := range lister.Info() {
		infos = append(infos, ci)
	}
	if err := lister.Err(); err != nil {
		return res, fmt.Errorf("gateway: reap: list consumers: %w", err)
	}
	for _, ci := range infos {
		user, device := ci.Config.Metadata["user"], ci.Config.Metadata["device"]
		if user == "" || device == "" || ci.Name != consumerName(user, device) {
			continue // not a device queue
		}
		res.Scanned++
		last := ci.Created
		if ci.Delivered.Last != nil && ci.Delivered.Last.After(last) {
			last = *ci.Delivered.Last
		}
		if ci.NumWaiting > 0 || now.Sub(last) < idle {
			res.Busy++
			continue
		}
		if _, err := presenceKV.Get(ctx, presence.LeaseKey(user, device)); err == nil {
			res.Busy++ // online on some gateway
			continue
		}
		if rec, _, err := d.load(ctx, user); err != nil || rec.Devices[device] == nil {
			// Without a record the consumer would come back as a new
			// device, from the stream's end: keep it.
			res.Busy++
			continue
		}
		if err := d.recordFloor(ctx, user, device, ci.AckFloor.Stream); err != nil {
			return res, err
		}
		if err := inbox.DeleteConsumer(ctx, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return res, fmt.Errorf("gateway: reap %s: %w", ci.Name, err)
		}
		res.Reaped++
	}
	return res, nil
}
