package frontdoor

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// http2Preface opens every HTTP/2 connection with prior knowledge (RFC 9113 §3.4), which is how
// gRPC clients talk cleartext.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Accept and sniff bounds of the split listener.
const (
	// sniffTimeout bounds how long a new connection may stay silent, or stop inside the HTTP/2
	// preface, before it is classified: a silent one is closed, a partial preface goes to HTTP/1.
	sniffTimeout = 10 * time.Second
	// minAcceptDelay and maxAcceptDelay bound the back-off after a temporary accept error, the
	// values of net/http.Server.Serve.
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// SplitListener shares one port between gRPC and HTTP/1.1: each accepted connection is routed by
// its first bytes — the HTTP/2 preface to the native gRPC server (grpc-go's fast path), anything
// else to the HTTP/JSON front door (vanguard, gRPC-Web, Connect). HTTP/2 clients that are not gRPC
// reach the gRPC server; REST over HTTP/2 cleartext is therefore not served (browsers never use
// it; curl does only with --http2-prior-knowledge).
//
// A connection is classified as soon as its bytes so far cannot begin the preface (the first byte
// of an HTTP/1 request already rules it out), so short requests never wait. Accept errors that are
// temporary (out of file descriptors, a connection aborted before it was accepted) are retried with
// the back-off of net/http.Server.Serve; any other error closes the listener.
//
// With TLS (NewTLSSplitListener) nothing is split by bytes: see there.
type SplitListener struct {
	lis       net.Listener
	h2, h1    *chanListener
	sniff     time.Duration
	tls       *tls.Config // nil: plaintext, split by the first bytes
	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
	log       hclog.Logger
}

// NewSplitListener starts splitting lis: HTTP/2 connections are accepted from GRPC, the others from
// HTTP.
// Accept errors go to log: a temporary one (retried) at WARN, one that closes the listener at
// ERROR; nil discards them.
func NewSplitListener(lis net.Listener, log hclog.Logger) *SplitListener {
	return startSplitListener(lis, sniffTimeout, log)
}

// NewTLSSplitListener serves TLS on lis: each accepted connection completes its handshake with
// cfg (within the sniff timeout, 10 s, and interrupted by Close) before HTTP accepts it, as a
// *tls.Conn, so net/http picks HTTP/2 or HTTP/1.1 by ALPN and fills Request.TLS. Every TLS
// connection goes to HTTP; GRPC yields none. Native gRPC requests then reach the gRPC server
// through the front door's handler (grpc.Server.ServeHTTP, see NewHTTPHandler), because one
// HTTP/2 connection may carry gRPC and REST, gRPC-Web or Connect requests, which a browser always
// sends over TLS HTTP/2. cfg must offer "h2" and "http/1.1" in NextProtos.
//
// A failed handshake closes the connection, logged at DEBUG (scanners and plaintext clients are
// not the operator's problem). A client that sent a plaintext HTTP/1 request gets net/http's
// answer first: "400 Bad Request", "Client sent an HTTP request to an HTTPS server."
func NewTLSSplitListener(lis net.Listener, cfg *tls.Config, log hclog.Logger) *SplitListener {
	return startTLSSplitListener(lis, cfg, sniffTimeout, log)
}

func startTLSSplitListener(lis net.Listener, cfg *tls.Config, handshake time.Duration, log hclog.Logger) *SplitListener {
	s := newSplitListener(lis, handshake, log)
	s.tls = cfg
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *SplitListener) logger() hclog.Logger {
	if s.log == nil {
		return hclog.NewNullLogger()
	}
	return s.log
}

// startSplitListener starts splitting lis, closing or classifying connections that stay silent
// for sniff.
func startSplitListener(lis net.Listener, sniff time.Duration, log hclog.Logger) *SplitListener {
	s := newSplitListener(lis, sniff, log)
	s.wg.Add(1)
	go s.accept()
	return s
}

func newSplitListener(lis net.Listener, sniff time.Duration, log hclog.Logger) *SplitListener {
	s := &SplitListener{lis: lis, sniff: sniff, done: make(chan struct{}), log: log}
	s.h2 = &chanListener{addr: lis.Addr(), conns: make(chan net.Conn), done: s.done}
	s.h1 = &chanListener{addr: lis.Addr(), conns: make(chan net.Conn), done: s.done}
	return s
}

func (s *SplitListener) accept() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.lis.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if !temporaryAcceptError(err) {
				s.logger().Error("accept failed; the public port is closed", "error", err)
				s.Close()
				return
			}
			delay = nextAcceptDelay(delay)
			s.logger().Warn("accept failed; retrying", "error", err, "after", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		s.wg.Add(1)
		go func() { // one per connection until its first bytes are read (bounded by s.sniff)
			defer s.wg.Done()
			s.route(c)
		}()
	}
}

