package push

import (
	"bytes"
	"errors"
	"flag"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var sample = Notification{User: "bob", Device: "phone", MessageID: "m-1", From: "alice", Pending: 3, Seq: 42, TS: 1795582349000}

// golden compares the request's exact bytes on the wire with
// testdata/<name>.golden.
func golden(t *testing.T, name string, req *http.Request) {
	t.Helper()
	got, err := httputil.DumpRequestOut(req, true)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s\n got:\n%s\nwant:\n%s", name, path, got, want)
	}
}

func TestFCMRequest(t *testing.T) {
	req, err := FCMRequest("switchboard-demo", "fcm-device-token:APA91b", "ya29.test-access-token", sample)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "fcm", req)

	for _, bad := range [][3]string{
		{"Bad_Project", "tok", "acc"},
		{"p", "", "acc"},
		{"p", "tok", ""},
		{"p", "tok", "acc\r\nX-Evil: 1"},
	} {
		if _, err := FCMRequest(bad[0], bad[1], bad[2], sample); !errors.Is(err, ErrProvider) {
			t.Errorf("FCMRequest%q: err = %v", bad, err)
		}
	}
}

func TestAPNsRequest(t *testing.T) {
	req, err := APNsRequest("im.switchboard.app", "5a1f0c3e9b7d2a4c6e8f0a1b3c5d7e9f5a1f0c3e9b7d2a4c6e8f0a1b3c5d7e9f", sample)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "apns", req)

	for _, bad := range [][2]string{{"", "abcd"}, {"im.switchboard.app", "../../x"}, {"im.switchboard.app", ""}} {
		if _, err := APNsRequest(bad[0], bad[1], sample); !errors.Is(err, ErrProvider) {
			t.Errorf("APNsRequest%q: err = %v", bad, err)
		}
	}
	odd := sample
	odd.User = "a.b"
	if _, err := APNsRequest("im.switchboard.app", "abcd", odd); !errors.Is(err, ErrProvider) {
		t.Errorf("a user that cannot be a collapse id: err = %v", err)
	}
}
