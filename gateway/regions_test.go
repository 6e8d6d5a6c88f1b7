package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/client"
	"github.com/switchboard-im/switchboard/contract"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
	"github.com/switchboard-im/switchboard/streams"
)

// startRegions runs us and eu from deploy/regions, each with its
// functions and a gateway, alice homed in us and bob in eu.
func startRegions(t *testing.T) (*tk.Regions, *tk.Region, *tk.Region) {
	t.Helper()
	rs := tk.StartRegions(t, "us", "eu")
	rs.Apply(t, streams.Options{})
	rs.SetHome(t, "alice", "us")
	rs.SetHome(t, "bob", "eu")
	rs.Start(t, tk.TestConfig())
	return rs, rs.Region("us"), rs.Region("eu")
}

func wantReceipt(t *testing.T, c *client.Client, id, status, by string) client.Receipt {
	t.Helper()
	r := tk.RecvReceipt(t, c, 15*time.Second)
	if r.ID != id || r.Status != status || r.By != by {
		t.Fatalf("receipt %s %s by %s, want %s %s by %s", r.ID, r.Status, r.By, id, status, by)
	}
	return r
}

// Users homed in two regions chat as if in one: "sent" comes from the
// sender's region (an OUTBOX sequence), the message reaches the
// recipient's home inbox across the leaf link, and the delivered and read
// ticks come back naming the messages as the sender knows them.
func TestRegionsChatAcrossRegions(t *testing.T) {
	_, us, eu := startRegions(t)
	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var sent []client.Sent
	for _, id := range []string{"m1", "m2", "m3"} {
		s, err := alice.Send(ctx, "bob", id, tk.Body("hello "+id))
		if err != nil {
			t.Fatal(err)
		}
		if !contract.IsOutboxSeq(s.Seq) {
			t.Fatalf("%s sent at %d: not an OUTBOX sequence", id, s.Seq)
		}
		sent = append(sent, s)
	}
	var got []client.Message
	for _, id := range []string{"m1", "m2", "m3"} {
		m := tk.NextMsgIs(t, bob, "alice", id, 15*time.Second)
		if contract.IsOutboxSeq(m.Seq) {
			t.Fatalf("bob got %s at %d: not an INBOX sequence", id, m.Seq)
		}
		got = append(got, m)
	}
	// One ack for the three: one tick, which names alice's three sends.
	bob.Ack(got[0].Seq)
	bob.Ack(got[1].Seq)
	bob.Ack(got[2].Seq)
	for i, id := range []string{"m1", "m2", "m3"} {
		r := wantReceipt(t, alice, id, protocol.StatusDelivered, "bob")
		if r.Seq != sent[i].Seq {
			t.Fatalf("delivered %s at %d, sent at %d", id, r.Seq, sent[i].Seq)
		}
	}
	// Bob reads up to m2: m1 and m2 are read, m3 not yet.
	bob.Read(got[1].Seq)
	wantReceipt(t, alice, "m1", protocol.StatusRead, "bob")
	wantReceipt(t, alice, "m2", protocol.StatusRead, "bob")

	// And the other way round, through eu's OUTBOX into us.
	s, err := bob.Send(ctx, "alice", "r1", tk.Body("hi alice"))
	if err != nil {
		t.Fatal(err)
	}
	m := tk.NextMsgIs(t, alice, "bob", "r1", 15*time.Second)
	alice.Ack(m.Seq)
	if r := wantReceipt(t, bob, "r1", protocol.StatusDelivered, "alice"); r.Seq != s.Seq {
		t.Fatalf("delivered r1 at %d, sent at %d", r.Seq, s.Seq)
	}
	alice.Read(m.Seq)
	wantReceipt(t, bob, "r1", protocol.StatusRead, "alice")

	// m3's read tick comes only when bob reads it, and it is the next
	// receipt alice gets: nothing else was on its way.
	bob.Read(got[2].Seq)
	wantReceipt(t, alice, "m3", protocol.StatusRead, "bob")
}

// A device is served only in its user's home region: elsewhere the
// handshake is refused with 421 naming the home region's URL, and a user
// with no home region is refused with 403. Sends to a user with no home
// region, or one homed in a region the deployment does not know, are
// refused with bad_field, and media to another region with bad_media;
// the pair that is well configured keeps chatting.
func TestRegionsRefuseWhatHasNoPlace(t *testing.T) {
	rs, us, eu := startRegions(t)
	rs.SetHome(t, "dave", "mars")

	for _, c := range []struct {
		user   string
		status int
		code   string
		url    string
	}{
		{"bob", http.StatusMisdirectedRequest, "wrong_region", eu.Gateway.URL},
		{"carol", http.StatusForbidden, "no_home_region", ""},
		{"dave", http.StatusForbidden, "no_home_region", ""},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+us.Gateway.Addr+"/v1/ws", nil)
		req.Header.Set("Authorization", "Bearer "+tk.Token(t, c.user, "phone", time.Hour))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Code, Message, Region, URL string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != c.status || body.Code != c.code || body.URL != c.url {
			t.Fatalf("%s in us: %d %+v (%v), want %d %s %q", c.user, resp.StatusCode, body, err, c.status, c.code, c.url)
		}
	}
	// The SDK reports the refusal, with the body that says where to go.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, client.Options{URL: us.Gateway.URL, Token: client.WithToken(tk.Token(t, "bob", "phone", time.Hour))})
	var he *client.HandshakeError
	if !errors.As(err, &he) || he.Status != http.StatusMisdirectedRequest || !strings.Contains(he.Body, eu.Gateway.URL) {
		t.Fatalf("bob's SDK in us: %v", err)
	}

	alice := tk.Dial(t, us.Gateway.URL, "alice", "phone")
	bob := tk.Dial(t, eu.Gateway.URL, "bob", "phone")
	for _, to := range []string{"carol", "dave"} {
		_, err := alice.Send(ctx, to, "x-"+to, tk.Body("anyone?"))
		var se *client.ServerError
		if !errors.As(err, &se) || se.Code != protocol.ErrBadField {
			t.Fatalf("send to %s: %v, want bad_field", to, err)
		}
	}
	_, err = alice.SendMedia(ctx, "bob", "pic", protocol.Media{Key: "u/alice/" + strings.Repeat("a", 32), Mime: "image/png", Size: 1,
		SHA256: strings.Repeat("0", 64)}, tk.Body("look"))
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != protocol.ErrBadMedia {
		t.Fatalf("media to another region: %v, want bad_media", err)
	}
	if _, err := alice.Send(ctx, "bob", "m1", tk.Body("still here")); err != nil {
		t.Fatal(err)
	}
	tk.NextMsgIs(t, bob, "alice", "m1", 15*time.Second)
}