// nextAcceptDelay returns the back-off after an accept error that follows a delay of d (0 after a
// success): 5 ms, doubling up to 1 s.
func nextAcceptDelay(d time.Duration) time.Duration {
	if d == 0 {
		return minAcceptDelay
	}
	return min(2*d, maxAcceptDelay)
}

// temporaryAcceptError reports whether an Accept error leaves the listener usable: a timeout, a
// shortage of file descriptors or buffers, or a connection reset or aborted before it was accepted
// (the errors net/http.Server.Serve retries, without the deprecated net.Error.Temporary).
func temporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *SplitListener) route(c net.Conn) {
	sniffed := make(chan struct{})
	go func() { // Close interrupts the sniff (or the handshake) rather than wait it out
		select {
		case <-s.done:
			_ = c.SetDeadline(time.Now())
		case <-sniffed:
		}
	}()
	if s.tls != nil {
		tc, ok := s.handshake(c)
		close(sniffed)
		if ok {
			s.deliver(s.h1, tc)
		}
		return
	}
	head, h2 := sniffPreface(c, s.sniff)
	close(sniffed)
	if len(head) == 0 {
		_ = c.Close() // silent for s.sniff, or closed before sending anything
		return
	}
	target := s.h1
	if h2 {
		target = s.h2
	}
	s.deliver(target, &peekedConn{Conn: c, head: head})
}

// deliver hands c to the server accepting from l, or closes it when the listener closes first.
func (s *SplitListener) deliver(l *chanListener, c net.Conn) {
	select {
	case l.conns <- c:
	case <-s.done:
		_ = c.Close()
	}
}

// handshake runs the server side of a TLS handshake on c within s.sniff. On failure c is closed,
// after net/http's 400 answer when the client spoke plaintext HTTP/1.
func (s *SplitListener) handshake(c net.Conn) (*tls.Conn, bool) {
	tc := tls.Server(c, s.tls)
	_ = c.SetDeadline(time.Now().Add(s.sniff))
	err := tc.Handshake()
	_ = c.SetDeadline(time.Time{})
	if err == nil {
		return tc, true
	}
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		err = errors.New("client sent an HTTP request to an HTTPS server")
	}
	s.logger().Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
	_ = c.Close()
	return nil, false
}

// looksLikeHTTP reports whether the first five bytes of a connection that did not start a TLS
// handshake are those of a plaintext HTTP/1 request (net/http's test).
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// sniffPreface reads c until its first bytes are the whole HTTP/2 preface, or cannot begin it
// any more, or timeout passes, and returns the bytes read and whether they are the preface.
func sniffPreface(c net.Conn, timeout time.Duration) (head []byte, h2 bool) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, len(http2Preface))
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if !bytes.Equal(buf[:n], http2Preface[:n]) || err != nil {
			return buf[:n], false
		}
	}
	return buf, true
}

// GRPC returns the listener of HTTP/2 (gRPC) connections.
func (s *SplitListener) GRPC() net.Listener { return s.h2 }

// HTTP returns the listener of HTTP/1 connections (the REST front door).
func (s *SplitListener) HTTP() net.Listener { return s.h1 }

// Wait returns once the accept loop and every classification in progress have ended (after Close).
func (s *SplitListener) Wait() { s.wg.Wait() }

// Close stops accepting and closes connections still being classified; connections already
// handed over belong to their servers.
func (s *SplitListener) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.lis.Close()
	})
}

// chanListener is a net.Listener fed by SplitListener.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// peekedConn replays the bytes read to classify the connection.
type peekedConn struct {
	net.Conn
	head []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
