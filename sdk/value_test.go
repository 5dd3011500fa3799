package sdk_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	"github.com/kstatehq/kstate/proto/cloudstate/valueentitypb"
	"github.com/kstatehq/kstate/sdk"
)

const valueService = "kstate.test.v1.ValueTest"

// valueEntity interprets Request.payload as space-separated actions:
//
//	add:X         Update(State() with X appended)
//	mutate:X      append X to State() without Update
//	delete        Delete()
//	updatenil     Update(nil)
//	forward:X     forward Request{X} to EventSourcedTwo/Call
//	effect:X      asynchronous side effect Request{X} to EventSourcedTwo/Call
//	synceffect:X  synchronous side effect
//	fail:X        ctx.Fail(X) and carry on
//	error:X       return errors.New(X)
//	panic:X       panic(X)
//	meta:K        reply with the metadata value of K
//	nilreply      return a nil reply
//
// Unless told otherwise it replies Response{message: the state's payloads joined by ","}.
func valueEntity() *sdk.ValueEntity[*testpb.State] {
	e := sdk.NewValue(valueService, func(string) *testpb.State { return &testpb.State{} }).
		PersistenceID("value-test").
		Passivation(100 * time.Millisecond)
	sdk.ValueCommand(e, "Process", func(ctx *sdk.ValueContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		var reply *testpb.Response
		forwarded := false
		for _, action := range strings.Fields(in.GetPayload()) {
			verb, arg, _ := strings.Cut(action, ":")
			switch verb {
			case "add":
				s := ctx.State()
				s.Payloads = append(s.Payloads, arg)
				if err := ctx.Update(s); err != nil {
					return nil, err
				}
			case "mutate":
				ctx.State().Payloads = append(ctx.State().Payloads, arg)
			case "delete":
				ctx.Delete()
			case "updatenil":
				_ = ctx.Update(nil)
			case "forward":
				if err := ctx.Forward(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: arg}); err != nil {
					return nil, err
				}
				forwarded = true
			case "effect", "synceffect":
				if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Id: in.GetId(), Payload: arg}, verb == "synceffect"); err != nil {
					return nil, err
				}
			case "fail":
				_ = ctx.Fail("%s", arg)
			case "error":
				return nil, errors.New(arg)
			case "panic":
				panic(arg)
			case "meta":
				reply = &testpb.Response{Message: ctx.Metadata().Get(arg)}
			case "nilreply":
				return nil, nil
			}
		}
		if forwarded {
			return reply, nil
		}
		if reply == nil {
			reply = &testpb.Response{Message: strings.Join(ctx.State().GetPayloads(), ",")}
		}
		return reply, nil
	})
	return e
}

type veStream struct {
	t *testing.T
	s valueentitypb.ValueEntity_HandleClient
}

func (p *proxy) openValue() *veStream {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p.t.Cleanup(cancel)
	s, err := p.ve.Handle(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	return &veStream{t: p.t, s: s}
}

func (s *veStream) send(in *valueentitypb.ValueEntityStreamIn) {
	s.t.Helper()
	if err := s.s.Send(in); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

// init sends init; a nil value means an init state without a value, as for a new entity.
func (s *veStream) init(service, id string, value proto.Message) {
	s.t.Helper()
	st := &valueentitypb.ValueEntityInitState{}
	if value != nil {
		st.Value = mustAny(s.t, value)
	}
	s.send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{
		Init: &valueentitypb.ValueEntityInit{ServiceName: service, EntityId: id, State: st},
	}})
}

func (s *veStream) recv() *valueentitypb.ValueEntityStreamOut {
	s.t.Helper()
	out, err := s.s.Recv()
	if err != nil {
		s.t.Fatalf("recv: %v", err)
	}
	return out
}

func (s *veStream) rawCommand(cmd *cloudstatepb.Command) *valueentitypb.ValueEntityReply {
	s.t.Helper()
	s.send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{Command: cmd}})
	out := s.recv()
	r := out.GetReply()
	if r == nil {
		s.t.Fatalf("command %d: got %v, want a reply", cmd.GetId(), out)
	}
	if r.GetCommandId() != cmd.GetId() {
		s.t.Fatalf("reply for command %d, want %d", r.GetCommandId(), cmd.GetId())
	}
	return r
}

func (s *veStream) process(id int64, payload string, md ...*cloudstatepb.MetadataEntry) *valueentitypb.ValueEntityReply {
	s.t.Helper()
	cmd := &cloudstatepb.Command{EntityId: "e1", Id: id, Name: "Process", Payload: mustAny(s.t, &testpb.Request{Id: "e1", Payload: payload})}
	if len(md) > 0 {
		cmd.Metadata = &cloudstatepb.Metadata{Entries: md}
	}
	return s.rawCommand(cmd)
}

