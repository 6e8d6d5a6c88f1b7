//go:build linux

package localstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

const fsizeEnv = "LOCALSTORE_TEST_CHILD_FSIZE"

// fsizeChild runs in a child process whose files may not grow past a
// limit (RLIMIT_FSIZE), as on a full disk: it fills the store until a
// write fails, then checks what is left, and prints what it found.
func fsizeChild(path string) {
	signal.Ignore(syscall.SIGXFSZ) // the write fails with EFBIG instead
	s, err := Open(path)
	if err != nil {
		fmt.Println("open:", err)
		return
	}
	lim := syscall.Rlimit{Cur: 256 << 10, Max: 256 << 10}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		return
	}
	body := json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)
	stored := 0
	for ; stored < 10_000; stored++ {
		if err = s.AddOutgoing(Outgoing{ID: fmt.Sprintf("m%d", stored), To: "bob", Body: body}); err != nil {
			break
		}
	}
	ob, oerr := s.Outbox()
	fmt.Printf("stored %d outbox %d outboxErr %v clear %v err %v\n", stored, len(ob), oerr, errors.Is(err, ErrDiskFull) || errors.Is(err, ErrIO), err)
	s.Close()
}

// A store whose file cannot grow (a file size limit in a child process;
// a write past it fails with EFBIG, which SQLite reports as an I/O error
// where ENOSPC would be SQLITE_FULL) fails the write with ErrIO, keeps
// every write made before, and opens afterwards with all of them.
func TestFileSizeLimitFailsClearlyAndKeepsEarlierWrites(t *testing.T) {
	path := tmpPath(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fsizeEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	t.Logf("child: %s", out)
	var stored, outbox int
	var oerr, full string
	if _, err := fmt.Sscanf(string(out), "stored %d outbox %d outboxErr %s clear %s", &stored, &outbox, &oerr, &full); err != nil {
		t.Fatalf("child said %q (%v)", out, err)
	}
	if full != "true" || oerr != "<nil>" || outbox != stored || stored == 0 {
		t.Fatalf("child: %s", out)
	}
	s := openT(t, path)
	if ob, err := s.Outbox(); err != nil || len(ob) != stored {
		t.Fatalf("reopened after the full disk: %d sends, want %d (%v)", len(ob), stored, err)
	}
}
