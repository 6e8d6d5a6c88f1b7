// Package groups is the groups worker function: it keeps each group's
// membership and fans the group's messages out to its members' inboxes.
//
// A group is its log in stream GROUPS (see contract/groups.go): gateways
// store chat messages on group.<partition>.<group>.m, this function
// stores membership changes on group.<partition>.<group>.e, and one
// stream sequence orders both. Who gets a message follows from the log
// alone: the members as of sequence S are those of the last event stored
// before S. So:
//   - Management (one micro endpoint per operation, GroupSubject(op)):
//     the function reads the group's last event, decides, and stores the
//     change as an event only if the event subject's last sequence is
//     still the one it decided from (Nats-Expected-Last-Subject-Sequence).
//     Two admins' changes made at once cannot both pass: the loser reads
//     the winner's event and decides again, against the group the other
//     left. An event carries the whole resulting record and the sequence
//     of the event before it, so one event says who the members are, and
//     the events form a chain back to the group's creation. GROUP_INFO
//     then follows the log (a record only moves forward); it may lag, and
//     the next change repairs it from the log before deciding. A refusal,
//     or a change that changes nothing, stores nothing.
//   - Fan-out: one durable pull consumer per partition, holding one
//     message at a time, so each group's log is handled in stream order
//     while the 16 partitions run at once. For a chat message at S the
//     function stores a copy in the inbox of every member as of S but the
//     sender (and in the sender's too when the sender has another device,
//     for that device); for an event, a system message to every member after the
//     change, to those it removed, and to the actor. A message from a
//     sender who was not a member at S is dropped. Copies are published
//     asynchronously, a bounded number in flight per partition, and the
//     group message is acked only when every copy is stored; a failure
//     naks it with backoff, and it comes again.
//
// Crash safety: a copy's Nats-Msg-Id is the group, the sequence and the
// member (contract.GroupCopyDedupID), so a message fanned out again after
// a crash or a stop half-way stores each copy once (within INBOX's
// duplicate window). Membership is kept per partition in memory as of the
// consumer's position; it is trusted only while this instance handled
// every delivery of the partition in a row (the consumer's delivery
// sequence has no gap). Otherwise, and after a restart, a group's members
// as of S are read from the log: the last event, walked back along the
// chain until it is older than S. Any number of instances share the
// durables and the endpoints; the function keeps nothing of its own that
// the log cannot give back.
//
// The last member's leave is stored like any other: the group is then
// empty, and an empty group is treated as no group (unknown_group) by
// every operation but create, which may make it again under the same id.
package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/functions/worker"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// Version is the micro service version.
const Version = "1.0.0"

// lockStripes is how many locks an instance's decisions are spread over.
const lockStripes = 256

// Config tunes an instance.
type Config struct {
	// MaxMembers bounds a group's size.
	MaxMembers int
	// Workers is how many requests an instance handles at once.
	Workers int
	// Timeout bounds one request's work.
	Timeout time.Duration
	// InFlight bounds the copies one partition has published and not yet
	// seen stored: a big group's fan-out is paced, and cannot fill the
	// connection for the others.
	InFlight int
	// Attempts bounds how often a change is decided again after another
	// change was stored first.
	Attempts int
	// CacheMembers bounds the members a partition keeps in memory, over
	// all its groups; past it the partition forgets them all and reads
	// each group back from the log as its messages come.
	CacheMembers int
	// MaxMemberships bounds the groups one user's list keeps in a region
	// (contract.MaxMemberships by default).
	MaxMemberships int
	// LogMembers, when not 0, switches a group to its log
	// (docs/GROUP-LOG.md) at its first change that leaves it with at
	// least this many members: from then on its messages are copied only
	// to members homed in another region, and its changes only to those
	// and to the users they add, the switch itself to every member. 0
	// keeps every group on copies. DefaultLogMembers says why the
	// default is what it is.
	LogMembers int

	// afterCopy, for tests, is called after each copy of a fan-out is
	// stored, with how many of that message's copies are; ctx ends when
	// the instance stops.
	afterCopy func(ctx context.Context, stored int)
	// noFanOut, for tests, answers requests and consumes nothing.
	noFanOut bool
	// noMemberships, for tests, keeps no user's list of groups, as the
	// function did before it kept them.
	noMemberships bool
}

