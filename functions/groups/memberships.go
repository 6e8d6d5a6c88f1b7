package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// Each user's groups (contract.MembershipsKey): kept by the fan-out, one
// change at a time in each group's log order, and read by list.

// membershipWorkers bounds the users whose memberships one change
// updates at once.
const membershipWorkers = 16

// changeMemberships applies ev, stored at seq in group gid, to the
// memberships of the users it concerns: a create or an add makes them
// members from seq, a remove or a leave takes them out; a create or a
// rename writes the group's name. Applying it again writes nothing new,
// so a fan-out run again after a crash may.
func (s *Service) changeMemberships(ctx context.Context, gid string, seq uint64, ev *event) error {
	if ev.Op == contract.GroupCreate || ev.Op == contract.GroupRename {
		if _, err := s.info.Put(ctx, contract.GroupNameKey(gid), []byte(ev.Group.Name)); err != nil {
			return fmt.Errorf("groups: name of %s: %w", gid, err)
		}
	}
	var users []string
	var change func(m map[string]contract.Membership) bool
	switch ev.Op {
	case contract.GroupCreate, contract.GroupAdd:
		users = ev.Users
		if ev.Op == contract.GroupCreate {
			users = sortedMembers(&ev.Group)
		}
		change = func(m map[string]contract.Membership) bool {
			want := contract.Membership{Since: seq}
			if m[gid] == want {
				return false
			}
			m[gid] = want
			return true
		}
	case contract.GroupRemove, contract.GroupLeave:
		users = ev.Users
		if ev.Op == contract.GroupLeave {
			users = []string{ev.Actor}
		}
		change = func(m map[string]contract.Membership) bool {
			if _, ok := m[gid]; !ok {
				return false
			}
			delete(m, gid)
			return true
		}
	default:
		return nil // rename, promote, demote: nobody's groups change
	}
	return s.eachUser(ctx, users, func(u string) error {
		_, err := s.updateMemberships(ctx, u, change)
		return err
	})
}

// eachUser runs f for every user, membershipWorkers at a time, and
// returns the first error.
func (s *Service) eachUser(ctx context.Context, users []string, f func(string) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, membershipWorkers)
	for _, u := range users {
		if !protocol.ValidID(u) {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(u); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// updateMemberships applies change to user's memberships in this region
// and stores them if it reports a change, by compare-and-set on a read
// through the stream's leader: several groups' changes meet in one key.
// It reports whether it stored a change.
func (s *Service) updateMemberships(ctx context.Context, user string, change func(map[string]contract.Membership) bool) (bool, error) {
	key := contract.MembershipsKey(user, s.regions.region())
	for range s.cfg.Attempts * 3 {
		ms, rev, err := s.leaderMemberships(ctx, key)
		if err != nil {
			return false, err
		}
		before := len(ms.Groups)
		if !change(ms.Groups) {
			return false, nil
		}
		if len(ms.Groups) > before && before >= s.cfg.MaxMemberships {
			// In too many groups to list another: anyone can add anyone,
			// and the key must stay a message's size. Skipped, not
			// retried: a fan-out waiting on it would hold its partition.
			s.unlisted.Add(1)
			s.log.Warn("a user in too many groups: a group they joined is not listed", "user", user, "groups", before)
			return false, nil
		}
		b, _ := json.Marshal(ms)
		if rev == 0 {
			_, err = s.info.Create(ctx, key, b)
		} else {
			_, err = s.info.Update(ctx, key, b, rev)
		}
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err):
			continue // another group's change came first: apply to it
		case errors.Is(err, nats.ErrMaxPayload) || isTooLarge(err):
			// Never stored, however often asked: skipped, not retried.
			s.unlisted.Add(1)
			s.log.Warn("a user's groups are past a message's size: a change is not listed", "user", user, "err", err)
			return false, nil
		default:
			return false, fmt.Errorf("groups: memberships of %s: %w", user, err)
		}
	}
	return false, fmt.Errorf("groups: memberships of %s: changed by others %d times in a row", user, s.cfg.Attempts*3)
}

