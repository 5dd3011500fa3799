package processor

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// http2Preface opens every HTTP/2 connection with prior knowledge (RFC 9113 §3.4), which is how
// gRPC clients talk cleartext.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// splitListener shares one port between gRPC and HTTP/1.1: each accepted connection is routed by
// its first bytes — the HTTP/2 preface to the native gRPC server (grpc-go's fast path), anything
// else to the HTTP/JSON front door (vanguard, gRPC-Web, Connect). HTTP/2 clients that are not gRPC
// reach the gRPC server; REST over HTTP/2 cleartext is therefore not served (browsers never use
// it; curl does only with --http2-prior-knowledge).
type splitListener struct {
	lis       net.Listener
	h2, h1    *chanListener
	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

func newSplitListener(lis net.Listener) *splitListener {
	s := &splitListener{lis: lis, done: make(chan struct{})}
	s.h2 = &chanListener{addr: lis.Addr(), conns: make(chan net.Conn), done: s.done}
	s.h1 = &chanListener{addr: lis.Addr(), conns: make(chan net.Conn), done: s.done}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *splitListener) accept() {
	defer s.wg.Done()
	for {
		c, err := s.lis.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.Close()
			return
		}
		s.wg.Add(1)
		go func() { // one per connection until its first bytes are read (bounded by a deadline)
			defer s.wg.Done()
			s.route(c)
		}()
	}
}

func (s *splitListener) route(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(http2Preface))
	n, err := io.ReadFull(c, buf)
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, head: buf[:n]}
	target := s.h1
	if err == nil && bytes.Equal(buf, http2Preface) {
		target = s.h2
	} else if n == 0 {
		_ = c.Close()
		return
	}
	select {
	case target.conns <- pc:
	case <-s.done:
		_ = c.Close()
	}
}

// Close stops accepting; connections already handed over belong to their servers.
func (s *splitListener) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.lis.Close()
	})
}

// chanListener is a net.Listener fed by splitListener.
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