// DefaultLogMembers is the size from which a group is read from its log.
// Measured (README, P7; flat out, every member online, member deliveries
// a second against the raw publish rate of the same run), the log's lead
// over copies grows with the group: 1.6–2 times the copies' rate at 10
// members (ten groups at once), 2–2.5 at 100, 4–6 at 1,024, where copies
// also miss the latency bar. Each log group a user is in gives each of
// their devices a feed (a place in its record, a share of its gateway's
// reader), and its coming back was a read of each group's log, where
// copies are one inbox read for all: users each in 20 groups of 10
// coming back at once took twice the copies' time and CPU. Since a
// group's reader keeps its last messages for the devices that join it
// behind (gateway/grouplog.go), that storm takes 0.8 s on the log against
// 7.3 s by copies, at 1 s of serve CPU against 11 s (README, P5 for
// groups; 2.0 s against 5.7 s with no device of the groups left on the
// gateway). Groups of 3 and 5 favour the log too (1.1 and 1.3–1.7 times
// the copies' rate, the copies seconds behind); below 10 they stay on
// copies for now, because each log group also costs each gateway with a
// member online a subscription to its bell and, while busy, up to 64
// kept frames, which for the many smallest groups is not measured yet.
const DefaultLogMembers = 10

// DefaultConfig is what the binary runs with.
func DefaultConfig() Config {
	return Config{MaxMembers: 1024, Workers: 64, Timeout: 5 * time.Second, InFlight: 256, Attempts: 10, CacheMembers: 1 << 16,
		MaxMemberships: contract.MaxMemberships, LogMembers: DefaultLogMembers}
}

// Service is one running instance.
type Service struct {
	nc   *nats.Conn
	js   jetstream.JetStream // publishes copies and events, paced per partition
	info jetstream.KeyValue
	// devices is DEVICES: a sender with another device gets a copy too.
	devices jetstream.KeyValue
	cfg     Config
	log     *slog.Logger

	regions *regions // a regions deployment's homes and groups (regions.go); nil: one region

	svc   micro.Service
	locks [lockStripes]sync.Mutex // a group's decisions, one at a time per instance
	reqs  *worker.Requests        // requests in hand, Workers at most

	ctx    context.Context // ends when the instance stops: fan-outs give their message back
	cancel context.CancelFunc
	parts  []*partition
	pwg    sync.WaitGroup

	changes, refused, fannedOut, copies, dropped, conflicts, repeats atomic.Int64
	unlisted                                                         atomic.Int64 // joins left out of a user's list (too many)
}

