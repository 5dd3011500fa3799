package processor

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
)

// userFunctionBackoff bounds the reconnect backoff of the user function's connection at a few
// seconds (gRPC's default grows to two minutes), so a user function that comes back is used, and
// reported healthy, soon after.
var userFunctionBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	MinConnectTimeout: 5 * time.Second,
})

// watchUserFunction follows the state of the connection to a remote user function for the node's
// lifetime: health is NOT_SERVING from the moment the connection fails (TRANSIENT_FAILURE) until
// it is READY again. An idle connection is reconnected at once, so a user function that went away
// is noticed without waiting for a command. In-process entities cannot be unreachable.
func (n *Node) watchUserFunction() {
	if len(n.inproc) > 0 || n.uf == nil {
		return
	}
	conn := n.uf
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			s := conn.GetState()
			switch s {
			case connectivity.Idle:
				conn.Connect()
			case connectivity.TransientFailure:
				n.setUserFunctionDown(true)
			case connectivity.Ready:
				n.setUserFunctionDown(false)
			case connectivity.Shutdown:
				return
			}
			// Connecting keeps the previous verdict: a reconnect attempt proves nothing yet.
			if !conn.WaitForStateChange(n.ctx, s) {
				return
			}
		}
	}()
}

// setUserFunctionDown records whether the user function is unreachable and updates health.
func (n *Node) setUserFunctionDown(down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ufDown == down {
		return
	}
	n.ufDown = down
	if down {
		n.log.Warn("user function unreachable: health NOT_SERVING until it is back", "user_function", n.cfg.UserFunction)
	} else {
		n.log.Info("user function reachable again", "user_function", n.cfg.UserFunction)
	}
	n.updateHealthLocked()
}
