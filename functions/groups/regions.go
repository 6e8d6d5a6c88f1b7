package groups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
)

// Groups across regions (contract/regions.go).
//
// A group's home is the region it was created in: its log, its record and
// its fan-out are there. In a regions deployment this function therefore
//   - stamps its region on the groups it creates (GroupRecord.Region), so
//     the record every other region reads (GROUP_DIR) says where the
//     group lives;
//   - passes a request about a group homed in another region on to that
//     region's groups function (GroupsForwardSubject, across the leaf
//     links) and relays its answer unchanged, so a change is decided
//     where the log is, against the log, whichever region asked. A link
//     that is down answers nothing in time: the request is refused as
//     unavailable and the client asks again;
//   - stores a member's copy in the member's home INBOX: here, or through
//     this region's OUTBOX when the member is homed elsewhere, under the
//     same dedup id, so a fan-out run again stores each copy once on
//     either path.
//
// It learns that it runs in a regions deployment from the server: the
// HOMES bucket exists, and its region is the server's JetStream domain.

// maxCachedHomes bounds the members' homes an instance remembers; past
// it, it forgets them all and reads them again.
const maxCachedHomes = 100_000

// regions is an instance's view of a regions deployment; nil in a
// single region.
type regions struct {
	self  string
	homes jetstream.KeyValue // HOMES
	dir   jetstream.KeyValue // GROUP_DIR: other regions' groups (nil: not laid out)

	mu   sync.Mutex        // guards home
	home map[string]string // member -> home region, as read from HOMES
}

// openRegions finds out whether the server is a region's: nil, nil if
// not.
func openRegions(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*regions, error) {
	homes, err := js.KeyValue(ctx, contract.HomesKV)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("groups: bucket %s: %w", contract.HomesKV, err)
	}
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("groups: account info: %w", err)
	}
	if info.Domain == "" {
		return nil, fmt.Errorf("groups: bucket %s exists but the server has no JetStream domain (its region)", contract.HomesKV)
	}
	dir, err := js.KeyValue(ctx, contract.GroupDirKV)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		// A layout from before groups crossed regions: every group is
		// taken to be homed here until setup makes the bucket.
		log.Warn("no GROUP_DIR bucket: groups homed in other regions are unknown here until setup --region runs")
		dir = nil
	case err != nil:
		return nil, fmt.Errorf("groups: bucket %s: %w", contract.GroupDirKV, err)
	}
	return &regions{self: info.Domain, homes: homes, dir: dir, home: map[string]string{}}, nil
}

// region is this instance's region, "" in a single region.
func (r *regions) region() string {
	if r == nil {
		return ""
	}
	return r.self
}

// inboxOf is where member's copy goes, and the origin region to stamp
// on it ("" when it stays here): the member's home INBOX, through OUTBOX
// when that is another region's. A member the directory says has no
// home gets it here, as in one region; a directory that does not answer
// fails the fan-out, which is tried again.
func (r *regions) inboxOf(ctx context.Context, member string) (subject, origin string, err error) {
	if r == nil {
		return contract.InboxSubject(member), "", nil
	}
	r.mu.Lock()
	h, ok := r.home[member]
	r.mu.Unlock()
	if !ok {
		e, err := r.homes.Get(ctx, member)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// No home (yet): kept where the group is, as in one region,
			// and not remembered, as the gateways do not: a home given
			// later, or one the directory's mirror has not caught up
			// with, is found on the next message.
			return contract.InboxSubject(member), "", nil
		case err != nil:
			return "", "", fmt.Errorf("groups: home of %s: %w", member, err)
		default:
			h = string(e.Value())
		}
		r.mu.Lock()
		if len(r.home) >= maxCachedHomes {
			r.home = map[string]string{}
		}
		r.home[member] = h // homes do not move in this version
		r.mu.Unlock()
	}
	if h == r.self {
		return contract.InboxSubject(member), "", nil
	}
	return contract.OutboxSubject(h, member), r.self, nil
}

// homeElsewhere reports the region a group with no log here is homed
// in, from GROUP_DIR: "" when it is here, or nowhere known.
func (s *Service) homeElsewhere(ctx context.Context, gid string) (string, error) {
	if s.regions == nil || s.regions.dir == nil {
		return "", nil
	}
	if _, err := s.getMsg(ctx, msgGetRequest{LastBySubject: contract.GroupEventSubject(gid)}); !errors.Is(err, errNoMsg) {
		return "", err // its log is here (or unreadable: decided here, or refused, as in one region)
	}
	g, _, err := contract.LoadGroup(ctx, s.regions.dir, gid)
	switch {
	case errors.Is(err, contract.ErrUnknownGroup), errors.Is(err, contract.ErrBadRecord):
		return "", nil
	case err != nil:
		return "", err
	case g.Region == "" || g.Region == s.regions.self:
		return "", nil
	}
	// Its home keeps the id even once everyone has left: made again, it
	// is made there, so no region holds a second group of that id.
	return g.Region, nil
}

// forward asks region's groups function to answer op with data, and
// returns its answer as is. The reply subject crosses the leaf links
// (contract.GroupsForwardReply); the request goes out after the
// subscription on the same connection, so the interest reaches the other
// region ahead of the request.
func (s *Service) forward(ctx context.Context, region, op string, data []byte) (*nats.Msg, error) {
	reply := contract.GroupsForwardReply(s.regions.self) + nonce()
	sub, err := s.nc.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishMsg(&nats.Msg{Subject: contract.GroupsForwardSubject(region, op), Reply: reply, Data: data}); err != nil {
		return nil, err
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("groups: region %s did not answer: %w", region, err)
	}
	if m.Header.Get("Status") == "503" && len(m.Data) == 0 {
		// The server's "no responders": no groups function of that region
		// can be reached (a cut link, or none running there).
		return nil, fmt.Errorf("groups: region %s unreachable: %w", region, nats.ErrNoResponders)
	}
	return m, nil
}