// Start binds the micro service and the partitions' durables. The GROUPS
// stream and the GROUP_INFO bucket must exist.
func Start(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.MaxMembers <= 0 || cfg.Workers <= 0 || cfg.Timeout <= 0 || cfg.InFlight <= 0 || cfg.Attempts <= 0 || cfg.CacheMembers <= 0 ||
		cfg.MaxMemberships <= 0 || cfg.MaxMemberships > contract.MaxMemberships {
		return nil, fmt.Errorf("groups: max members, workers, timeout, in-flight, attempts and cache must be positive, and max memberships 1 to %d", contract.MaxMemberships)
	}
	// A JetStream context of its own, whose async window holds every
	// partition's copies in flight at once.
	pub, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(contract.GroupPartitions*cfg.InFlight+64),
		jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	s := &Service{nc: nc, js: pub, cfg: cfg, log: log.With("function", "groups"),
		reqs: worker.NewRequests(cfg.Workers)}
	if _, err := js.Stream(ctx, contract.GroupsStream); err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	if s.info, err = js.KeyValue(ctx, contract.GroupInfoKV); err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	if s.devices, err = js.KeyValue(ctx, contract.DevicesKV); err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	if s.regions, err = openRegions(ctx, js, s.log); err != nil {
		return nil, err
	}
	cons := make([]jetstream.Consumer, contract.GroupPartitions)
	for p := range contract.GroupPartitions {
		ccfg, err := streams.GroupsConsumerConfig(p)
		if err != nil {
			return nil, fmt.Errorf("groups: %w", err)
		}
		if cons[p], err = js.CreateOrUpdateConsumer(ctx, contract.GroupsStream, ccfg); err != nil {
			return nil, fmt.Errorf("groups: consumer %s: %w", ccfg.Durable, err)
		}
	}
	s.svc, err = micro.AddService(nc, micro.Config{
		Name:         "groups",
		Version:      Version,
		Description:  "Keeps groups' membership in their logs and fans group messages out to the members' inboxes",
		StatsHandler: s.stats,
	})
	if err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	examples := map[string]string{
		contract.GroupCreate:  `{"actor":"alice","device":"phone","group":"friends","name":"Friends","users":["bob","carol"]}`,
		contract.GroupRename:  `{"actor":"alice","device":"phone","group":"friends","name":"Old friends"}`,
		contract.GroupHistory: `{"actor":"alice","device":"phone","group":"friends","history":50}`,
		contract.GroupAdd:     `{"actor":"alice","device":"phone","group":"friends","users":["dave"]}`,
		contract.GroupRemove:  `{"actor":"alice","device":"phone","group":"friends","users":["dave"]}`,
		contract.GroupPromote: `{"actor":"alice","device":"phone","group":"friends","users":["bob"]}`,
		contract.GroupDemote:  `{"actor":"alice","device":"phone","group":"friends","users":["bob"]}`,
		contract.GroupLeave:   `{"actor":"bob","device":"laptop","group":"friends"}`,
		contract.GroupInfo:    `{"actor":"bob","device":"laptop","group":"friends"}`,
	}
	for _, op := range contract.GroupOps {
		if err := s.svc.AddEndpoint(op, s.handler(op), micro.WithEndpointSubject(contract.GroupSubject(op)),
			micro.WithEndpointMetadata(map[string]string{"request": examples[op]})); err != nil {
			_ = s.svc.Stop()
			return nil, fmt.Errorf("groups: %w", err)
		}
		if s.regions == nil {
			continue
		}
		// Other regions' groups functions ask here about groups homed here.
		if err := s.svc.AddEndpoint("forwarded-"+op, s.handlerFrom(op, true),
			micro.WithEndpointSubject(contract.GroupsForwardSubject(s.regions.self, op))); err != nil {
			_ = s.svc.Stop()
			return nil, fmt.Errorf("groups: %w", err)
		}
	}
	// A user's groups are read here, in this region, whatever their
	// homes: never passed on.
	if err := s.svc.AddEndpoint(contract.GroupList, s.handler(contract.GroupList), micro.WithEndpointSubject(contract.GroupSubject(contract.GroupList)),
		micro.WithEndpointMetadata(map[string]string{"request": `{"actor":"bob","device":"laptop"}`})); err != nil {
		_ = s.svc.Stop()
		return nil, fmt.Errorf("groups: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if !cfg.noFanOut && !cfg.noMemberships {
		s.pwg.Add(1)
		go s.fillMembershipsUntilDone()
	}
	for p := range contract.GroupPartitions {
		if cfg.noFanOut {
			break
		}
		part := &partition{s: s, id: p, cons: cons[p], cache: map[string]*members{}}
		if err := part.start(); err != nil {
			s.Stop()
			return nil, fmt.Errorf("groups: partition %d: %w", p, err)
		}
		s.parts = append(s.parts, part)
	}
	if err := nc.Flush(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("groups: %w", err)
	}
	return s, nil
}

// Stop stops answering and consuming, and waits for the work in hand. A
// message in the middle of its fan-out is given back (nak) at once, for
// another instance to fan out again; the copies already stored are not
// stored twice. A request not answered is asked again by its gateway.
func (s *Service) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.pwg.Wait()
	_ = s.svc.Stop()
	s.reqs.Close()
}

// Stats are an instance's counters.
type Stats struct {
	// Changes stored, requests refused, changes decided again because
	// another was stored first, and repeats of a stored change answered
	// without applying them again.
	Changes, Refused, Conflicts, Repeats int64
	// Group messages fanned out, copies stored (or found stored), and
	// messages dropped because their sender was not a member.
	FannedOut, Copies, Dropped int64
	// Unlisted counts memberships left out of a user's list of groups:
	// the user was in contract.MaxMemberships groups already.
	Unlisted int64
}

