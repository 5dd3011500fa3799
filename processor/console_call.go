package processor

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/internal/grpccall"
)

// The console's call form posts to /api/v1/call, which calls the method through the node's own
// public port as any client would (gRPC with server reflection, the engine of `kstate call`): the
// same authentication hooks, routing, forwarding to the owner and metrics apply.

// Limits of a console call.
const (
	consoleCallTimeout    = 10 * time.Second
	consoleCallMaxTimeout = time.Minute
	consoleMaxReplyBytes  = 4 << 20 // replies kept for one call (a server stream is cut there)
)

// consoleCallRequest is the JSON body of POST /api/v1/call.
type consoleCallRequest struct {
	// Method is "pkg.Service/Method" (or /pkg.Service/Method, pkg.Service.Method) of one of the
	// app's services.
	Method string `json:"method"`
	// Request is the request message in protobuf's JSON mapping; for a client-streaming method,
	// an array of messages. Missing means {}.
	Request json.RawMessage `json:"request"`
	// Headers are added to the call's metadata (e.g. "authorization" when the public port
	// requires a token).
	Headers map[string]string `json:"headers"`
	// TimeoutMs bounds the call (default 10 s, at most 60 s); a server stream is read until then.
	TimeoutMs int `json:"timeoutMs"`
}

// consoleCallReply is the answer of POST /api/v1/call once the call was made (HTTP 200, whatever
// its gRPC code); a request the console cannot make is answered with 4xx or 5xx and
// consoleCallReply.Error alone.
type consoleCallReply struct {
	Code      string            `json:"code,omitempty"` // the gRPC code, e.g. "OK", "NotFound"
	Message   string            `json:"message,omitempty"`
	Replies   []json.RawMessage `json:"replies,omitempty"` // each response message, in order
	Truncated bool              `json:"truncated,omitempty"`
	Millis    int64             `json:"millis,omitempty"`
	Error     string            `json:"error,omitempty"`
}

func callFailed(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, consoleCallReply{Error: fmt.Sprintf(format, args...)})
}

func (n *Node) serveCall(w http.ResponseWriter, r *http.Request) {
	if why := sameOrigin(r); why != "" {
		callFailed(w, http.StatusForbidden, "%s", why)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		callFailed(w, http.StatusUnsupportedMediaType, "the body must be JSON (Content-Type: application/json)")
		return
	}
	if !n.started.Load() {
		callFailed(w, http.StatusServiceUnavailable, "the node is starting; try again once it serves")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(n.cfg.MaxRecvBytes)+64<<10))
	if err != nil {
		callFailed(w, http.StatusRequestEntityTooLarge, "read body: %v", err)
		return
	}
	var req consoleCallRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		callFailed(w, http.StatusBadRequest, "body: %v (want {\"method\": \"pkg.Service/Method\", \"request\": {...}})", err)
		return
	}
	svc, name, err := grpccall.ParseMethod(req.Method)
	if err != nil {
		callFailed(w, http.StatusBadRequest, "%v", err)
		return
	}
	m, ok := n.cat.Method("/" + svc + "/" + name)
	if !ok {
		var names []string
		for _, s := range n.cat.Services() {
			names = append(names, s.Name)
		}
		callFailed(w, http.StatusBadRequest, "%s/%s is not a method of the app's services (%s)", svc, name, strings.Join(names, ", "))
		return
	}
	md := metadata.MD{}
	for k, v := range req.Headers {
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "" || strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, ":") {
			callFailed(w, http.StatusBadRequest, "header %q may not be set", k)
			return
		}
		md.Append(k, v)
	}
	jsonReq := []byte(req.Request)
	if m.ClientStreaming && len(bytes.TrimSpace(jsonReq)) > 0 && bytes.TrimSpace(jsonReq)[0] == '[' {
		var msgs []json.RawMessage
		if err := json.Unmarshal(jsonReq, &msgs); err != nil {
			callFailed(w, http.StatusBadRequest, "request: %v", err)
			return
		}
		jsonReq = bytes.Join(msgsBytes(msgs), []byte("\n"))
	}
	timeout := consoleCallTimeout
	if req.TimeoutMs > 0 {
		timeout = min(time.Duration(req.TimeoutMs)*time.Millisecond, consoleCallMaxTimeout)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()

	creds, err := n.selfCredentials()
	if err != nil {
		callFailed(w, http.StatusNotImplemented, "%v", err)
		return
	}
	conn, err := grpc.NewClient(selfTarget(n.Addr()), grpc.WithTransportCredentials(creds))
	if err != nil {
		callFailed(w, http.StatusInternalServerError, "connect to the public port %s: %v", n.Addr(), err)
		return
	}
	defer func() { _ = conn.Close() }()
	rctx := ctx
	if len(md) > 0 {
		rctx = metadata.NewOutgoingContext(ctx, md) // reflection may want the token too
	}
	start := time.Now()
	c, err := grpccall.New(rctx, conn)
	if err == nil {
		_, err = c.Method(rctx, req.Method)
	}
	if err != nil {
		// Reflection answered with a status (a hook that wants a token, a deadline): that is the
		// call's answer. Anything else means the port could not be used.
		var rerr *grpccall.RPCError
		if errors.As(err, &rerr) && rerr.Code() != codes.Unavailable {
			writeJSON(w, http.StatusOK, consoleCallReply{Code: rerr.Code().String(), Message: "reflection: " + rerr.Status.Message(), Millis: time.Since(start).Milliseconds()})
			return
		}
		callFailed(w, http.StatusBadGateway, "public port %s: %v", n.Addr(), err)
		return
	}
	out := &cappedBuffer{max: consoleMaxReplyBytes}
	err = c.Call(ctx, req.Method, jsonReq, md, out)
	if errors.Is(err, grpccall.ErrBadRequest) {
		callFailed(w, http.StatusBadRequest, "%v", err)
		return
	}
	reply := consoleCallReply{Code: codes.OK.String(), Millis: time.Since(start).Milliseconds(), Truncated: out.full}
	if err != nil {
		st := status.Convert(err)
		var rerr *grpccall.RPCError
		if errors.As(err, &rerr) {
			st = rerr.Status
		} else if out.full {
			st = status.New(codes.OK, "")
		}
		reply.Code, reply.Message = st.Code().String(), st.Message()
	}
	dec = json.NewDecoder(bytes.NewReader(out.buf.Bytes()))
	for {
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			break // the end, or a message cut by the cap
		}
		reply.Replies = append(reply.Replies, raw)
	}
	writeJSON(w, http.StatusOK, reply)
}

