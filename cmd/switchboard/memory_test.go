package main_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/gateway"
	"github.com/switchboard-im/switchboard/protocol"
)

// rssBytes reads a process's resident set size from /proc.
func rssBytes(tb testing.TB, pid int) float64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// BenchmarkIdleDeviceMemory connects idle devices (distinct users, each
// with its durable consumer) to the all-in-one binary, built without the
// race detector, and reports its resident memory per device: gateway and
// NATS together, as QUALITY.md's P3 counts it.
func BenchmarkIdleDeviceMemory(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Fatal("reads /proc: linux only")
	}
	const devices = 2000
	bin := filepath.Join(b.TempDir(), "switchboard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	for range b.N {
		data := b.TempDir()
		p := startBinary(b, bin, "--data", data, "--nats-listen", "127.0.0.1:0")
		secret, err := os.ReadFile(filepath.Join(data, "jwt.secret"))
		if err != nil {
			b.Fatal(err)
		}
		keys, err := gateway.NewHS256Keys([]byte(strings.TrimSpace(string(secret))))
		if err != nil {
			b.Fatal(err)
		}
		before := rssBytes(b, p.cmd.Process.Pid)
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
		conns := make([]*websocket.Conn, 0, devices)
		start := time.Now()
		for i := range devices {
			tok, _ := keys.Mint(fmt.Sprintf("u%05d", i), "phone", time.Hour, time.Now(), gateway.TokenRules{})
			ws, _, err := d.Dial(p.WSURL, http.Header{"Authorization": {"Bearer " + tok}})
			if err != nil {
				b.Fatalf("device %d: %v", i, err)
			}
			if _, _, err := ws.ReadMessage(); err != nil { // welcome: consumer ready
				b.Fatal(err)
			}
			conns = append(conns, ws)
		}
		elapsed := time.Since(start)
		after := rssBytes(b, p.cmd.Process.Pid)
		b.ReportMetric((after-before)/devices, "B/device")
		b.ReportMetric(devices/elapsed.Seconds(), "connects/s")
		for _, c := range conns {
			c.Close()
		}
		p.kill()
	}
}