// Stats returns the instance's counters.
func (s *Service) Stats() Stats {
	return Stats{Changes: s.changes.Load(), Refused: s.refused.Load(), Conflicts: s.conflicts.Load(),
		Repeats: s.repeats.Load(), FannedOut: s.fannedOut.Load(), Copies: s.copies.Load(), Dropped: s.dropped.Load(),
		Unlisted: s.unlisted.Load()}
}

func (s *Service) stats(*micro.Endpoint) any {
	st := s.Stats()
	return map[string]int64{"changes": st.Changes, "refused": st.Refused, "conflicts": st.Conflicts,
		"repeats": st.Repeats, "fanned_out": st.FannedOut, "copies": st.Copies, "dropped": st.Dropped, "unlisted": st.Unlisted}
}

// refusal is an answer the request caused: its code is one of the
// contract's GroupErr codes. Anything else is the store's failure.
type refusal struct {
	status  int
	code    string
	message string
}

func (r *refusal) Error() string { return r.code + ": " + r.message }

func refuse(code, format string, args ...any) *refusal {
	status := 400
	switch code {
	case contract.GroupErrUnknown, contract.GroupErrUnknownMember:
		status = 404
	case contract.GroupErrNotMember, contract.GroupErrNotAdmin:
		status = 403
	case contract.GroupErrExists, contract.GroupErrAlreadyMember, contract.GroupErrFull:
		status = 409
	}
	return &refusal{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// handler answers op's requests on their own goroutines, at most Workers
// at a time. A refusal is a micro error whose data is
// {"code":...,"message":...} (contract.FnError's Code and Message); a
// failure of the store is a 503.
func (s *Service) handler(op string) micro.HandlerFunc { return s.handlerFrom(op, false) }

// handlerFrom is handler; forwarded marks requests another region's
// groups function passed on, which are answered here whatever: never
// passed on again, so no request goes round the regions.
func (s *Service) handlerFrom(op string, forwarded bool) micro.HandlerFunc {
	return func(r micro.Request) {
		if !s.reqs.Enter() {
			return // stopping: unanswered, the gateway asks again
		}
		go func() {
			defer s.reqs.Leave()
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
			defer cancel()
			// Answered straight on the connection: micro's Respond, called
			// after the handler returned, races with its bookkeeping.
			reply := s.answer(ctx, op, r.Data(), forwarded)
			reply.Subject = r.Reply()
			if reply.Subject != "" {
				_ = s.nc.PublishMsg(reply)
			}
		}()
	}
}

// answer is the reply to op's request data: decided here, or, for a
// group homed in another region, by that region's groups function.
func (s *Service) answer(ctx context.Context, op string, data []byte, forwarded bool) *nats.Msg {
	var req contract.GroupRequest
	var g contract.GroupRecord
	var list contract.GroupListReply
	err := json.Unmarshal(data, &req)
	switch {
	case err != nil:
		err = refuse(contract.GroupErrBadField, "the request is not valid JSON")
	case op == contract.GroupList:
		list, err = s.list(ctx, req)
	case !forwarded && protocol.ValidID(req.Group):
		var home string
		if home, err = s.homeElsewhere(ctx, req.Group); err == nil && home != "" {
			m, ferr := s.forward(ctx, home, op, data)
			if ferr == nil {
				return &nats.Msg{Header: m.Header, Data: m.Data}
			}
			err = ferr
		}
	}
	if err == nil && op != contract.GroupList {
		g, err = s.apply(ctx, op, req)
	}
	reply := &nats.Msg{}
	var ref *refusal
	switch {
	case err == nil && op == contract.GroupList:
		reply.Data, _ = json.Marshal(list)
	case err == nil:
		reply.Data, _ = json.Marshal(contract.GroupReply{Group: g})
	case errors.As(err, &ref):
		s.refused.Add(1)
		reply.Data, _ = json.Marshal(map[string]string{"code": ref.code, "message": ref.message})
		reply.Header = nats.Header{micro.ErrorCodeHeader: {strconv.Itoa(ref.status)}, micro.ErrorHeader: {ref.message}}
	default:
		s.log.Warn("request failed", "op", op, "group", req.Group, "err", err)
		reply.Header = nats.Header{micro.ErrorCodeHeader: {"503"}, micro.ErrorHeader: {"unavailable: " + err.Error()}}
	}
	return reply
}
