package bench

import (
	"context"
	"os"
	"runtime/pprof"
	"sync"
)

// StartCPUProfile writes a CPU profile of this process to path, for `kstate bench exec
// --cpuprofile`. The profile ends when ctx ends (when shutdown begins, so that a slow shutdown
// neither pads nor loses it) or when the returned function is called, whichever comes first; call
// the function before the process exits.
func StartCPUProfile(ctx context.Context, path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	stopProfile := func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			stopProfile()
		case <-done:
		}
	}()
	return func() {
		close(done)
		stopProfile()
	}, nil
}
