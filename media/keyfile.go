package media

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadOrCreateSigningKey reads the embedded store's signing key from path
// (hex), making a random one there (0600) on first use. Media instances on
// other machines need a copy of the same file.
func LoadOrCreateSigningKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		// Written whole beside it, then linked into place: a process
		// starting at the same time never reads a key half written, and
		// a crash never leaves an empty file that fails every start.
		tmp, err := os.CreateTemp(filepath.Dir(path), ".media.key-*") // 0600
		if err != nil {
			return nil, err
		}
		defer os.Remove(tmp.Name())
		_, werr := tmp.WriteString(hex.EncodeToString(raw) + "\n")
		if serr := tmp.Sync(); werr == nil {
			werr = serr
		}
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, werr
		}
		err = os.Link(tmp.Name(), path)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreateSigningKey(path) // made meanwhile by another process
		}
		if err != nil {
			return nil, err
		}
		return raw, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("media: %s does not hold a signing key (at least 32 bytes, hex)", path)
	}
	return key, nil
}
