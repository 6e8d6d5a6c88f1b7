package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/protocol"
)

// groupCall runs a group operation on its own goroutine; its outcome
// comes on the channel.
func groupCall(c *Client, fn func(ctx context.Context) (Group, error)) <-chan groupResult {
	ch := make(chan groupResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stuck)
		defer cancel()
		g, err := fn(ctx)
		ch <- groupResult{g: g, err: err}
	}()
	return ch
}

// A group operation is one frame, answered by the group or refused with a
// code; one whose connection is lost before its answer, or answered
// unavailable, is asked again under the same id until answered.
func TestGroupOperations(t *testing.T) {
	s := newScript(t)
	connected := make(chan string, 4)
	c := s.dial(t, Options{OnConnect: func(sid string) { connected <- sid }}, newWaiter(true))
	sc := s.accept(t)
	<-connected

	res := groupCall(c, func(ctx context.Context) (Group, error) {
		return c.CreateGroup(ctx, "friends", "Friends", "bob", "carol")
	})
	f := sc.next(t)
	if f.Type != protocol.TypeGroup || f.Op != protocol.GroupCreate || f.Group != "friends" || f.Name != "Friends" || fmt.Sprint(f.Users) != "[bob carol]" {
		t.Fatalf("create frame %+v", f)
	}
	members := []protocol.GroupMember{{User: "alice", Admin: true}, {User: "bob"}, {User: "carol"}}
	sc.write(protocol.EncodeGroup(f.ID, "friends", "Friends", "alice", 1795582349000, members))
	r := <-res
	if r.err != nil || r.g.ID != "friends" || r.g.CreatedBy != "alice" || r.g.Created.UnixMilli() != 1795582349000 ||
		fmt.Sprint(r.g.Members) != fmt.Sprint(members) || !r.g.IsAdmin("alice") || r.g.IsAdmin("bob") || !r.g.IsMember("carol") {
		t.Fatalf("create: %+v, %v", r.g, r.err)
	}

	res = groupCall(c, func(ctx context.Context) (Group, error) { return c.AddMembers(ctx, "friends", "dave") })
	f = sc.next(t)
	sc.fail(protocol.ErrNotAdmin, f.ID, 0)
	var se *ServerError
	if r := <-res; !errors.As(r.err, &se) || se.Code != protocol.ErrNotAdmin {
		t.Fatalf("add: %v, want not_admin", r.err)
	}

	res = groupCall(c, func(ctx context.Context) (Group, error) { return c.AddMembers(ctx, "friends", "erin") })
	f = sc.next(t)
	if f.Op != protocol.GroupAdd {
		t.Fatalf("add frame %+v", f)
	}
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	sc2 := s.accept(t)
	<-connected
	again := sc2.next(t)
	if again.Type != protocol.TypeGroup || again.ID != f.ID || again.Op != protocol.GroupAdd || fmt.Sprint(again.Users) != "[erin]" {
		t.Fatalf("after a lost connection %+v, want the add again under id %s", again, f.ID)
	}
	sc2.fail(protocol.ErrUnavailable, again.ID, 0)
	if again = sc2.next(t); again.ID != f.ID || again.Op != protocol.GroupAdd {
		t.Fatalf("after unavailable %+v, want the add again under id %s", again, f.ID)
	}
	members = append(members, protocol.GroupMember{User: "erin"})
	sc2.write(protocol.EncodeGroup(f.ID, "friends", "Friends", "alice", 1795582349000, members))
	if r := <-res; r.err != nil || !r.g.IsMember("erin") {
		t.Fatalf("add across a lost connection and unavailable: %+v, %v", r.g, r.err)
	}
	sc2.fence(t, c) // answered: not written again

	if _, err := c.GroupOp(context.Background(), protocol.GroupInfo, "bad.group", "", nil); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad group id: %v", err)
	}
}

