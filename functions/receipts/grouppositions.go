package receipts

// Gathered positions.
//
// A gateway gathers the delivered positions its sessions ask for while
// its earlier requests are on their way (contract.GroupPositionsRequest):
// a 1,024-member group whose members sit on one gateway asks a few times
// per message instead of once per member. Per group in a request the
// record is looked up once, the members' positions are read in one
// batched direct get, each one that rises is written with compare-and-set
// (the writes pipelined, a lost race retried alone as a single request's
// is), and the group is settled once. A position asked alone costs a
// request, a read and a write of the position, a read of the aggregate
// and a settle; gathered, it costs its write and a share of the rest.

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/protocol"
)

// groupsAtOnce bounds the groups of one gathered request taken at once.
const groupsAtOnce = 8

func (s *Service) handleGroupPositions(ctx context.Context, r micro.Request) error {
	var req contract.GroupPositionsRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Positions) > contract.GroupPositionsMax {
		return badRequest{"at most " + strconv.Itoa(contract.GroupPositionsMax) + " positions"}
	}
	byGroup := map[string][]contract.GroupPositionRequest{}
	var order []string
	for _, p := range req.Positions {
		if err := checkPosition(p); err != nil {
			return err
		}
		switch {
		case p.Status != protocol.StatusDelivered:
			return badRequest{"gathered positions are delivered ones"}
		case p.Region != "" || p.InboxSeq != 0:
			return badRequest{"gathered positions name no region and no inbox seq"}
		}
		if _, ok := byGroup[p.Group]; !ok {
			order = append(order, p.Group)
		}
		byGroup[p.Group] = append(byGroup[p.Group], p)
	}
	// The answer goes by the asker's deadline with what is done by then:
	// a group still being taken is named as failed (its gateway queues
	// its positions; taken twice, they change nothing), so one slow group
	// does not time out the others'.
	if req.WithinMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.WithinMS)*time.Millisecond)
		defer cancel()
	}
	var (
		mu     sync.Mutex
		taken  = map[string]bool{}
		wg     sync.WaitGroup
		allOut = make(chan struct{})
	)
	s.wg.Add(1) // while this request's own count is held: Stop waits for the stragglers
	go func() {
		defer s.wg.Done()
		sem := make(chan struct{}, groupsAtOnce)
		for _, gid := range order {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			s.wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done(); s.wg.Done() }()
				err := s.gatheredPositions(ctx, gid, byGroup[gid])
				if err != nil {
					s.log.Warn("group positions not taken; the gateway queues them", "group", gid, "err", err)
				}
				mu.Lock()
				taken[gid] = err == nil
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(allOut)
	}()
	select {
	case <-allOut:
	case <-ctx.Done():
	}
	var reply contract.GroupPositionsReply
	mu.Lock()
	for _, gid := range order {
		if !taken[gid] {
			reply.Failed = append(reply.Failed, gid)
		}
	}
	mu.Unlock()
	return r.RespondJSON(reply)
}

// gatheredPositions raises the delivered positions of reqs, all in group
// gid, and tells the senders whatever that makes due.
func (s *Service) gatheredPositions(ctx context.Context, gid string, reqs []contract.GroupPositionRequest) error {
	g, err := s.records.get(ctx, gid)
	switch {
	case errors.Is(err, contract.ErrUnknownGroup), errors.Is(err, contract.ErrBadRecord):
		return nil // no group (or none readable): nobody to tell
	case err != nil:
		return err
	}
	want := map[string]uint64{}
	devices := map[string]string{}
	for _, r := range reqs {
		if r.Seq > want[r.Member] {
			want[r.Member], devices[r.Member] = r.Seq, r.Device
		}
	}
	for m := range want {
		if !g.IsMember(m) {
			// A record kept may be behind a change that added them (see
			// groupPosition): read it again, once.
			if g, err = s.records.fresh(ctx, gid); err != nil {
				if errors.Is(err, contract.ErrUnknownGroup) || errors.Is(err, contract.ErrBadRecord) {
					return nil
				}
				return err
			}
			break
		}
	}
	members := make([]string, 0, len(want))
	for m := range want {
		if g.IsMember(m) { // the others were removed: they count for nothing
			members = append(members, m)
		}
	}
	if len(members) == 0 {
		return nil
	}
	cur, err := s.readPositions(ctx, g, members)
	if err != nil {
		return err
	}
	known := make(map[string]memberPos, len(members))
	allMoved := true
	type write struct {
		member string
		next   contract.GroupPosition
		fut    jetstream.PubAckFuture
	}
	var writes []write
	for _, m := range members {
		p := cur[m]
		next := p.p
		next.Delivered = max(next.Delivered, want[m])
		if next == p.p && p.rev != 0 {
			known[m] = p // there already: a repeat
			allMoved = false
			continue
		}
		b, _ := json.Marshal(next)
		msg := &nats.Msg{Subject: contract.KVSubject(contract.GroupTicksKV, contract.GroupTickKey(gid, m)), Data: b,
			Header: nats.Header{contract.HdrExpectLastSubjSeq: {strconv.FormatUint(p.rev, 10)}}}
		f, err := s.js.PublishMsgAsync(msg)
		if err != nil {
			return err
		}
		writes = append(writes, write{member: m, next: next, fut: f})
	}
	for _, w := range writes {
		var ack *jetstream.PubAck
		err := error(nil)
		select {
		case ack = <-w.fut.Ok():
		case err = <-w.fut.Err():
		case <-ctx.Done():
			return ctx.Err()
		}
		switch {
		case err == nil:
			known[w.member] = memberPos{p: w.next, rev: ack.Sequence}
			continue
		case !contract.IsConflict(err):
			return err
		}
		// Written meanwhile (another gateway, a read, a replica behind
		// when read): as a single request does.
		mine, moved, err := s.raisePosition(ctx, gid, w.member, want[w.member], false)
		if err != nil {
			return err
		}
		allMoved = allMoved && moved
		known[w.member] = mine
	}
	s.groupDelivered.Add(int64(len(members)))
	s.gathered.Add(1)
	return s.settleGroup(ctx, g, &settling{known: known, only: allMoved, devices: devices})
}
