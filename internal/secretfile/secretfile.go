// Package secretfile makes a file that holds a secret: written whole
// beside its place and linked into it, so a process starting at the same
// time never reads it half written, and a crash never leaves an empty
// file that fails every start after.
package secretfile

import (
	"os"
	"path/filepath"
)

// Create makes the file at path, mode 0600, holding data. If another
// process made it first, the error matches fs.ErrExist: read theirs.
func Create(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*") // 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if serr := tmp.Sync(); werr == nil {
		werr = serr
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	return os.Link(tmp.Name(), path)
}
