package main_test

import (
	"strings"
	"testing"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
)

// A gateway process is killed with kill -9 while a sender is mid-stream. A
// new gateway takes over on the same NATS: every message acked as "sent"
// reaches the recipient once, in stored order.
func TestGatewayKilledUnderLoadLosesNothing(t *testing.T) {
	data := t.TempDir()
	core := start(t, "--data", data, "--nats-listen", "127.0.0.1:0")
	gwArgs := []string{"gateway", "--nats", core.NATSURL, "--data", data, "--send-rate", "10000", "--send-burst", "10000"}
	gw1 := start(t, gwArgs...)
	proxy := tk.StartProxy(t, strings.TrimPrefix(strings.TrimSuffix(gw1.WSURL, "/v1/ws"), "ws://"))
	url := "ws://" + proxy.Addr + "/v1/ws"

	alice := tk.DialToken(t, url, token(t, data, "alice", "phone"))
	bob := tk.DialToken(t, url, token(t, data, "bob", "phone"))

	gw2URL := make(chan string, 1)
	acked := tk.SendStream(t, alice, "bob", 400, 32, func(i int) {
		if i == 400/3 {
			// Kill mid-stream and bring up a replacement behind the proxy.
			gw1.kill()
			proxy.DropAll()
			gw2 := start(t, gwArgs...)
			proxy.SetTarget(strings.TrimPrefix(strings.TrimSuffix(gw2.WSURL, "/v1/ws"), "ws://"))
			gw2URL <- gw2.WSURL
		}
	})
	<-gw2URL
	if t.Failed() {
		return
	}
	tk.ExpectOnceInOrder(t, bob, acked, alice, "bob")
}

// In durable mode (--sync-always: "sent" means fsynced) the whole process,
// nats-server included, is killed with kill -9 mid-stream and restarted
// on the same data dir: every message acked as "sent" is delivered once,
// in stored order.
func TestDurableModeServerKilledLosesNothingSent(t *testing.T) {
	data := t.TempDir()
	args := []string{"--data", data, "--nats-listen", "127.0.0.1:0", "--sync-always", "--send-rate", "10000", "--send-burst", "10000"}
	p1 := start(t, args...)
	hostPort := func(p *proc) string { return strings.TrimPrefix(strings.TrimSuffix(p.WSURL, "/v1/ws"), "ws://") }
	proxy := tk.StartProxy(t, hostPort(p1))
	url := "ws://" + proxy.Addr + "/v1/ws"
	alice := tk.DialToken(t, url, token(t, data, "alice", "phone"))
	bob := tk.DialToken(t, url, token(t, data, "bob", "phone"))

	restarted := make(chan struct{})
	acked := tk.SendStream(t, alice, "bob", 200, 16, func(i int) {
		if i == 80 {
			p1.kill()
			proxy.DropAll()
			p2 := start(t, args...)
			proxy.SetTarget(hostPort(p2))
			close(restarted)
		}
	})
	<-restarted
	if t.Failed() {
		return
	}
	tk.ExpectOnceInOrder(t, bob, acked, alice, "bob")
}
