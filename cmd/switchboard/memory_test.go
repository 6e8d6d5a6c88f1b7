package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/switchboard-im/switchboard/contract"
	"github.com/switchboard-im/switchboard/gateway"
	tk "github.com/switchboard-im/switchboard/internal/testkit"
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

// BenchmarkOfflineDeviceMemory measures the server heap held per offline
// device with a pending message: its DEVICES record, its cursor and the
// message, as the gateway leaves them. Heap figures are after a forced GC,
// from the embedded server's process: straight after the writes, and once
// the file store has let its caches of them go.
func BenchmarkOfflineDeviceMemory(b *testing.B) {
	const devices = 5000
	n := tk.StartNATS(b)
	ctx := context.Background()
	inbox, err := n.JS.Stream(ctx, contract.Inbox)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := n.JS.KeyValue(ctx, contract.DevicesKV)
	if err != nil {
		b.Fatal(err)
	}
	cursors, err := n.JS.KeyValue(ctx, contract.CursorsKV)
	if err != nil {
		b.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	base := heap()
	created := inbox.CachedInfo().Created
	b.ResetTimer()
	for i := range devices {
		user := fmt.Sprintf("u%d", i)
		rec, _ := json.Marshal(contract.Devices{Devices: map[string]*contract.Device{"phone": {Joined: created, Stream: created}}})
		if _, err := kv.Put(ctx, user, rec); err != nil {
			b.Fatal(err)
		}
		ack, err := n.JS.Publish(ctx, contract.InboxSubject(user), []byte(`"hi"`))
		if err != nil {
			b.Fatal(err)
		}
		cur := fmt.Sprintf("%d %d", ack.Sequence-1, created.UnixNano())
		if _, err := cursors.Put(ctx, contract.CursorKey(user, "phone"), []byte(cur)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	fresh := heap()
	// The settled figure waits for the file store to drop its caches of
	// the writes: the heap has fallen 5 % below fresh and then held for
	// three readings (at most 60 s). Once per process, however many times
	// the framework runs the benchmark.
	if offlineSettled == 0 {
		settled, steady := fresh, 0
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		deadline := time.After(60 * time.Second)
	wait:
		for steady < 3 {
			select {
			case <-deadline:
				break wait
			case <-tick.C:
			}
			h := heap()
			if h+h/100 >= settled && settled < fresh-fresh/20 {
				steady++
			} else {
				steady = 0
			}
			settled = min(settled, h)
		}
		offlineSettled = float64(int64(settled)-int64(base)) / devices
	}
	b.ReportMetric(float64(int64(fresh)-int64(base))/devices, "B/device-fresh")
	b.ReportMetric(offlineSettled, "B/device-settled")
}

// offlineSettled is BenchmarkOfflineDeviceMemory's settled figure.
var offlineSettled float64