// A group send takes its place in the one send order and outbox, and its
// seq is kept out of receipts; group messages and system messages carry
// group (and event), and repeats are told apart by (group, from, id) and
// (group, id).
func TestGroupSendsAndMessages(t *testing.T) {
	s := newScript(t)
	c := s.dial(t, Options{}, newWaiter(true))
	sc := s.accept(t)

	o1, err := c.enqueueTo(dest{group: "friends"}, "g1", []byte(`"hi all"`), nil)
	if err != nil {
		t.Fatal(err)
	}
	o2 := queue(t, c, "m2")
	f := sc.next(t)
	if f.Type != protocol.TypeSend || f.ID != "g1" || f.Group != "friends" || f.To != "" || string(f.Body) != `"hi all"` {
		t.Fatalf("first send %+v, want g1 to friends", f)
	}
	sc.expectSends(t, "m2")
	sc.sent("g1", 51)
	sc.sent("m2", 51) // the same number in bob's inbox: only m2 takes bob's receipts
	if st, err := outcome(t, c, o1); err != nil || st.Seq != 51 {
		t.Fatalf("g1: %+v, %v", st, err)
	}
	if _, err := outcome(t, c, o2); err != nil {
		t.Fatal(err)
	}
	sc.receipt(protocol.StatusDelivered, "bob", 51, 51, 90)
	if r := recvReceipt(t, c); r.ID != "m2" {
		t.Fatalf("receipt for %s, want m2", r.ID)
	}
	sc.expectAcks(t, 90)
	ctx, cancel := context.WithTimeout(context.Background(), stuck)
	defer cancel()
	if _, err := c.SendGroup(ctx, "bad.group", "g3", []byte(`1`)); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad group: %v", err)
	}

	sc.write(protocol.AppendGroupMsg(nil, "x", "bob", "phone", "friends", 20, 1795582349000, []byte(`"in the group"`), nil))
	sc.write(protocol.AppendGroupEvent(nil, "ev-3", "alice", "phone", "friends", 21, 1795582349000, []byte(`{"op":"add","users":["dave"]}`)))
	sc.msg("x", "bob", 22)                                                                                                   // one to one: another message
	sc.write(protocol.AppendGroupMsg(nil, "x", "bob", "phone", "friends", 23, 1795582349000, []byte(`"in the group"`), nil)) // a second copy
	if m := recvMsg(t, c); m.Seq != 20 || m.Group != "friends" || m.Event != nil || string(m.Body) != `"in the group"` {
		t.Fatalf("group message %+v", m)
	}
	if m := recvMsg(t, c); m.Seq != 21 || m.Group != "friends" || m.Event == nil || m.Event.Op != "add" || fmt.Sprint(m.Event.Users) != "[dave]" {
		t.Fatalf("system message %+v", m)
	}
	if m := recvMsg(t, c); m.Seq != 22 || m.Group != "" {
		t.Fatalf("one-to-one message %+v", m)
	}
	sc.expectAcks(t, 23)

	if err := c.SendTypingGroup("friends"); err != nil {
		t.Fatal(err)
	}
	if f := sc.next(t); f.Type != protocol.TypeTyping || f.Group != "friends" || f.To != "" {
		t.Fatalf("typing frame %+v", f)
	}
	sc.write(protocol.AppendGroupTyping(nil, "bob", "phone", "friends"))
	select {
	case ty := <-c.TypingEvents():
		if ty.From != "bob" || ty.Group != "friends" {
			t.Fatalf("typing %+v", ty)
		}
	case <-time.After(stuck):
		t.Fatal("no typing event")
	}
}

// A group operation asked while the client reconnects waits for the
// connection and goes out on it.
func TestGroupOperationWaitsForTheConnection(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)
	sc.closeWith(protocol.CloseServiceRestart, "restart")
	r := w.next(t) // disconnected, waiting to reconnect
	res := groupCall(c, func(ctx context.Context) (Group, error) { return c.GroupInfo(ctx, "friends") })
	r.end()
	sc2 := s.accept(t)
	f := sc2.next(t)
	if f.Type != protocol.TypeGroup || f.Op != protocol.GroupInfo {
		t.Fatalf("frame %+v, want the info", f)
	}
	sc2.write(protocol.EncodeGroup(f.ID, "friends", "Friends", "alice", 1795582349000, []protocol.GroupMember{{User: "alice", Admin: true}}))
	if r := <-res; r.err != nil || r.g.Name != "Friends" {
		t.Fatalf("info: %+v, %v", r.g, r.err)
	}
}

// A group operation too large for the gateway fails unwritten (written,
// it would close the connection and go again on every new one); one
// waiting to ask again ends when the client closes.
func TestGroupOpTooLargeOrClosed(t *testing.T) {
	s := newScript(t)
	w := newWaiter(false)
	c := s.dial(t, Options{}, w)
	sc := s.accept(t)
	ctx, cancel := context.WithTimeout(context.Background(), stuck)
	defer cancel()

	users := make([]string, protocol.MaxGroupUsersPerFrame+1)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	if _, err := c.AddMembers(ctx, "friends", users...); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("add of %d users: %v, want ErrTooLarge", len(users), err)
	}
	sc.fence(t, c) // not written

	res := groupCall(c, func(ctx context.Context) (Group, error) { return c.GroupInfo(ctx, "friends") })
	f := sc.next(t)
	sc.fail(protocol.ErrRateLimited, f.ID, 0)
	w.next(t) // waiting to ask again
	c.Close()
	select {
	case r := <-res:
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("an operation waiting to ask again when the client closed: %v, want ErrClosed", r.err)
		}
	case <-time.After(stuck):
		t.Fatal("an operation waiting to ask again outlived the client's close")
	}
}

// SetGroupHistory is one history frame with the setting, 0 included, and
// the answer's setting is the Group's History.
func TestSetGroupHistory(t *testing.T) {
	s := newScript(t)
	connected := make(chan string, 4)
	c := s.dial(t, Options{OnConnect: func(sid string) { connected <- sid }}, newWaiter(true))
	sc := s.accept(t)
	<-connected
	members := []protocol.GroupMember{{User: "alice", Admin: true}, {User: "bob"}}
	for _, n := range []int{20, 0} {
		res := groupCall(c, func(ctx context.Context) (Group, error) { return c.SetGroupHistory(ctx, "friends", n) })
		f := sc.next(t)
		if f.Type != protocol.TypeGroup || f.Op != protocol.GroupHistory || f.Group != "friends" || f.History == nil || *f.History != n {
			t.Fatalf("history frame %+v, want history %d", f, n)
		}
		sc.write(protocol.EncodeGroupWithHistory(f.ID, "friends", "Friends", "alice", 1795582349000, members, n))
		if r := <-res; r.err != nil || r.g.History != n {
			t.Fatalf("history %d: %+v, %v", n, r.g, r.err)
		}
	}
}
