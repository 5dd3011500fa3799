package frontdoor

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readNDJSON splits an NDJSON body into lines.
func httpReadNDJSON(body string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if sc.Text() != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}

func TestHTTPServerStreaming(t *testing.T) {
	s := startHTTPTest(t)

	// NDJSON by rule, with query parameters and path variables.
	resp, body := s.do(t, "GET", "/counters/c1/watch?tags=x", "")
	httpExpect(t, resp, body, 200)
	if ct := resp.Header.Get("Content-Type"); ct != ContentTypeNDJSON {
		t.Fatalf("content-type %q", ct)
	}
	lines := httpReadNDJSON(body)
	if len(lines) != 3 {
		t.Fatalf("%d lines: %q", len(lines), body)
	}
	for i, l := range lines {
		httpJSONEqual(t, l, fmt.Sprintf(`{"id":"c1","value":"%d","tags":[]}`, 1<<60+i))
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Fatalf("trailer grpc-status %q", got)
	}
	if c := s.d.last(t); c.method != "/kstate.httptest.v1.CounterService/Watch" || httpFieldOf(c.msg, "tags") != "[x]" {
		t.Fatalf("Watch command %s %v", c.method, c.msg)
	}

	// The default route of a method without a rule, with request metadata.
	resp, body = s.do(t, "POST", "/kstate.test.v1.ActionTest/StreamedOut", `{"id":"a","payload":"x"}`, "X-Trace", "t1")
	httpExpect(t, resp, body, 200)
	lines = httpReadNDJSON(body)
	if len(lines) != 3 {
		t.Fatalf("%d lines: %q", len(lines), body)
	}
	for i, l := range lines {
		httpJSONEqual(t, l, fmt.Sprintf(`{"message":"x-%d"}`, i))
	}
	if md := MetadataToGRPC(s.d.last(t).md); len(md["x-trace"]) != 1 || md["x-trace"][0] != "t1" {
		t.Fatalf("stream metadata %v lacks x-trace", md)
	}

	// Server-sent events on request.
	resp, body = s.do(t, "GET", "/counters/c2/watch", "", "Accept", "text/event-stream")
	httpExpect(t, resp, body, 200)
	if ct := resp.Header.Get("Content-Type"); ct != ContentTypeSSE {
		t.Fatalf("content-type %q", ct)
	}
	var want strings.Builder
	for i := 0; i < 3; i++ {
		fmt.Fprintf(&want, "data: {\"id\":\"c2\",\"value\":\"%d\",\"tags\":[]}\n\n", 1<<60+i)
	}
	if strings.ReplaceAll(body, " ", "") != strings.ReplaceAll(want.String(), " ", "") {
		t.Fatalf("SSE body %q, want %q", body, want.String())
	}

	// A failure before the first reply is a plain HTTP error.
	resp, body = s.do(t, "POST", "/kstate.test.v1.ActionTest/StreamedOut", `{"id":"a","payload":"fail-early"}`)
	httpExpect(t, resp, body, 500)
	httpJSONEqual(t, body, `{"code":2,"message":"early boom","details":[]}`)

	// A failure after a reply ends the stream with an error line / event and the trailers.
	resp, body = s.do(t, "POST", "/kstate.test.v1.ActionTest/StreamedOut", `{"id":"a","payload":"fail-late"}`)
	httpExpect(t, resp, body, 200)
	lines = httpReadNDJSON(body)
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), body)
	}
	httpJSONEqual(t, lines[0], `{"message":"fail-late-0"}`)
	httpJSONEqual(t, lines[1], `{"error":{"code":2,"message":"late boom","details":[]}}`)
	if resp.Trailer.Get("Grpc-Status") != "2" || resp.Trailer.Get("Grpc-Message") != "late%20boom" {
		t.Fatalf("trailers %v", resp.Trailer)
	}
	resp, body = s.do(t, "GET", "/counters/fail-late/watch", "", "Accept", "text/event-stream")
	httpExpect(t, resp, body, 200)
	if !strings.Contains(body, "event: error\ndata: {") || !strings.Contains(body, "late boom") || strings.Count(body, "data: ") != 2 {
		t.Fatalf("SSE body %q", body)
	}

	// Routing errors of streaming routes: bad JSON, wrong HTTP method, unknown paths.
	resp, body = s.do(t, "POST", "/kstate.test.v1.ActionTest/StreamedOut", `{"id":`)
	httpExpect(t, resp, body, 400)
	resp, body = s.do(t, "POST", "/counters/c1/watch", "")
	httpExpect(t, resp, body, http.StatusMethodNotAllowed)
	resp, body = s.do(t, "GET", "/counters/c1/watch/more", "")
	httpExpect(t, resp, body, 404)
}

func TestHTTPStreamingCancel(t *testing.T) {
	s := startHTTPTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", s.base+"/counters/hold/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The first reply arrives while the call is still running: replies are not buffered.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"hold"`) {
		t.Fatalf("first line %q: %v", line, err)
	}
	// The client going away cancels the call.
	cancel()
	select {
	case <-s.d.canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the streamed call was not canceled when the HTTP client went away")
	}
}