// isTooLarge reports whether err is the store refusing a message past its
// size limit.
func isTooLarge(err error) bool {
	return contract.APICode(err) == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// leaderMemberships reads key through the stream's leader, with its
// revision (0: none yet).
func (s *Service) leaderMemberships(ctx context.Context, key string) (contract.Memberships, uint64, error) {
	ms := contract.Memberships{Groups: map[string]contract.Membership{}}
	m, err := contract.GetMsg(ctx, s.nc, "KV_"+contract.GroupInfoKV, 0, contract.KVSubject(contract.GroupInfoKV, key))
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return ms, 0, nil
	case err != nil:
		return ms, 0, fmt.Errorf("groups: %w", err)
	}
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &ms); err != nil {
			return ms, 0, fmt.Errorf("groups: %s: %w", key, err)
		}
		if ms.Groups == nil {
			ms.Groups = map[string]contract.Membership{}
		}
	}
	return ms, m.Sequence, nil
}

// fillMemberships fills in, once, the memberships of the groups stored
// before they were kept, and then marks them built
// (contract.MembershipsBuilt). A member is put in with Since the
// record's last change, unless their key has the group already (the
// fan-out's, which is newer). The fan-out may meanwhile take one of them
// out before this puts them in: the record is read again through the
// leader afterwards (the fan-out updates it before it takes anyone out),
// and what this put in for someone no longer a member is taken out again.
func (s *Service) fillMemberships(ctx context.Context) error {
	built := contract.MembershipsBuilt(s.regions.region())
	switch _, err := s.info.Get(ctx, built); {
	case err == nil:
		return nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return err
	}
	// The records' keys, from the stream's own count of its subjects
	// (no consumer, which would need the right to make and delete them).
	st, err := s.js.Stream(ctx, "KV_"+contract.GroupInfoKV)
	if err != nil {
		return err
	}
	prefix := contract.KVSubject(contract.GroupInfoKV, "")
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(contract.KVSubject(contract.GroupInfoKV, contract.GroupRecordKeys)))
	if err != nil {
		return err
	}
	gids := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		if gid := strings.TrimPrefix(subj, prefix); protocol.ValidID(gid) {
			gids = append(gids, gid)
		}
	}
	slices.Sort(gids)
	for _, gid := range gids {
		if err := s.fillGroup(ctx, gid); err != nil {
			return err
		}
	}
	_, err = s.info.Put(ctx, built, []byte(time.Now().UTC().Format(time.RFC3339)))
	return err
}

// fillGroup fills in group gid's members' memberships.
func (s *Service) fillGroup(ctx context.Context, gid string) error {
	g, err := s.leaderRecord(ctx, gid)
	if errors.Is(err, contract.ErrUnknownGroup) || errors.Is(err, contract.ErrBadRecord) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(g.Members) == 0 {
		return nil // emptied: nobody's
	}
	if _, err := s.info.Create(ctx, contract.GroupNameKey(gid), []byte(g.Name)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("groups: name of %s: %w", gid, err)
	}
	since := contract.Membership{Since: g.Seq}
	var mu sync.Mutex
	var put []string
	err = s.eachUser(ctx, sortedMembers(&g), func(u string) error {
		stored, err := s.updateMemberships(ctx, u, func(m map[string]contract.Membership) bool {
			if _, ok := m[gid]; ok {
				return false
			}
			m[gid] = since
			return true
		})
		if stored {
			mu.Lock()
			put = append(put, u)
			mu.Unlock()
		}
		return err
	})
	if err != nil || len(put) == 0 {
		return err
	}
	now, err := s.leaderRecord(ctx, gid)
	if err != nil && !errors.Is(err, contract.ErrUnknownGroup) {
		return err
	}
	return s.eachUser(ctx, put, func(u string) error {
		_, err := s.updateMemberships(ctx, u, func(m map[string]contract.Membership) bool {
			if e, ok := m[gid]; !ok || e != since || now.IsMember(u) {
				return false // the fan-out's, or still a member
			}
			delete(m, gid)
			return true
		})
		return err
	})
}

// leaderRecord reads group gid's record through GROUP_INFO's leader.
func (s *Service) leaderRecord(ctx context.Context, gid string) (contract.GroupRecord, error) {
	var g contract.GroupRecord
	m, err := contract.GetMsg(ctx, s.nc, "KV_"+contract.GroupInfoKV, 0, contract.KVSubject(contract.GroupInfoKV, gid))
	switch {
	case errors.Is(err, contract.ErrNoMsg):
		return g, contract.ErrUnknownGroup
	case err != nil:
		return g, fmt.Errorf("groups: %w", err)
	case len(m.Data) == 0:
		return g, contract.ErrUnknownGroup // a delete
	}
	if err := json.Unmarshal(m.Data, &g); err != nil {
		return g, fmt.Errorf("%w: group %s: %w", contract.ErrBadRecord, gid, err)
	}
	return g, nil
}

