package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/streams"
)

// recordsTest is a server with the streams as setup makes them, an
// operator's connection that writes group records, and a gateway's
// kept records on a connection of their own, counting their reads.
type recordsTest struct {
	kv      jetstream.KeyValue // the operator's
	gw      *nats.Conn         // the gateway's
	records *groupRecords
	reads   atomic.Int64
}

func newRecordsTest(t *testing.T, opts *server.Options, gwUser string) *recordsTest {
	t.Helper()
	opts.JetStream = true
	ns := startServer(t, opts)
	connect := func(user string) *nats.Conn {
		var o []nats.Option
		if user != "" {
			o = append(o, nats.UserInfo(user, "pw"))
		}
		nc, err := nats.Connect(ns.ClientURL(), o...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx := context.Background()
	op := ""
	if opts.Users != nil {
		op = "op"
	}
	js, _ := jetstream.New(connect(op))
	if err := streams.Apply(ctx, js, streams.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, contract.GroupInfoKV)
	if err != nil {
		t.Fatal(err)
	}
	gw := connect(gwUser)
	rt := &recordsTest{kv: kv, gw: gw}
	gjs, _ := jetstream.New(gw)
	bucket := &groupBucket{js: gjs}
	rt.records = newGroupRecords(gw, func(ctx context.Context, gid string) (contract.GroupRecord, error) {
		rt.reads.Add(1)
		return bucket.load(ctx, gid)
	}, nil, 5*time.Second)
	t.Cleanup(rt.records.close)
	gw.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if rt.records.refused(err) {
			rt.records.deny()
		}
	})
	return rt
}

// put writes group gid's record with members, and returns what it
// wrote.
func (rt *recordsTest) put(t *testing.T, gid string, members ...string) []byte {
	t.Helper()
	g := contract.GroupRecord{ID: gid, Members: map[string]contract.GroupMember{}, Seq: 1}
	for i, m := range members {
		g.Members[m] = contract.GroupMember{Joined: uint64(i + 1)}
	}
	b, _ := json.Marshal(g)
	if _, err := rt.kv.Put(context.Background(), gid, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// seen waits until the gateway's connection has read the write that
// match picks, and applies it and the writes read before it, as a
// look-up would. (The store's acknowledgement to the writer does not
// say the server has yet passed the write to the gateway's
// subscription, so a round trip on the gateway's connection after it
// does not either.)
func (rt *recordsTest) seen(t *testing.T, match func(*nats.Msg) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-rt.records.writes:
			rt.records.mu.Lock()
			rt.records.applyLocked(m)
			rt.records.mu.Unlock()
			if match(m) {
				return
			}
		case <-deadline:
			t.Fatal("the gateway's connection did not read the write")
		}
	}
}

// wrote matches the write of record b.
func wrote(b []byte) func(*nats.Msg) bool {
	return func(m *nats.Msg) bool { return bytes.Equal(m.Data, b) }
}

// deleted matches a delete of a record.
func deleted(m *nats.Msg) bool { return m.Header.Get("KV-Operation") == "DEL" }

// checkMember checks user's send against gid's record, wanting member.
func (rt *recordsTest) checkMember(t *testing.T, gid, user string, member bool) {
	t.Helper()
	g, err := rt.records.check(gid, user)
	if err != nil {
		t.Fatal(err)
	}
	if g.IsMember(user) != member {
		t.Fatalf("%s in %s by the kept record: %v, want %v", user, gid, g.IsMember(user), member)
	}
}