func valueReply(t *testing.T, r *valueentitypb.ValueEntityReply) string {
	t.Helper()
	rep := r.GetClientAction().GetReply()
	if rep == nil {
		t.Fatalf("command %d: client action %v, want a reply", r.GetCommandId(), r.GetClientAction())
	}
	if want := "type.googleapis.com/kstate.test.v1.Response"; rep.GetPayload().GetTypeUrl() != want {
		t.Fatalf("reply type %q, want %q", rep.GetPayload().GetTypeUrl(), want)
	}
	return decode(t, rep.GetPayload()).(*testpb.Response).GetMessage()
}

// stateAction renders a reply's state action: "" for none, "delete", or "update:<payloads>".
func stateAction(t *testing.T, r *valueentitypb.ValueEntityReply) string {
	t.Helper()
	switch a := r.GetStateAction().GetAction().(type) {
	case nil:
		if r.GetStateAction() != nil {
			t.Fatalf("command %d: an empty state action", r.GetCommandId())
		}
		return ""
	case *valueentitypb.ValueEntityAction_Delete:
		return "delete"
	case *valueentitypb.ValueEntityAction_Update:
		if want := "type.googleapis.com/kstate.test.v1.State"; a.Update.GetValue().GetTypeUrl() != want {
			t.Fatalf("update type %q, want %q", a.Update.GetValue().GetTypeUrl(), want)
		}
		return "update:" + strings.Join(decode(t, a.Update.GetValue()).(*testpb.State).GetPayloads(), ",")
	default:
		t.Fatalf("unknown state action %T", a)
		return ""
	}
}

func wantValueFailure(t *testing.T, r *valueentitypb.ValueEntityReply, description string, restart bool) {
	t.Helper()
	f := r.GetClientAction().GetFailure()
	if f == nil {
		t.Fatalf("command %d: client action %v, want a failure", r.GetCommandId(), r.GetClientAction())
	}
	if f.GetCommandId() != r.GetCommandId() || !strings.Contains(f.GetDescription(), description) || f.GetRestart() != restart {
		t.Fatalf("failure %v, want command %d, description containing %q, restart %v", f, r.GetCommandId(), description, restart)
	}
	if r.GetStateAction() != nil || len(r.GetSideEffects()) != 0 {
		t.Fatalf("failure reply carries state action %v, side effects %v", r.GetStateAction(), r.GetSideEffects())
	}
}

// checkValue sends a command and checks its reply and state action.
func checkValue(t *testing.T, s *veStream, id int64, payload, wantReply, wantAction string) *valueentitypb.ValueEntityReply {
	t.Helper()
	r := s.process(id, payload)
	if got := valueReply(t, r); got != wantReply {
		t.Fatalf("command %d %q: reply %q, want %q", id, payload, got, wantReply)
	}
	if got := stateAction(t, r); got != wantAction {
		t.Fatalf("command %d %q: state action %q, want %q", id, payload, got, wantAction)
	}
	return r
}

func TestValueInitialEmptyState(t *testing.T) {
	p := newProxy(t, valueEntity())
	// The proxy always sends a state; without a stored value it has no value.
	s := p.openValue()
	s.init(valueService, "e1", nil)
	checkValue(t, s, 1, "", "", "")
	// Lenient: no state at all is the same.
	s = p.openValue()
	s.send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{
		Init: &valueentitypb.ValueEntityInit{ServiceName: valueService, EntityId: "e1"},
	}})
	checkValue(t, s, 1, "", "", "")
}

func TestValueInitialStateFromEntityID(t *testing.T) {
	e := sdk.NewValue(valueService, func(id string) *testpb.State { return &testpb.State{Payloads: []string{"new:" + id}} })
	sdk.ValueCommand(e, "Process", func(ctx *sdk.ValueContext[*testpb.State], in *testpb.Request) (*testpb.Response, error) {
		before := strings.Join(ctx.State().GetPayloads(), ",")
		if in.GetPayload() == "delete" {
			ctx.State().Payloads = append(ctx.State().Payloads, "scribble")
			ctx.Delete()
		}
		return &testpb.Response{Message: before + "|" + strings.Join(ctx.State().GetPayloads(), ",")}, nil
	})
	p := newProxy(t, e)
	s := p.openValue()
	s.init(valueService, "cart-7", &testpb.State{Payloads: []string{"stored"}})
	// After Delete, State is a fresh initial state, not the scribbled-on copy.
	checkValue(t, s, 1, "delete", "stored|new:cart-7", "delete")
	checkValue(t, s, 2, "", "new:cart-7|new:cart-7", "")
}

