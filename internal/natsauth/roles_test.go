package natsauth_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

func TestAnonymousAndUnknownClientsAreRefused(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	if nc, err := nats.Connect(n.Server.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("a client without credentials was let in")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous: %v, want an authorization violation", err)
	}
	stranger, _ := nkeys.CreateUser()
	pub, _ := stranger.PublicKey()
	nc, err := nats.Connect(n.Server.ClientURL(), nats.Nkey(pub, stranger.Sign))
	if err == nil {
		nc.Close()
		t.Fatal("a client with an unknown key was let in")
	}
	// A known public key without its seed cannot sign the nonce.
	gw := n.Keys.Public(natsauth.Gateway)
	nc, err = nats.Connect(n.Server.ClientURL(), nats.Nkey(gw, stranger.Sign))
	if err == nil {
		nc.Close()
		t.Fatal("a client claiming the gateway's key without its seed was let in")
	}
}

// TestRolesAreRefusedWhatTheyMustNotDo checks each role against what an
// attacker holding that role's key would try first. The server answers a
// refused publish or subscribe with an error before the PONG of the flush
// that follows, and the client records it as its last error on reading it,
// so each refusal is known once the flush returns; and the same actions as
// the operator are not refused, so the check can fail.
func TestRolesAreRefusedWhatTheyMustNotDo(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	functions := []natsauth.Role{natsauth.Receipts, natsauth.Presence, natsauth.Push, natsauth.Media, natsauth.Groups}
	type act struct {
		sub     bool // subscribe rather than publish
		subject string
		why     string
	}
	refused := map[natsauth.Role][]act{
		natsauth.Gateway: {
			{false, "$JS.API.DIRECT.GET.KV_MEDIA_ACL", "read grants or the media signing key"},
			{false, "$JS.API.STREAM.MSG.GET.KV_MEDIA_ACL", "read grants or the media signing key"},
			{false, "$KV.MEDIA_ACL.u.alice.x", "forge a media grant"},
			{false, "$JS.API.DIRECT.GET.OBJ_MEDIA", "read media bytes"},
			{false, "$JS.API.STREAM.DELETE.INBOX", "delete the inboxes"},
			{false, "$JS.API.STREAM.PURGE.INBOX", "purge the inboxes"},
			{false, "$JS.API.CONSUMER.CREATE.INBOX", "read inboxes through a consumer"},
			{false, "$KV.READS.alice.bob", "forge a read position"},
			{false, "$KV.PRESENCE.user.alice", "forge presence"},
			{false, "sb.presence.alice", "publish presence updates (the presence function's alone)"},
			{false, "group.00.friends.e", "forge a group's membership change (the groups function's alone)"},
			{false, "$KV.GROUP_INFO.friends", "forge a group's record"},
			{false, "$KV.GROUP_TICKS.friends.alice", "forge a member's group position"},
			{false, "$KV.GROUP_TICKS.friends", "forge what a group's senders were told"},
			{false, "$JS.API.CONSUMER.CREATE.GROUPS.groups-00", "take a partition of the group fan-out"},
			{true, "_INBOX.>", "read other clients' replies"},
			{true, "_INBOX_media.>", "read the media function's replies"},
			{true, "$KV.>", "watch every bucket"},
			{false, "xr.fn.us.receipts.status", "ask another region's receipts function past its own"},
			{true, "xr.re.eu.receipts.>", "read the answers other regions send its receipts function"},
		},
	}
	for _, f := range functions {
		refused[f] = append(refused[f],
			act{false, "sb.kick.bob.phone", "kick a device"},
			act{false, "sb.ev.bob", "push bytes to a device"},
			act{false, "$KV.CURSORS.bob.phone", "move a device's cursor"},
			act{false, "$KV.DEVICES.bob", "register a device"},
			act{false, "receipts.alice", "forge a receipt event"},
			act{false, "$JS.API.STREAM.DELETE.INBOX", "delete the inboxes"},
			act{true, "sb.live.*", "read every message as it is stored"},
			act{true, "sb.kick.*.*", "see who connects"},
			act{true, "_INBOX_gateway.>", "read the gateway's replies"},
		)
		if f != natsauth.Receipts && f != natsauth.Groups {
			// Only the receipts function (receipts for senders) and the
			// groups function (members' copies) store into inboxes; no
			// other function may write there at all.
			refused[f] = append(refused[f], act{false, "inbox.bob", "store a message as anyone"})
		}
		// Chat messages into a group's log are the gateways' alone.
		refused[f] = append(refused[f], act{false, "group.00.friends.m", "store a group message as anyone"})
		if f != natsauth.Groups {
			refused[f] = append(refused[f],
				act{false, "group.00.friends.e", "forge a group's membership change"},
				act{false, "$KV.GROUP_INFO.friends", "forge a group's record"})
		}
		if f != natsauth.Media {
			refused[f] = append(refused[f],
				act{false, "$JS.API.DIRECT.GET.KV_MEDIA_ACL", "read the media signing key"},
				act{false, "$JS.API.DIRECT.GET.INBOX", "read inboxes"})
		}
	}
	// Push reads inboxes: it counts what a device has waiting; and so does
	// receipts, to find where a message from another region landed for
	// its sender's status.
	for _, f := range []natsauth.Role{natsauth.Push, natsauth.Receipts} {
		refused[f] = slices.DeleteFunc(refused[f], func(a act) bool { return a.subject == "$JS.API.DIRECT.GET.INBOX" })
	}
	refused[natsauth.Receipts] = append(refused[natsauth.Receipts], act{false, "sb.presence.bob", "forge presence"})
	refused[natsauth.Media] = append(refused[natsauth.Media], act{false, "sb.presence.bob", "forge presence"},
		act{false, "$JS.API.STREAM.CREATE.LEAK", "make a stream that sources INBOX and republishes it"},
		act{false, "$JS.API.STREAM.UPDATE.INBOX", "change the inboxes' stream"},
		act{false, "$JS.API.STREAM.UPDATE.KV_MEDIA_ACL", "give its own bucket INBOX as a source"},
		act{false, "$JS.API.STREAM.CREATE.KV_MEDIA_ACL", "make its own bucket with INBOX as a source"},
		act{false, "$JS.API.STREAM.CREATE.OBJ_MEDIA", "make its object store with INBOX as a source"})
	refused[natsauth.Groups] = append(refused[natsauth.Groups], act{false, "sb.presence.bob", "forge presence"},
		act{false, "ticks.bob", "forge a delivered tick"}, act{false, "$KV.READS.bob.alice", "forge a read position"},
		act{false, "$KV.GROUP_TICKS.friends.bob", "forge a member's group position"})

	op := n.Connect(t, natsauth.Operator)
	for role, acts := range refused {
		nc := n.Connect(t, role)
		for _, a := range acts {
			var err error
			if a.sub {
				var s *nats.Subscription
				if s, err = nc.SubscribeSync(a.subject); err == nil {
					defer s.Unsubscribe()
				}
			} else {
				err = nc.Publish(a.subject, []byte("x"))
			}
			if err == nil {
				err = nc.Flush()
			}
			if err != nil {
				t.Fatalf("%s %s: %v", role, a.subject, err)
			}
			if got := nc.LastError(); !errors.Is(got, nats.ErrPermissionViolation) || !strings.Contains(got.Error(), `"`+a.subject+`"`) {
				t.Errorf("%s may %s (%s %q): last error %v", role, a.why, verb(a.sub), a.subject, got)
			}
		}
		if !nc.IsConnected() {
			t.Fatalf("%s: connection lost after refusals", role)
		}
	}
	// The operator is refused none of it.
	for _, subj := range []string{"sb.kick.bob.phone", "inbox.bob", "$KV.MEDIA_ACL.u.alice.x"} {
		if err := op.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := op.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := op.LastError(); err != nil {
		t.Fatalf("operator refused: %v", err)
	}
}

func verb(sub bool) string {
	if sub {
		return "subscribe"
	}
	return "publish"
}

// TestAnswersGoOnlyToAskersReplies: a requester names the reply subject,
// so a gateway could ask a function with the reply of a subject only the
// function may write (a presence request answered into
// $KV.GROUP_INFO.friends overwrote a group's record) or only the gateway
// may (a device's cursor): each function the gateways ask answers on the
// gateways' call prefix (contract.Caller), and its answer to any subject
// its own rights do not name is refused.
func TestAnswersGoOnlyToAskersReplies(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	gw := n.Connect(t, natsauth.Gateway)
	calls, err := contract.NewCaller(gw, contract.CallPrefix(string(natsauth.Gateway)))
	if err != nil {
		t.Fatal(err)
	}
	asked := map[natsauth.Role]string{
		natsauth.Receipts: "sb.fn.receipts.status",
		natsauth.Presence: "sb.fn.presence.get",
		natsauth.Media:    "sb.fn.media.grant",
		natsauth.Groups:   "sb.fn.groups.create",
	}
	for role, subject := range asked {
		fn := n.Connect(t, role)
		reqs, err := fn.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		if err := fn.Flush(); err != nil {
			t.Fatal(err)
		}
		// A hostile reply subject: the answer must be refused.
		hostile := []string{"$KV.CURSORS.bob.phone", "sb.kick.bob.phone"}
		if role != natsauth.Groups {
			hostile = append(hostile, "$KV.GROUP_INFO.friends")
		}
		for _, reply := range hostile {
			if err := gw.PublishRequest(subject, reply, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			m, err := reqs.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("%s: %v", role, err)
			}
			if err := m.Respond([]byte("{}")); err != nil {
				t.Fatal(err)
			}
			if err := fn.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := fn.LastError(); !errors.Is(got, nats.ErrPermissionViolation) || !strings.Contains(got.Error(), `"`+reply+`"`) {
				t.Errorf("%s answered into %q: last error %v", role, reply, got)
			}
		}
		// The gateway's calls are answered, on their own prefix.
		go func() {
			if m, err := reqs.NextMsg(5 * time.Second); err == nil {
				_ = m.Respond([]byte("ok"))
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := calls.RequestWithContext(ctx, subject, []byte("{}"))
		cancel()
		if err != nil || string(got.Data) != "ok" {
			t.Errorf("%s: gateway's call not answered: %v", role, err)
		}
	}
}

// A function answers a gateway's calls on their own prefix, and may not
// publish where JetStream answers the gateway: else one never asked could
// forge a PubAck (a message the gateway would answer "sent" and never
// stored) or a stream read's answer, whose reply subjects the gateway
// names predictably.
func TestFunctionsMayNotForgeGatewaysJetStreamAnswers(t *testing.T) {
	n := tk.StartStreams(t, t.TempDir())
	gw := n.Connect(t, natsauth.Gateway)
	reply := gw.NewInbox() + ".1.q1.0" // as gateway/replies.go names a PubAck
	acks, err := gw.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, role := range []natsauth.Role{natsauth.Receipts, natsauth.Presence, natsauth.Push, natsauth.Media, natsauth.Groups} {
		fn := n.Connect(t, role)
		if err := fn.Publish(reply, []byte(`{"stream":"INBOX","seq":424242}`)); err != nil {
			t.Fatal(err)
		}
		if err := fn.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := fn.LastError(); !errors.Is(got, nats.ErrPermissionViolation) || !strings.Contains(got.Error(), `"`+reply+`"`) {
			t.Errorf("%s may publish on a gateway's JetStream reply %s: last error %v", role, reply, got)
		}
	}
	// Refused at the server: nothing reached the gateway. Its own
	// publish there is the fence.
	if err := gw.Publish(reply, []byte("fence")); err != nil {
		t.Fatal(err)
	}
	if m, err := acks.NextMsg(5 * time.Second); err != nil || string(m.Data) != "fence" {
		t.Fatalf("the gateway's reply got %v (%v), want only the fence", m, err)
	}
}
