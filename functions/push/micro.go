package push

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/protocol"
)

// Version is the micro service version.
const Version = "1.0.0"

// NotifySubject is the request subject of the notify endpoint, which sends
// a test push to every device of a user.
const NotifySubject = "sb.fn.push.notify"

// NotifyRequest asks for a test push.
type NotifyRequest struct {
	User string `json:"user"`
}

// NotifyReply says how many devices the webhook accepted.
type NotifyReply struct {
	Sent int `json:"sent"`
}

// Stats are an instance's counters since it started, shown as the
// endpoint data of `nats micro stats push --json`. Each counts messages, except Pushed and
// DeadLettered, which count device notifications.
type Stats struct {
	Pushed    uint64 `json:"pushed"`
	Coalesced uint64 `json:"coalesced"`
	// Waited counts deliveries put off because the user's window was held
	// by a message that had woken no device yet.
	Waited          uint64 `json:"waited"`
	SkippedOnline   uint64 `json:"skipped_online"`
	SkippedNoDevice uint64 `json:"skipped_no_device"`
	Ignored         uint64 `json:"ignored"`
	Retried         uint64 `json:"retried"`
	DeadLettered    uint64 `json:"dead_lettered"`
	// LeasesGone counts the leases gone read (gone.go), Gone the devices
	// they woke (counted in Pushed too), GoneGaveUp those given up after
	// MaxAttempts failed reads.
	LeasesGone uint64 `json:"leases_gone"`
	Gone       uint64 `json:"gone"`
	GoneGaveUp uint64 `json:"gone_gave_up"`
}

type counters struct {
	pushed, coalesced, waited, skippedOnline, skippedNoDevice, ignored, retried, deadLettered atomic.Uint64
	leasesGone, gone, goneGaveUp                                                              atomic.Uint64
}

// Stats returns the instance's counters.
func (s *Service) Stats() Stats {
	c := &s.counters
	return Stats{
		Pushed:          c.pushed.Load(),
		Coalesced:       c.coalesced.Load(),
		Waited:          c.waited.Load(),
		SkippedOnline:   c.skippedOnline.Load(),
		SkippedNoDevice: c.skippedNoDevice.Load(),
		Ignored:         c.ignored.Load(),
		Retried:         c.retried.Load(),
		DeadLettered:    c.deadLettered.Load(),
		LeasesGone:      c.leasesGone.Load(),
		Gone:            c.gone.Load(),
		GoneGaveUp:      c.goneGaveUp.Load(),
	}
}

func (s *Service) addService() (micro.Service, error) {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:         "push",
		Version:      Version,
		Description:  "Wakes offline devices through the push webhook, at most once per user per window",
		StatsHandler: func(*micro.Endpoint) any { return s.Stats() },
	})
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	if err := svc.AddEndpoint("notify", micro.HandlerFunc(s.handleNotify),
		micro.WithEndpointSubject(NotifySubject),
		micro.WithEndpointMetadata(map[string]string{"request": `{"user":"bob"}`, "reply": `{"sent":2}`})); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("push: %w", err)
	}
	return svc, nil
}

// handleNotify sends a test push now to each device of a user, bypassing
// presence and coalescing, so an operator can check the webhook end to
// end. It runs on the endpoint's subscription, so requests to one
// instance are served one at a time; the queue group spreads them.
func (s *Service) handleNotify(req micro.Request) {
	if !s.enter() {
		_ = req.Error("503", "push: shutting down", nil)
		return
	}
	defer s.wg.Done()
	var r NotifyRequest
	if err := json.Unmarshal(req.Data(), &r); err != nil {
		_ = req.Error("400", "bad request: body must be {\"user\":\"<id>\"}: "+err.Error(), nil)
		return
	}
	if err := protocol.CheckID(r.User); err != nil {
		_ = req.Error("400", fmt.Sprintf("bad request: user %q: %v", r.User, err), nil)
		return
	}
	ctx := context.Background()
	devices, err := s.devices(ctx, r.User)
	if err != nil {
		_ = req.Error("500", err.Error(), nil)
		return
	}
	var reply NotifyReply
	var errs []string
	now := time.Now().UnixMilli()
	for _, d := range devices {
		pending, _, err := s.pending(ctx, r.User, d, 0)
		if err == nil {
			err = s.hook.post(ctx, Notification{User: r.User, Device: d, Pending: pending, TS: now})
		}
		if err != nil {
			errs = append(errs, d+": "+err.Error())
			continue
		}
		reply.Sent++
	}
	if len(errs) > 0 {
		data, _ := json.Marshal(reply)
		_ = req.Error("502", "push: "+strings.Join(errs, "; "), data)
		return
	}
	_ = req.RespondJSON(reply)
}
