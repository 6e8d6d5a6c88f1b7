package gateway_test

import (
	"crypto/rand"
	"io"
	"net/http"
	"testing"
	"time"

	tk "github.com/switchboard-im/switchboard/internal/testkit"
	"github.com/switchboard-im/switchboard/media"
)

// A download from the embedded store to a client that reads steadily but
// needs longer than the server's write timeout for the whole object gets
// all of it: the timeout bounds a stall, not the download. The reader is
// slow on purpose (a pause between reads is the slow link under test, not
// a wait for anything), about 1 MiB/s for 4 MiB under a 1 s timeout.
func TestSlowDownloadIsNotCutOff(t *testing.T) {
	n := tk.StartNATS(t)
	cfg := tk.TestConfig()
	cfg.WriteTimeout = time.Second
	g := tk.StartGateway(t, n, cfg)
	tk.StartMedia(t, n, g, media.DefaultConfig())

	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	var ticket media.Ticket
	if code := mediaHTTP(t, g, "alice", "POST", media.PathUploads, map[string]any{"mime": "image/png", "size": len(data)}, &ticket); code != http.StatusCreated {
		t.Fatalf("ticket: %d", code)
	}
	upload(t, &ticket, data)
	var d media.DownloadURL
	if code := mediaHTTP(t, g, "alice", "GET", media.PathDownload+"?key="+ticket.Key, nil, &d); code != http.StatusOK {
		t.Fatalf("download url: %d", code)
	}
	resp, err := http.Get(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// About 1 MiB/s: steady, but the 4 MiB take longer than 1 s.
	got, buf := 0, make([]byte, 64<<10)
	start := time.Now()
	for {
		k, err := resp.Body.Read(buf)
		got += k
		if err != nil {
			if err != io.EOF {
				t.Logf("read error after %d bytes, %s: %v", got, time.Since(start), err)
			}
			break
		}
		time.Sleep(60 * time.Millisecond) // the slow link is what is tested, not a wait
	}
	if got != len(data) {
		t.Errorf("a steady reader got %d of %d bytes before the download was cut off (%s)", got, len(data), time.Since(start))
	}
}
