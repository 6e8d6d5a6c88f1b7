package testkit

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MinIOVersion is the MinIO server Taskfile.yml's tools:minio task builds.
// The server is AGPL: it is only ever run as an outside test tool, never
// imported or listed in go.mod.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// MinIO is a MinIO server started for one test.
type MinIO struct {
	// Endpoint is host:port of the S3 API on loopback.
	Endpoint  string
	AccessKey string
	SecretKey string
	// Dir holds the server's data.
	Dir string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	out  *lockedBuffer
}

// MinIOServer returns the path of the pinned MinIO server, failing the test
// with the command that installs it when it is missing.
func MinIOServer(t testing.TB) string {
	t.Helper()
	p := filepath.Join(ToolsDir(), "minio-"+MinIOVersion, "minio")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the MinIO server %s is not installed at %s; run `go tool -modfile=tools/go.mod task tools` "+
			"(the README's test command does this)", MinIOVersion, p)
	}
	return p
}

// StartMinIO starts a MinIO server on free loopback ports with its data in a
// temp dir, waits until it reports itself live, and stops it at the end of
// the test.
//
// The ports are found by listening on :0 and closing, so another process
// can take one before MinIO binds it; a server that exits during start-up
// is therefore retried on fresh ports a few times.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	bin := MinIOServer(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		m, err := startMinIO(bin, t.TempDir())
		if err == nil {
			t.Cleanup(m.Stop)
			return m
		}
		lastErr = err
	}
	t.Fatalf("minio did not start: %v", lastErr)
	return nil
}

func startMinIO(bin, dir string) (*MinIO, error) {
	api, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &MinIO{
		Endpoint:  api,
		AccessKey: "switchboard",
		SecretKey: "switchboard-test-secret",
		Dir:       dir,
		done:      make(chan struct{}),
		out:       &lockedBuffer{},
	}
	m.cmd = exec.Command(bin, "server", filepath.Join(dir, "data"), "--address", api, "--console-address", console,
		"--certs-dir", filepath.Join(dir, "certs"))
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_UPDATE=off",
	)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()

	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-m.done:
			return nil, errors.New("minio exited during start-up:\n" + m.out.String())
		default:
		}
		resp, err := hc.Get("http://" + api + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, errors.New("minio not live within 30s:\n" + m.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the server: SIGTERM, then a kill if it has not exited within
// ten seconds. It is safe to call twice.
func (m *MinIO) Stop() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

// freePort returns a loopback host:port that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// lockedBuffer collects a child's output, written from the exec package's
// copying goroutines and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
