package frontdoor

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Bounds of the HTTP front door (see ServeMux and NewHTTPHandler).
const (
	// httpReadHeaderTimeout bounds the wait for a request's headers.
	httpReadHeaderTimeout = 10 * time.Second
	// httpBodyTimeout bounds the wait for a whole request body, from the end of its headers, for
	// protocols that send one message per request (REST, Connect unary). It ends with the body, so
	// a streamed response may run for as long as it needs.
	httpBodyTimeout = 30 * time.Second
	// httpIdleTimeout closes a keep-alive connection idle for that long.
	httpIdleTimeout = 2 * time.Minute
	// httpMaxHeaderBytes caps the request line and headers of a request; net/http answers 431
	// beyond it (HTTP/1.1) or refuses the stream (HTTP/2). Native gRPC calls on the same port have
	// the same limit (Ingress.ServerOptions).
	httpMaxHeaderBytes = 64 << 10
)

// errBodyTooLarge is what a guarded request body returns once it passes its limit.
var errBodyTooLarge = errors.New("request body too large")

// restBody guards a request body: it fails with errBodyTooLarge once more than its limit has been
// read (without reading much further), and remembers whether that happened or the read deadline
// passed, so that the front door can answer 413 or 408 whatever vanguard made of the read error.
// Reads happen on one goroutine at a time; the flags are read from another.
type restBody struct {
	rc   io.ReadCloser
	left int64 // bytes that may still be read
	over atomic.Bool
	late atomic.Bool
}

func (b *restBody) Read(p []byte) (int, error) {
	if b.over.Load() {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		b.over.Store(true)
		return int(b.left), errBodyTooLarge
	}
	b.left -= int64(n)
	if err != nil && err != io.EOF && isTimeout(err) {
		b.late.Store(true)
	}
	return n, err
}

func (b *restBody) Close() error { return b.rc.Close() }

// tooLarge reports whether the body passed its limit; b may be nil (no body).
func (b *restBody) tooLarge() bool { return b != nil && b.over.Load() }

// timedOut reports whether the read deadline passed before the body ended; b may be nil.
func (b *restBody) timedOut() bool { return b != nil && b.late.Load() }

// isTimeout reports whether err is a read deadline that passed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// guardBody arms the body read deadline for r (when h has one) and, when limit > 0, replaces
// r.Body with a restBody that enforces it. It returns nil when r has no body.
func (h *httpHandler) guardBody(w http.ResponseWriter, r *http.Request, limit int64) *restBody {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if h.bodyTimeout > 0 {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.bodyTimeout))
	}
	if limit <= 0 {
		return nil
	}
	b := &restBody{rc: r.Body, left: limit}
	r.Body = b
	return b
}

// endBodyDeadline disarms the body read deadline once the body has been read, before a streamed
// response. net/http already lets such a deadline pass harmlessly (HTTP/1.1 clears it when the
// body reaches EOF, HTTP/2 only fails further body reads), so this is defence in depth: no
// deadline outlives the body it was armed for (TestHTTPStreamOutlivesBodyTimeout covers both).
func endBodyDeadline(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
}