// A send's check reads a group's record once and then uses it kept,
// until the record is written: a check after the gateway's connection
// has read the write's own message has the write, whoever wrote it. (A
// check does not wait for that: the send's store is conditional on the
// group's log, TestGroupSendCheckedAgainstTheLogAfterAChange. Here the
// test waits for the write to reach the watch itself.)
func TestKeptGroupRecordsFollowTheirWrites(t *testing.T) {
	rt := newRecordsTest(t, &server.Options{}, "")
	rt.put(t, "club", "alice", "bob")
	rt.checkMember(t, "club", "alice", true)
	for range 5 {
		rt.checkMember(t, "club", "bob", true)
	}
	if n := rt.reads.Load(); n != 1 {
		t.Fatalf("%d reads of the record for 6 checks, want 1", n)
	}
	rt.seen(t, wrote(rt.put(t, "club", "bob"))) // alice removed
	rt.checkMember(t, "club", "alice", false)
	if n := rt.reads.Load(); n != 2 {
		t.Fatalf("%d reads after a write, want 2", n)
	}
	rt.put(t, "club", "bob", "carol") // carol added
	rt.checkMember(t, "club", "carol", true)
	rt.checkMember(t, "club", "alice", false)
	// A user not a member by the kept record is refused only after a
	// read, whatever the record says kept.
	before := rt.reads.Load()
	rt.checkMember(t, "club", "dave", false)
	if rt.reads.Load() != before+1 {
		t.Fatalf("a non-member's check read the record %d times, want once", rt.reads.Load()-before)
	}
	// Typing's look-up uses the kept record without a round trip.
	g, err := rt.records.get("club")
	if err != nil || !g.IsMember("carol") || g.IsMember("alice") {
		t.Fatalf("typing's look-up: %+v, %v", g.Members, err)
	}
	// A deleted record is not kept.
	if err := rt.kv.Delete(context.Background(), "club"); err != nil {
		t.Fatal(err)
	}
	rt.seen(t, deleted)
	if _, err := rt.records.check("club", "bob"); !errors.Is(err, contract.ErrUnknownGroup) {
		t.Fatalf("check of a deleted group: %v, want unknown group", err)
	}
}

// A gateway whose NATS user may not subscribe to the records' subjects
// (a permissions file from before it kept them) keeps none for sends:
// each check reads, so a write is never missed.
func TestKeptGroupRecordsWithoutTheRightToWatch(t *testing.T) {
	deny := &server.Permissions{Subscribe: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$KV." + contract.GroupInfoKV + ".*"}}}
	rt := newRecordsTest(t, &server.Options{Users: []*server.User{{Username: "op", Password: "pw"}, {Username: "gw", Password: "pw", Permissions: deny}}}, "gw")
	// The gateway's start asks first: no look-up trusts a refused watch.
	rt.records.probe()
	if !rt.denied() {
		t.Fatal("the probe did not see the server refuse the watch")
	}
	rt.put(t, "club", "alice", "bob")
	rt.checkMember(t, "club", "alice", true)
	rt.checkMember(t, "club", "alice", true)
	rt.put(t, "club", "bob")
	rt.checkMember(t, "club", "alice", false)
	if n := rt.reads.Load(); n != 3 {
		t.Fatalf("%d reads for 3 checks, want 3", n)
	}
	// Allowed, the probe changes nothing.
	ok := newRecordsTest(t, &server.Options{}, "")
	ok.records.probe()
	if ok.denied() {
		t.Fatal("the probe refused a watch the server allows")
	}
}

func (rt *recordsTest) denied() bool {
	rt.records.mu.Lock()
	defer rt.records.mu.Unlock()
	return rt.records.denied
}

// A record kept before the connection was restored is read again at the
// next check, before the reconnect callback (not set here) could say so:
// writes made while it was down were not seen.
func TestKeptGroupRecordsAfterAReconnect(t *testing.T) {
	rt := newRecordsTest(t, &server.Options{}, "")
	rt.put(t, "club", "alice", "bob")
	rt.checkMember(t, "club", "alice", true)
	rt.checkMember(t, "club", "alice", true)
	if n := rt.reads.Load(); n != 1 {
		t.Fatalf("%d reads, want 1", n)
	}
	before := rt.gw.Stats().Reconnects
	if err := rt.gw.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		if rt.gw.Stats().Reconnects == before || !rt.gw.IsConnected() {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	rt.checkMember(t, "club", "alice", true)
	if n := rt.reads.Load(); n != 2 {
		t.Fatalf("%d reads after the reconnect, want 2", n)
	}
}