func TestValueRehydration(t *testing.T) {
	p := newProxy(t, valueEntity())
	s := p.openValue()
	s.init(valueService, "e1", &testpb.State{Payloads: []string{"a", "b"}})
	checkValue(t, s, 1, "", "a,b", "")
	checkValue(t, s, 2, "add:c", "a,b,c", "update:a,b,c")
}

func TestValueUpdates(t *testing.T) {
	p := newProxy(t, valueEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	checkValue(t, s, 1, "add:a", "a", "update:a")
	// Several updates in one command: one state action, the last value wins.
	checkValue(t, s, 2, "add:b add:c", "a,b,c", "update:a,b,c")
	// A command that does not update sends no state action.
	checkValue(t, s, 3, "", "a,b,c", "")
	// Modifying State() without Update changes nothing.
	checkValue(t, s, 4, "mutate:x", "a,b,c,x", "")
	checkValue(t, s, 5, "", "a,b,c", "")
}

func TestValueDelete(t *testing.T) {
	p := newProxy(t, valueEntity())
	s := p.openValue()
	s.init(valueService, "e1", &testpb.State{Payloads: []string{"a"}})
	checkValue(t, s, 1, "delete", "", "delete")
	checkValue(t, s, 2, "", "", "")
	// Updates, then delete, in one command: a delete.
	checkValue(t, s, 3, "add:x add:y delete", "", "delete")
	// Update, delete, update across commands.
	checkValue(t, s, 4, "add:b", "b", "update:b")
	checkValue(t, s, 5, "delete", "", "delete")
	checkValue(t, s, 6, "add:c", "c", "update:c")
	// ... and in one command: the last update wins, from the initial state.
	checkValue(t, s, 7, "add:d delete add:e", "e", "update:e")
	checkValue(t, s, 8, "", "e", "")
}

func TestValueFailureDropsStateAndSideEffects(t *testing.T) {
	p := newProxy(t, valueEntity(), twoEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	checkValue(t, s, 1, "add:a", "a", "update:a")
	wantValueFailure(t, s.process(2, "add:b effect:x fail:boom"), "boom", false)
	wantValueFailure(t, s.process(3, "delete synceffect:x error:plain"), "plain", false)
	wantValueFailure(t, s.process(4, "add:c updatenil"), "nil message", false)
	// The connection is usable after failures, with the state from before them.
	checkValue(t, s, 5, "", "a", "")
}

func TestValuePanicFailsWithRestart(t *testing.T) {
	p := newProxy(t, valueEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	r := s.process(1, "add:a panic:kaboom")
	wantValueFailure(t, r, "unexpected failure in command Process", true)
	if strings.Contains(r.GetClientAction().GetFailure().GetDescription(), "kaboom") {
		t.Error("the panic value leaked into the client's description")
	}
	if !strings.Contains(p.logs.String(), "kaboom") {
		t.Errorf("the panic is not logged:\n%s", p.logs)
	}
	checkValue(t, s, 2, "", "", "")
}

func TestValueForward(t *testing.T) {
	p := newProxy(t, valueEntity(), twoEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	r := s.process(1, "add:a forward:hello effect:se")
	fw := r.GetClientAction().GetForward()
	if fw == nil || fw.GetServiceName() != twoService || fw.GetCommandName() != "Call" ||
		decode(t, fw.GetPayload()).(*testpb.Request).GetPayload() != "hello" {
		t.Fatalf("forward %v", r.GetClientAction())
	}
	if got := stateAction(t, r); got != "update:a" {
		t.Fatalf("forward with update: state action %q", got)
	}
	if len(r.GetSideEffects()) != 1 || decode(t, r.GetSideEffects()[0].GetPayload()).(*testpb.Request).GetPayload() != "se" {
		t.Fatalf("forward plus side effect: %v", r.GetSideEffects())
	}
	wantValueFailure(t, s.process(2, "add:b forward:x forward:y"), "already forwarded", false)
	wantValueFailure(t, s.process(3, "forward:x meta:k"), "both forwarded", false)
	checkValue(t, s, 4, "", "a", "")
}

func TestValueSideEffects(t *testing.T) {
	p := newProxy(t, valueEntity(), twoEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	r := checkValue(t, s, 1, "effect:one add:a synceffect:two effect:three", "a", "update:a")
	effects := r.GetSideEffects()
	if len(effects) != 3 {
		t.Fatalf("side effects %v", effects)
	}
	for i, want := range []struct {
		payload string
		sync    bool
	}{{"one", false}, {"two", true}, {"three", false}} {
		se := effects[i]
		if se.GetServiceName() != twoService || se.GetCommandName() != "Call" || se.GetSynchronous() != want.sync ||
			decode(t, se.GetPayload()).(*testpb.Request).GetPayload() != want.payload {
			t.Errorf("side effect %d: %v", i, se)
		}
	}
}

func TestValueMetadataAndNilReply(t *testing.T) {
	p := newProxy(t, valueEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	r := s.process(1, "meta:x-user", &cloudstatepb.MetadataEntry{Key: "X-User", Value: &cloudstatepb.MetadataEntry_StringValue{StringValue: "alice"}})
	if got := valueReply(t, r); got != "alice" {
		t.Fatalf("metadata value %q", got)
	}
	// A nil reply is an empty Response; the update still counts.
	checkValue(t, s, 2, "add:a nilreply", "", "update:a")
}

func TestValueUnknownCommandAndBadPayload(t *testing.T) {
	p := newProxy(t, valueEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	wantValueFailure(t, s.rawCommand(&cloudstatepb.Command{Id: 1, Name: "Nope", Payload: mustAny(t, &testpb.Request{})}), `unknown command "Nope"`, false)
	wantValueFailure(t, s.rawCommand(&cloudstatepb.Command{Id: 2, Name: "Process", Payload: mustAny(t, &testpb.Response{})}), "expects a payload of type", false)
	wantValueFailure(t, s.rawCommand(&cloudstatepb.Command{Id: 3, Name: "Process", Payload: &anypb.Any{
		TypeUrl: "type.googleapis.com/kstate.test.v1.Request", Value: []byte{0xff},
	}}), "does not decode", false)
	checkValue(t, s, 4, "add:ok", "ok", "update:ok")
}

func TestValueStreamFailures(t *testing.T) {
	p := newProxy(t, valueEntity(), testEntity())
	for name, tc := range map[string]struct {
		send func(s *veStream)
		want string
	}{
		"command before init": {
			send: func(s *veStream) {
				s.send(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{
					Command: &cloudstatepb.Command{Id: 1, Name: "Process"},
				}})
			},
			want: "first message must be init",
		},
		"empty message":   {send: func(s *veStream) { s.send(&valueentitypb.ValueEntityStreamIn{}) }, want: "without content"},
		"unknown service": {send: func(s *veStream) { s.init("kstate.test.v1.Nope", "e1", nil) }, want: "kstate.test.v1.Nope"},
		// An event-sourced service is not a value entity.
		"event-sourced service": {send: func(s *veStream) { s.init(testService, "e1", nil) }, want: "no registered value entity"},
		"second init": {
			send: func(s *veStream) { s.init(valueService, "e1", nil); s.init(valueService, "e1", nil) },
			want: "second init",
		},
		"stored value of another type": {
			send: func(s *veStream) { s.init(valueService, "e1", &testpb.Response{}) },
			want: "state type is kstate.test.v1.State",
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := p.openValue()
			s.t = t
			tc.send(s)
			out := s.recv()
			f := out.GetFailure()
			if f == nil || !strings.Contains(f.GetDescription(), tc.want) {
				t.Fatalf("got %v, want a stream failure containing %q", out, tc.want)
			}
			_, err := s.s.Recv()
			if status.Code(err) == codes.OK {
				t.Fatalf("stream continued after a failure: %v", err)
			}
		})
	}
}

func TestValueStreamEnds(t *testing.T) {
	p := newProxy(t, valueEntity())
	s := p.openValue()
	s.init(valueService, "e1", nil)
	checkValue(t, s, 1, "add:a", "a", "update:a")
	if err := s.s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
	// Shutting down ends open streams with UNAVAILABLE.
	s = p.openValue()
	s.init(valueService, "e2", nil)
	checkValue(t, s, 1, "", "", "")
	p.stop()
	if _, err := s.s.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("open stream after shutdown: %v, want UNAVAILABLE", err)
	}
}

func TestValueRegisterValidation(t *testing.T) {
	missing := sdk.NewValue[*testpb.State](valueService, nil)

	wrongTypes := sdk.NewValue[*testpb.State](valueService, nil)
	sdk.ValueCommand(wrongTypes, "Process", func(*sdk.ValueContext[*testpb.State], *testpb.Keyless) (*testpb.State, error) { return nil, nil })

	streaming := sdk.NewValue[*testpb.State]("kstate.test.v1.ActionTest", nil)
	for _, m := range []string{"Unary", "StreamedIn", "StreamedOut", "Streamed"} {
		sdk.ValueCommand(streaming, m, func(*sdk.ValueContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })
	}

	duplicate := valueEntity()
	sdk.ValueCommand(duplicate, "Process", func(*sdk.ValueContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })
	sdk.ValueCommand(duplicate, "Nope", func(*sdk.ValueContext[*testpb.State], *testpb.Request) (*testpb.Response, error) { return nil, nil })

	interfaceState := sdk.NewValue[proto.Message](valueService, nil)
	nilHandler := sdk.NewValue[*testpb.State](valueService, nil)
	sdk.ValueCommand[*testpb.State, *testpb.Request, *testpb.Response](nilHandler, "Process", nil)

	for name, tc := range map[string]struct {
		entity sdk.Entity
		is     error
		want   []string
	}{
		"unknown service": {sdk.NewValue[*testpb.State]("kstate.test.v1.Nope", nil), sdk.ErrServiceNotFound, []string{"kstate.test.v1.Nope"}},
		"missing handler": {missing, sdk.ErrMissingHandler, []string{"method Process", "sdk.ValueCommand(entity, \"Process\"", "*testpb.Request", "*testpb.Response"}},
		"wrong types": {wrongTypes, sdk.ErrTypeMismatch, []string{
			"input type is kstate.test.v1.Request, the handler takes kstate.test.v1.Keyless",
			"output type is kstate.test.v1.Response, the handler returns kstate.test.v1.State",
		}},
		"streaming":       {streaming, sdk.ErrStreamingMethod, []string{"method StreamedIn", "method StreamedOut", "method Streamed:", "serve streams from an action"}},
		"duplicates":      {duplicate, sdk.ErrDuplicate, []string{"method Process", "command handler"}},
		"unknown method":  {duplicate, sdk.ErrMethodNotFound, []string{"method Nope"}},
		"interface state": {interfaceState, sdk.ErrInvalidType, []string{"state type", "interface type"}},
		"nil handler":     {nilHandler, sdk.ErrInvalidType, []string{"nil command handler"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := sdk.NewServer().Register(tc.entity)
			if err == nil {
				t.Fatal("Register succeeded")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			var de *sdk.DefinitionError
			if !errors.As(err, &de) || de.Service == "" {
				t.Errorf("error %v is not a *DefinitionError naming the service", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// Two entities cannot serve the same service.
	srv := sdk.NewServer()
	if err := srv.Register(valueEntity()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(valueEntity()); !errors.Is(err, sdk.ErrDuplicate) {
		t.Fatalf("second entity for %s: %v", valueService, err)
	}
}

func TestValueSessionDirect(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.Register(valueEntity()); err != nil {
		t.Fatal(err)
	}
	sess := srv.NewValueSession(context.Background())
	if sess.State() != nil || sess.EntityID() != "" || sess.ServiceName() != "" {
		t.Fatal("session state before init")
	}
	if _, err := sess.Step(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Init{
		Init: &valueentitypb.ValueEntityInit{ServiceName: valueService, EntityId: "x", State: &valueentitypb.ValueEntityInitState{}},
	}}); err != nil {
		t.Fatal(err)
	}
	out, err := sess.Step(&valueentitypb.ValueEntityStreamIn{Message: &valueentitypb.ValueEntityStreamIn_Command{
		Command: &cloudstatepb.Command{EntityId: "x", Id: 1, Name: "Process", Payload: mustAny(t, &testpb.Request{Payload: "add:v"})},
	}})
	if err != nil || stateAction(t, out.GetReply()) != "update:v" {
		t.Fatalf("command: %v, %v", out, err)
	}
	if sess.ServiceName() != valueService || sess.EntityID() != "x" || !proto.Equal(sess.State(), &testpb.State{Payloads: []string{"v"}}) {
		t.Fatalf("session %s %q %v", sess.ServiceName(), sess.EntityID(), sess.State())
	}
	// After a stream failure every Step returns it.
	_, err1 := sess.Step(&valueentitypb.ValueEntityStreamIn{})
	_, err2 := sess.Step(&valueentitypb.ValueEntityStreamIn{})
	if !errors.Is(err1, sdk.ErrProtocol) || err2 == nil || err1.Error() != err2.Error() {
		t.Fatalf("sticky failure: %v, %v", err1, err2)
	}
}
