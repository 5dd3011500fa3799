// Package uftest is the examples' shared test of a standalone user-function process: the test
// binary re-runs itself as the user function, discovers it like a proxy, and stops it with SIGTERM.
package uftest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
)

// Main is a user function's TestMain: started as Standalone's child (childEnv=1), it runs the
// program's main; otherwise the tests.
func Main(m *testing.M, childEnv string, main func()) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Standalone starts the test binary as the user function on USER_FUNCTION_HOST/PORT, discovers
// it like a proxy and returns its spec, then stops it with SIGTERM and requires a clean exit.
func Standalone(t *testing.T, childEnv string, check func(*cloudstatepb.EntitySpec)) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a process")
	}
	// A free port: taken from the kernel and released for the child.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "USER_FUNCTION_HOST=127.0.0.1", "USER_FUNCTION_PORT="+strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := cloudstatepb.NewEntityDiscoveryClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	var spec *cloudstatepb.EntitySpec
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		spec, err = client.Discover(ctx, &cloudstatepb.ProxyInfo{ProtocolMinorVersion: 2}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the user function did not answer discovery on %s: %v", addr, err)
		}
	}
	check(spec)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
}