func msgsBytes(msgs []json.RawMessage) [][]byte {
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = m
	}
	return out
}

// sameOrigin returns why a browser request comes from another origin, "" when it does not: its
// Origin (sent by browsers with every POST) must name this very host, and Sec-Fetch-Site, when
// sent, must be same-origin. Requests without either (curl, scripts) pass: the admin listener's
// address is what limits who can reach it.
func sameOrigin(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "http" || !strings.EqualFold(u.Host, r.Host) {
			return "cross-origin request refused: Origin " + o + " is not http://" + r.Host
		}
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return "cross-origin request refused (Sec-Fetch-Site: " + s + ")"
	}
	return ""
}

// selfTarget is the address to dial the node's own public port at: a listener on every interface
// is reached over loopback.
func selfTarget(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "passthrough:///" + net.JoinHostPort(host, port)
}

// selfCredentials are the credentials to call the node's own public port with: plaintext, or
// TLS that accepts exactly the certificate the node serves (its own address needs no CA). A port
// that requires client certificates cannot be called from the console: it has none to present.
func (n *Node) selfCredentials() (credentials.TransportCredentials, error) {
	srv := n.pubTLS
	if srv == nil {
		return insecure.NewCredentials(), nil
	}
	if srv.ClientAuth >= tls.RequireAnyClientCert {
		return nil, errors.New("the public port requires client certificates, which the console has none of; call with `kstate call --tls-cert ...` instead")
	}
	if srv.GetConfigForClient != nil && len(srv.Certificates) == 0 && srv.GetCertificate == nil {
		return nil, errors.New("the public port's certificate comes from GetConfigForClient, which the console cannot check; call with `kstate call` instead")
	}
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is not verified against CAs (a node's certificate names its public name, not
		// the loopback address dialled); VerifyConnection requires the node's own leaf instead.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("console call: the public port presented no certificate")
			}
			leaf := cs.PeerCertificates[0].Raw
			certs := srv.Certificates
			if srv.GetCertificate != nil {
				if c, err := srv.GetCertificate(&tls.ClientHelloInfo{ServerName: cs.ServerName}); err == nil && c != nil {
					certs = append(slices.Clone(certs), *c)
				}
			}
			for _, c := range certs {
				if len(c.Certificate) > 0 && bytes.Equal(c.Certificate[0], leaf) {
					return nil
				}
			}
			return errors.New("console call: the public port presented a certificate the node does not serve")
		},
	}), nil
}

// cappedBuffer keeps at most max bytes; a write past it fails, which ends the call.
type cappedBuffer struct {
	buf  bytes.Buffer
	max  int
	full bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.buf.Len()+len(p) > b.max {
		b.full = true
		return 0, errors.New("reply larger than the console keeps")
	}
	return b.buf.Write(p)
}
