package secretfile_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/switchboard-im/switchboard/internal/secretfile"
)

// The file is made whole, 0600, in a folder made 0700 if missing; a
// second Create finds it there and leaves it as it is.
func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "key")
	if err := secretfile.Create(path, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := secretfile.Create(path, []byte("second")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: %v, want fs.ErrExist", err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(b, []byte("first")) {
		t.Fatalf("holds %q (%v)", b, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v)", fi.Mode(), err)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("folder mode %v (%v)", di.Mode(), err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("%d files beside it", len(ents)-1)
	}
}