// fillMembershipsUntilDone runs fillMemberships until it succeeds or the
// instance stops, waiting longer after each failure.
func (s *Service) fillMembershipsUntilDone() {
	defer s.pwg.Done()
	for attempt := 1; s.ctx.Err() == nil; attempt++ {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Minute)
		err := s.fillMemberships(ctx)
		cancel()
		if err == nil {
			return
		}
		s.log.Warn("filling in users' groups; will try again", "attempt", attempt, "err", err)
		select {
		case <-s.ctx.Done():
		case <-time.After(min(time.Duration(attempt)*time.Second, 30*time.Second)):
		}
	}
}

// list answers contract.GroupList: the actor's groups homed here
// (GROUP_INFO) and, in a regions deployment, elsewhere (GROUP_DIR), by
// id, the first MaxListedGroups, with their names.
func (s *Service) list(ctx context.Context, req contract.GroupRequest) (contract.GroupListReply, error) {
	switch {
	case !protocol.ValidID(req.Actor) || !protocol.ValidID(req.Device):
		return contract.GroupListReply{}, refuse(contract.GroupErrBadID, "actor and device must be valid ids")
	case req.Group != "" || req.Name != "" || len(req.Users) > 0:
		return contract.GroupListReply{}, refuse(contract.GroupErrBadField, "list takes no group, name or users")
	}
	buckets := []string{contract.GroupInfoKV}
	if s.regions != nil && s.regions.dir != nil {
		buckets = append(buckets, contract.GroupDirKV)
	}
	all := map[string]contract.Membership{}
	// A deployment that became one of several regions filled its users'
	// keys in again under its region's name: the single region's are
	// left as they were, so no longer read.
	single := contract.MembershipsKey(req.Actor, "")
	for _, b := range buckets {
		err := s.lastOf(ctx, "KV_"+b, []string{contract.KVSubject(b, contract.MembershipsFilter(req.Actor))}, 0, func(m *nats.Msg) error {
			if len(m.Data) == 0 {
				return nil // a delete
			}
			if s.regions != nil && m.Header.Get("Nats-Subject") == contract.KVSubject(b, single) {
				return nil
			}
			var ms contract.Memberships
			if err := json.Unmarshal(m.Data, &ms); err != nil {
				return fmt.Errorf("groups: %s: %w", m.Header.Get("Nats-Subject"), err)
			}
			for gid, e := range ms.Groups {
				if protocol.ValidID(gid) {
					all[gid] = e
				}
			}
			return nil
		})
		if err != nil {
			return contract.GroupListReply{}, err
		}
	}
	gids := make([]string, 0, len(all))
	for gid := range all {
		gids = append(gids, gid)
	}
	slices.Sort(gids)
	gids = gids[:min(len(gids), contract.MaxListedGroups)]
	names := map[string]string{}
	for _, b := range buckets {
		subjects := make([]string, len(gids))
		for i, gid := range gids {
			subjects[i] = contract.KVSubject(b, contract.GroupNameKey(gid))
		}
		prefix := contract.KVSubject(b, contract.GroupNameKey(""))
		err := s.lastOf(ctx, "KV_"+b, subjects, 0, func(m *nats.Msg) error {
			if gid := strings.TrimPrefix(m.Header.Get("Nats-Subject"), prefix); len(m.Data) > 0 {
				names[gid] = string(m.Data)
			}
			return nil
		})
		if err != nil {
			return contract.GroupListReply{}, err
		}
	}
	out := contract.GroupListReply{Groups: make([]contract.GroupListEntry, 0, len(gids))}
	for _, gid := range gids {
		out.Groups = append(out.Groups, contract.GroupListEntry{Group: gid, Name: names[gid], Since: all[gid].Since})
	}
	return out, nil
}

// lastOf passes the last message of each key subjects match in stream
// (at most 1,024 keys), stored at or before upTo when that is not 0, to
// each (contract.LastPerSubject).
func (s *Service) lastOf(ctx context.Context, stream string, subjects []string, upTo uint64, each func(*nats.Msg) error) error {
	if err := contract.LastPerSubject(ctx, s.nc, stream, subjects, upTo, contract.MaxListedGroups+1, each); err != nil {
		return fmt.Errorf("groups: %w", err)
	}
	return nil
}
