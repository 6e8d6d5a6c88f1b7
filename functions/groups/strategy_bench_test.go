package groups_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/internal/natsauth"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// BenchmarkFanOutStrategies measures the three ways a group message can
// reach its members, on the server's side of a gateway: what JetStream
// stores and publishes until a gateway holds the message for each
// member's session. The WebSocket frame to each member's device, its ack
// and the member's position are the same work in every strategy and are
// left out, so these figures bound what each strategy can give; P7 in
// the README measures the whole path of the one in use.
//
//   - raw: one plain 256-byte message stored per member delivery, no
//     headers: the baseline of the same run.
//   - copies (in use): the fan-out's copy per member, with its headers
//     and dedup id, in the member's inbox, reaching the gateway as the
//     inbox's live copy.
//   - references: the body stored once in the group's log and a copy
//     per member without it; the gateway reads each body once (a direct
//     get) and gives it to every member holding a reference.
//   - log: the message stored once in the group's log and published once
//     to the gateway, which gives it to every member it serves (members
//     read the group's log; positions per group per device).
//
// Each group message's member writes are published without waiting for
// each other, at most 256 unconfirmed, as the fan-out does, and the next
// message starts when they are stored.
func BenchmarkFanOutStrategies(b *testing.B) {
	for _, size := range []int{10, 100, 1024} {
		for _, strategy := range []string{"raw", "copies", "references", "log"} {
			b.Run(fmt.Sprintf("members=%d/%s", size, strategy), func(b *testing.B) {
				benchStrategy(b, size, strategy)
			})
		}
	}
}

func benchStrategy(b *testing.B, size int, strategy string) {
	n := tk.StartStreams(b, b.TempDir())
	ctx := context.Background()
	const gid = "bench"
	members := make([]string, size)
	for i := range members {
		members[i] = "m" + strconv.Itoa(i)
	}
	body := bytes.Repeat([]byte("x"), 256)
	const logLive = "bench.glive"
	if strategy == "log" {
		// The group's log published to gateways as it is stored, as
		// INBOX publishes members' copies.
		st, err := n.JS.Stream(ctx, contract.GroupsStream)
		if err != nil {
			b.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.RePublish = &jetstream.RePublish{Source: contract.GroupMsgSubject(gid), Destination: logLive}
		if _, err := n.JS.UpdateStream(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}

	// The gateway: one connection, as a gateway's router has.
	gw, err := nats.Connect(n.Server.ClientURL(), n.Keys.Options(natsauth.Operator)...)
	if err != nil {
		b.Fatal(err)
	}
	defer gw.Close()
	var delivered atomic.Int64
	want := int64(b.N) * int64(size)
	done := make(chan struct{})
	deliver := func(k int) {
		if delivered.Add(int64(k)) == want {
			close(done)
		}
	}
	var sub *nats.Subscription
	switch strategy {
	case "raw", "copies":
		sub, err = gw.Subscribe(contract.LivePrefix+"*", func(m *nats.Msg) {
			if len(m.Data) == 0 {
				b.Error("a copy without its body")
			}
			deliver(1)
		})
	case "references":
		gjs, jerr := jetstream.New(gw)
		if jerr != nil {
			b.Fatal(jerr)
		}
		groups, jerr := gjs.Stream(ctx, contract.GroupsStream)
		if jerr != nil {
			b.Fatal(jerr)
		}
		// Bodies read once per message; the subscription's handler runs
		// on one goroutine, so the cache needs no lock.
		bodies := map[uint64][]byte{}
		sub, err = gw.Subscribe(contract.LivePrefix+"*", func(m *nats.Msg) {
			seq, _ := strconv.ParseUint(m.Header.Get(contract.HdrGroupSeq), 10, 64)
			if _, ok := bodies[seq]; !ok {
				rm, gerr := groups.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(contract.GroupMsgSubject(gid)))
				if gerr != nil {
					b.Error(gerr)
					return
				}
				bodies[seq] = rm.Data
			}
			deliver(1)
		})
	case "log":
		sub, err = gw.Subscribe(logLive, func(m *nats.Msg) {
			if len(m.Data) == 0 {
				b.Error("a message without its body")
			}
			// Each member's session is given the message.
			deliver(size)
		})
	}
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatal(err)
	}
	if err := gw.Flush(); err != nil {
		b.Fatal(err)
	}

	// The fan-out: one connection, one message at a time.
	fn, err := nats.Connect(n.Server.ClientURL(), n.Keys.Options(natsauth.Operator)...)
	if err != nil {
		b.Fatal(err)
	}
	defer fn.Close()
	const inFlight = 256
	js, err := jetstream.New(fn, jetstream.WithPublishAsyncMaxPending(inFlight+64))
	if err != nil {
		b.Fatal(err)
	}
	var pending []jetstream.PubAckFuture
	wait := func(f jetstream.PubAckFuture) {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		case <-time.After(30 * time.Second):
			b.Fatal("no ack in 30 s")
		}
	}
	publish := func(m *nats.Msg) {
		if len(pending) == inFlight {
			wait(pending[0])
			pending = pending[1:]
		}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			b.Fatal(err)
		}
		pending = append(pending, f)
	}
	settle := func() {
		for _, f := range pending {
			wait(f)
		}
		pending = pending[:0]
	}
	store := func(m *nats.Msg) uint64 {
		a, err := js.PublishMsg(ctx, m)
		if err != nil {
			b.Fatal(err)
		}
		return a.Sequence
	}
	groupMsg := func(i int) *nats.Msg {
		return &nats.Msg{Subject: contract.GroupMsgSubject(gid), Data: body, Header: nats.Header{
			contract.HdrMsgID:  {"g:" + strconv.Itoa(i)},
			contract.HdrFrom:   {"sender"},
			contract.HdrDevice: {"phone"},
			contract.HdrID:     {"id-" + strconv.Itoa(i)},
			contract.HdrTS:     {"1796470374000"},
		}}
	}
	copyMsg := func(i int, seq uint64, member string, data []byte) *nats.Msg {
		return &nats.Msg{Subject: contract.InboxSubject(member), Data: data, Header: nats.Header{
			contract.HdrMsgID:    {contract.GroupCopyDedupID(gid, seq, member)},
			contract.HdrKind:     {contract.KindMsg},
			contract.HdrFrom:     {"sender"},
			contract.HdrDevice:   {"phone"},
			contract.HdrID:       {"id-" + strconv.Itoa(i)},
			contract.HdrTS:       {"1796470374000"},
			contract.HdrGroup:    {gid},
			contract.HdrGroupSeq: {strconv.FormatUint(seq, 10)},
		}}
	}

	b.ResetTimer()
	start := time.Now()
	var writes int64
	for i := range b.N {
		switch strategy {
		case "raw":
			for _, u := range members {
				publish(&nats.Msg{Subject: contract.InboxSubject(u), Data: body})
			}
			writes += int64(size)
		case "copies":
			// In use, the message is stored in the group's log by the
			// gateway first; the fan-out reads it from there.
			seq := store(groupMsg(i))
			for _, u := range members {
				publish(copyMsg(i, seq, u, body))
			}
			writes += 1 + int64(size)
		case "references":
			seq := store(groupMsg(i))
			for _, u := range members {
				publish(copyMsg(i, seq, u, nil))
			}
			writes += 1 + int64(size)
		case "log":
			publish(groupMsg(i))
			writes++
		}
		settle()
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d member deliveries in a minute", delivered.Load(), want)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(want)/el.Seconds(), "deliveries/s")
	b.ReportMetric(float64(writes)/float64(want), "writes/delivery")
	b.ReportMetric(0, "ns/op")
}
