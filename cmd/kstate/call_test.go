package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/kstatehq/kstate/internal/grpccall"
	"github.com/kstatehq/kstate/internal/testpb"
)

// callTestES echoes Process requests, with the x-user and x-trace-bin headers, and fails on
// payload "fail".
type callTestES struct {
	testpb.UnimplementedEventSourcedTestServer
}

func (callTestES) Process(ctx context.Context, req *testpb.Request) (*testpb.Response, error) {
	if req.GetPayload() == "fail" {
		return nil, status.Errorf(codes.FailedPrecondition, "cart %s is closed", req.GetId())
	}
	msg := req.GetId() + ":" + req.GetPayload()
	md, _ := metadata.FromIncomingContext(ctx)
	for _, k := range []string{"x-user", "x-trace-bin"} {
		if v := md.Get(k); len(v) > 0 {
			msg += " " + k + "=" + strings.Join(v, ",")
		}
	}
	return &testpb.Response{Message: msg}, nil
}

// callTestAction streams one Response per word of the payload.
type callTestAction struct {
	testpb.UnimplementedActionTestServer
}

func (callTestAction) StreamedOut(req *testpb.Request, stream grpc.ServerStreamingServer[testpb.Response]) error {
	for _, w := range strings.Fields(req.GetPayload()) {
		if err := stream.Send(&testpb.Response{Message: w}); err != nil {
			return err
		}
	}
	return nil
}

