package gateway_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/client"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/protocol"
)

// runHandover sends a stream of messages from alice to bob through a proxy
// while stop takes the first gateway away; the proxy then leads to a second
// gateway. Every message acked as "sent" must reach bob once, in order.
func runHandover(t *testing.T, stop func(g *tk.Gateway), wantClose func(code int) bool) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.SendRate, cfg.SendBurst = 10000, 10000
	g1 := tk.StartGateway(t, n, cfg)
	g2 := tk.StartGateway(t, n, cfg)
	proxy := tk.StartProxy(t, g1.Addr)
	url := "ws://" + proxy.Addr + "/v1/ws"

	closes := make(chan int, 16)
	onDisc := func(o *client.Options) {
		o.OnDisconnect = func(err error) {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				closes <- ce.Code
			} else {
				closes <- 0
			}
		}
	}
	alice := tk.Dial(t, url, "alice", "phone", onDisc)
	bob := tk.Dial(t, url, "bob", "phone")

	acked := tk.SendStream(t, alice, "bob", 300, 16, func(i int) {
		if i == 150 {
			proxy.SetTarget(g2.Addr)
			stop(g1)
		}
	})
	if t.Failed() {
		return
	}
	select {
	case code := <-closes:
		if !wantClose(code) {
			t.Fatalf("alice's connection closed with code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alice's connection never closed")
	}
	tk.ExpectOnceInOrder(t, bob, acked, alice, "bob")
}

func TestGracefulShutdownHandsOverWithNothingLost(t *testing.T) {
	runHandover(t, func(g *tk.Gateway) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Server.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}, func(code int) bool {
		// 1012 as a rule; a drop when the socket was reset under the
		// close frame: alice keeps sending, and a socket closed with
		// unread input is reset. That 1012 is sent to an idle client is
		// TestGracefulShutdownSendsServiceRestart's (cmd/switchboard).
		return code == protocol.CloseServiceRestart || code == 0 || code == websocket.CloseAbnormalClosure
	})
}

func TestGatewayCrashHandsOverWithNothingLost(t *testing.T) {
	// A crash sends no close frame: the client sees the connection drop.
	runHandover(t, func(g *tk.Gateway) { g.Kill() }, func(code int) bool {
		return code == 0 || code == websocket.CloseAbnormalClosure
	})
}
