package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Processes starting together on one data directory all take the one
// token secret one of them made, and leave nothing else beside it.
func TestTokenSecretMadeByOneOfManyStarting(t *testing.T) {
	for round := range 20 {
		dir := t.TempDir()
		errs := make([]error, 16)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c := appConfig{DataDir: dir}
				_, errs[i] = loadKeys(&c, true)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: process %d: %v", round, i, err)
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, "jwt.secret"))
		if err != nil || len(strings.TrimSpace(string(b))) != 64 {
			t.Fatalf("round %d: jwt.secret holds %q (%v)", round, b, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("round %d: %d files beside the secret", round, len(ents)-1)
		}
	}
}
