//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockDataDir takes an exclusive lock on dir (the file dir/kstate.lock, holding our pid) for as
// long as the process runs or until release: two `kstate dev` on one data dir would each run an
// embedded broker over the same files, and the second one's shutdown would overwrite the
// first's data.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, "kstate.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		_ = f.Close()
		who := "another kstate"
		if pid := strings.TrimSpace(string(b)); pid != "" {
			who += " (pid " + pid + ")"
		}
		return nil, fmt.Errorf("--data-dir %s is in use by %s: stop it, or choose another --data-dir", dir, who)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { _ = f.Close() }, nil // closing the file releases the lock
}
