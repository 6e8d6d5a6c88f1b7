package media

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/switchboard-im/switchboard/internal/secretfile"
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
		err := secretfile.Create(path, []byte(hex.EncodeToString(raw)+"\n"))
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
