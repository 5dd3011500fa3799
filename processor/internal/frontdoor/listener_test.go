package frontdoor

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// splitTestAccept accepts one connection from l, failing the test after timeout.
func splitTestAccept(t *testing.T, l net.Listener, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		got <- result{c, err}
	}()
	select {
	case r := <-got:
		return r.c, r.err
	case <-time.After(timeout):
		t.Fatalf("no connection within %v", timeout)
		return nil, nil
	}
}

// splitTestListener is a TCP listener on 127.0.0.1 split by a SplitListener.
func splitTestListener(t *testing.T, wrap func(net.Listener) net.Listener, sniff time.Duration) (*SplitListener, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if wrap != nil {
		lis = wrap(lis)
	}
	s := startSplitListener(lis, sniff, nil)
	t.Cleanup(func() {
		s.Close()
		s.wg.Wait()
	})
	return s, addr
}

func splitTestDial(t *testing.T, addr string, first string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if first != "" {
		if _, err := io.WriteString(c, first); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// splitTestHead reads n bytes from c, the bytes the sniffer replays.
func splitTestHead(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading the replayed bytes: %v", err)
	}
	return string(b)
}

// TestSplitListenerShortRequest proves that a request shorter than the HTTP/2 preface is handed to
// the HTTP/1 server as soon as its first bytes rule the preface out, not after the sniff timeout.
func TestSplitListenerShortRequest(t *testing.T) {
	s, addr := splitTestListener(t, nil, time.Minute)
	for _, req := range []string{
		"GET / HTTP/1.0\r\n\r\n", // 18 bytes
		"PRI * HTTP/1.1",         // the preface's first 9 bytes, then not
	} {
		start := time.Now()
		splitTestDial(t, addr, req)
		sc, err := splitTestAccept(t, s.h1, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%q classified after %v", req, d)
		}
		if got := splitTestHead(t, sc, len(req)); got != req {
			t.Fatalf("replayed %q, want %q", got, req)
		}
		_ = sc.Close()
	}
}

// TestSplitListenerPreface proves that the HTTP/2 preface, even sent a byte at a time, goes to the
// HTTP/2 side with the bytes replayed.
func TestSplitListenerPreface(t *testing.T) {
	s, addr := splitTestListener(t, nil, time.Minute)
	c := splitTestDial(t, addr, "")
	for i := range http2Preface {
		if _, err := c.Write(http2Preface[i : i+1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	sc, err := splitTestAccept(t, s.h2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if got := splitTestHead(t, sc, len(http2Preface)); got != string(http2Preface) {
		t.Fatalf("replayed %q", got)
	}
}

// TestSplitListenerSilent proves that the sniff timeout still bounds a silent connection (closed)
// and one that stops inside the preface (handed to HTTP/1 with what it sent).
func TestSplitListenerSilent(t *testing.T) {
	s, addr := splitTestListener(t, nil, 200*time.Millisecond)
	silent := splitTestDial(t, addr, "")
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a silent connection was not closed: read %d, %v", n, err)
	}

	splitTestDial(t, addr, "PRI * HTTP/2")
	sc, err := splitTestAccept(t, s.h1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if got := splitTestHead(t, sc, 12); got != "PRI * HTTP/2" {
		t.Fatalf("replayed %q", got)
	}
}

// TestSplitListenerCloseWhileSniffing proves that Close does not wait out the sniff timeout of a
// silent connection.
func TestSplitListenerCloseWhileSniffing(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := startSplitListener(lis, time.Minute, nil)
	c := splitTestDial(t, lis.Addr().String(), "PRI")
	time.Sleep(50 * time.Millisecond) // let the sniff start
	start := time.Now()
	s.Close()
	s.wg.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection being sniffed was not closed: %v", err)
	}
}

// flakyListener fails its first Accept with err, then accepts normally.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	errs  []error
	calls int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls++
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestSplitListenerAcceptRetry proves that a temporary accept error (EMFILE: out of file
// descriptors) does not close the port: the listener backs off and accepts the next connection.
func TestSplitListenerAcceptRetry(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	enfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)}
	fl := &flakyListener{errs: []error{emfile, enfile}}
	s, addr := splitTestListener(t, func(l net.Listener) net.Listener { fl.Listener = l; return fl }, time.Minute)
	splitTestDial(t, addr, "GET / HTTP/1.0\r\n\r\n")
	sc, err := splitTestAccept(t, s.h1, 5*time.Second)
	if err != nil {
		t.Fatalf("after a temporary accept error: %v", err)
	}
	_ = sc.Close()

	// A permanent error still ends the listener.
	fl.mu.Lock()
	fl.errs = []error{errors.New("permanent")}
	fl.mu.Unlock()
	// The Accept already waiting returns this connection (silent: it waits out the sniff timeout);
	// the next one gets the error.
	splitTestDial(t, addr, "")
	if _, err := splitTestAccept(t, s.h1, 5*time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after a permanent accept error: %v, want net.ErrClosed", err)
	}
}

func TestSplitListenerAcceptBackoff(t *testing.T) {
	var d time.Duration
	var got []time.Duration
	for range 10 {
		d = nextAcceptDelay(d)
		got = append(got, d)
	}
	var want []time.Duration
	for _, ms := range []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000} {
		want = append(want, ms*time.Millisecond)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	for _, err := range []error{
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)},
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)},
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)},
		os.ErrDeadlineExceeded,
	} {
		if !temporaryAcceptError(err) {
			t.Errorf("%v is not temporary", err)
		}
	}
	for _, err := range []error{net.ErrClosed, errors.New("x"), &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EINVAL)}} {
		if temporaryAcceptError(err) {
			t.Errorf("%v is temporary", err)
		}
	}
}