// serveCallTest starts a real gRPC server with reflection on a loopback port and returns its
// address; it stops when the test ends.
func serveCallTest(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterEventSourcedTestServer(srv, callTestES{})
	testpb.RegisterActionTestServer(srv, callTestAction{})
	reflection.Register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// runCallCmd runs `kstate call` with args and stdin, returning stdout, stderr and the error.
func runCallCmd(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := newCallCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestCallCmd(t *testing.T) {
	addr := serveCallTest(t)
	const process = "kstate.test.v1.EventSourcedTest/Process"

	t.Run("unary", func(t *testing.T) {
		out, errOut, err := runCallCmd(t, "", "--addr", addr, process, `{"id":"c1","payload":"hi"}`)
		if err != nil || errOut != "" {
			t.Fatalf("err %v, stderr %q", err, errOut)
		}
		if want := "{\n  \"message\": \"c1:hi\"\n}\n"; out != want {
			t.Fatalf("stdout %q, want %q", out, want)
		}
	})

	t.Run("default request, other method forms", func(t *testing.T) {
		for _, m := range []string{"/" + process, "kstate.test.v1.EventSourcedTest.Process"} {
			out, _, err := runCallCmd(t, "", "--addr", addr, m)
			if err != nil {
				t.Fatal(err)
			}
			if want := "{\n  \"message\": \":\"\n}\n"; out != want {
				t.Fatalf("%s: stdout %q, want %q", m, out, want)
			}
		}
	})

	t.Run("stdin and headers", func(t *testing.T) {
		out, errOut, err := runCallCmd(t, `{"id": "c2", "payload": "in"}`+"\n",
			"--addr", addr, "-H", "x-user=ann", "-H", "X-User: bob", "-H", "x-trace-bin=aGk=", process, "-")
		if err != nil || errOut != "" {
			t.Fatalf("err %v, stderr %q", err, errOut)
		}
		if want := "{\n  \"message\": \"c2:in x-user=ann,bob x-trace-bin=hi\"\n}\n"; out != want {
			t.Fatalf("stdout %q, want %q", out, want)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		out, _, err := runCallCmd(t, "", "--addr", addr, "kstate.test.v1.ActionTest/StreamedOut", `{"payload":"a b"}`)
		if err != nil {
			t.Fatal(err)
		}
		if want := "{\n  \"message\": \"a\"\n}\n{\n  \"message\": \"b\"\n}\n"; out != want {
			t.Fatalf("stdout %q, want %q", out, want)
		}
	})

	t.Run("grpc error", func(t *testing.T) {
		out, errOut, err := runCallCmd(t, "", "--addr", addr, process, `{"id":"c1","payload":"fail"}`)
		var rerr *grpccall.RPCError
		if !errors.As(err, &rerr) || rerr.Code() != codes.FailedPrecondition {
			t.Fatalf("err %v (%T), want *grpccall.RPCError FailedPrecondition", err, err)
		}
		if out != "" {
			t.Fatalf("stdout %q, want none", out)
		}
		if want := "ERROR: FailedPrecondition: cart c1 is closed\n"; errOut != want {
			t.Fatalf("stderr %q, want %q", errOut, want)
		}
	})

	t.Run("bad json", func(t *testing.T) {
		_, errOut, err := runCallCmd(t, "", "--addr", addr, process, `{"id": 1}`)
		if !errors.Is(err, grpccall.ErrBadRequest) {
			t.Fatalf("err %v, want ErrBadRequest", err)
		}
		if !strings.HasPrefix(errOut, "ERROR: request does not fit kstate.test.v1.Request: ") || strings.Count(errOut, "ERROR") != 1 {
			t.Fatalf("stderr %q", errOut)
		}
	})

	t.Run("unknown method", func(t *testing.T) {
		_, errOut, err := runCallCmd(t, "", "--addr", addr, "kstate.test.v1.EventSourcedTest/Nope")
		if !errors.Is(err, grpccall.ErrUnknownMethod) {
			t.Fatalf("err %v, want ErrUnknownMethod", err)
		}
		want := "ERROR: unknown method \"kstate.test.v1.EventSourcedTest/Nope\"; available methods:\n  Composite\n  Process\n"
		if errOut != want {
			t.Fatalf("stderr %q, want %q", errOut, want)
		}
	})

	t.Run("list", func(t *testing.T) {
		out, _, err := runCallCmd(t, "", "--addr", addr, "--list")
		if err != nil {
			t.Fatal(err)
		}
		want := "grpc.reflection.v1.ServerReflection\ngrpc.reflection.v1alpha.ServerReflection\n" +
			"kstate.test.v1.ActionTest\nkstate.test.v1.EventSourcedTest\n"
		if out != want {
			t.Fatalf("stdout %q, want %q", out, want)
		}
		out, _, err = runCallCmd(t, "", "--addr", addr, "-l", "kstate.test.v1.ActionTest")
		if err != nil {
			t.Fatal(err)
		}
		want = "Unary(kstate.test.v1.Request) returns (kstate.test.v1.Response)\n" +
			"StreamedIn(stream kstate.test.v1.Request) returns (kstate.test.v1.Response)\n" +
			"StreamedOut(kstate.test.v1.Request) returns (stream kstate.test.v1.Response)\n" +
			"Streamed(stream kstate.test.v1.Request) returns (stream kstate.test.v1.Response)\n"
		if out != want {
			t.Fatalf("stdout %q, want %q", out, want)
		}
	})

	t.Run("usage", func(t *testing.T) {
		out, errOut, err := runCallCmd(t, "", "--addr", addr)
		if err == nil || !strings.Contains(errOut, "accepts between 1 and 2 arg(s)") || !strings.Contains(out+errOut, "Usage:") {
			t.Fatalf("no args: err %v, stdout %q, stderr %q; want a usage error", err, out, errOut)
		}
	})
}

func TestCallCmdUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // nothing listens there now
	_, errOut, err := runCallCmd(t, "", "--addr", addr, "a.B/C")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want Unavailable", err)
	}
	if !strings.HasPrefix(errOut, "ERROR: "+addr+": reflection: list services: Unavailable: ") {
		t.Fatalf("stderr %q", errOut)
	}
}

func TestParseHeaders(t *testing.T) {
	md, err := parseHeaders([]string{"a=1", "A=2", "b: x=y", "c=p:q", "d-bin=aGk", "e="})
	if err != nil {
		t.Fatal(err)
	}
	want := metadata.MD{"a": {"1", "2"}, "b": {"x=y"}, "c": {"p:q"}, "d-bin": {"hi"}, "e": {""}}
	if len(md) != len(want) {
		t.Fatalf("md %v, want %v", md, want)
	}
	for k, v := range want {
		if strings.Join(md[k], "|") != strings.Join(v, "|") {
			t.Fatalf("md[%q] = %q, want %q", k, md[k], v)
		}
	}
	for _, bad := range []string{"novalue", "=v", ":v", "x-bin=!!"} {
		if _, err := parseHeaders([]string{bad}); err == nil {
			t.Errorf("parseHeaders(%q): no error", bad)
		}
	}
}

// TestCallTLSFlags: the TLS flags of `kstate call` fail before dialling, naming the flag.
func TestCallTLSFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-ca", "/nonexistent.crt"}, "--tls-ca: open /nonexistent.crt"},
		{[]string{"--tls-cert", "/nonexistent.crt"}, "--tls-cert and --tls-key: give both"},
		{[]string{"--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"}, "--tls-cert/--tls-key: open /nonexistent.crt"},
	} {
		_, errOut, err := runCallCmd(t, "", append(tc.args, "--addr", "127.0.0.1:1", "x.Y/Z")...)
		if err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("kstate call %v: %v, stderr %q; want %q", tc.args, err, errOut, tc.want)
		}
	}
}
