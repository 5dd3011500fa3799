package sdk_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/internal/testpb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
)

const crdtService = "kstate.test.v1.CrdtSdkTest"

// applyFunc applies one state operation (verb, arg) of a test script to a CRDT; handled is
// false for a verb it does not know.
type applyFunc[C sdk.CRDT] func(s C, verb, arg string) (handled bool, err error)

// crdtEntity is the CRDT test entity: Process and Watch run CrdtRequest.ops, a script of
// "verb:arg" operations. Common verbs:
//
//	fail:X  error:X  panic  delete  noreply  forward:X  effect:X  synceffect:X  meta:K
//	consistency:majority|all|local
//
// Watch also knows (they set up the stream; the state operations still run):
//
//	empty           no first element
//	nocallbacks     register no callback
//	nochange        register no OnChange callback
//	end:S           OnChange ends the stream once the state renders as S
//	oncancel:OP     OnCancel applies OP ("verb:arg")
//	changeeffect:X  every OnChange message carries a side effect
//	changefail      OnChange fails
//	changemutate:OP OnChange tries to apply OP
//	changeforward:X OnChange forwards
//	changedistinct  OnChange sends only when the rendering changed
//
// Every other verb goes to apply. Replies carry the state as render renders it.
func crdtEntity[C sdk.CRDT](apply applyFunc[C], render func(C) string) *sdk.CRDTEntity[C] {
	e := sdk.NewCRDT[C](crdtService)
	sdk.CRDTCommand(e, "Process", func(ctx *sdk.CRDTContext[C], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		return runOps(ctx, in.GetOps(), apply, render)
	})
	sdk.CRDTStreamed(e, "Watch", func(ctx *sdk.CRDTStreamContext[C, *testpb.CrdtResponse], in *testpb.CrdtRequest) (*testpb.CrdtResponse, error) {
		var stateOps []string
		var (
			empty, none, fail, distinct bool
			noChange                    bool
			end, effect, forward        string
			mutate, onCancel            string
		)
		for _, op := range in.GetOps() {
			verb, arg, _ := strings.Cut(op, ":")
			switch verb {
			case "empty":
				empty = true
			case "nocallbacks":
				none = true
			case "nochange":
				noChange = true
			case "end":
				end = arg
			case "oncancel":
				onCancel = arg
			case "changeeffect":
				effect = arg
			case "changefail":
				fail = true
			case "changemutate":
				mutate = arg
			case "changeforward":
				forward = arg
			case "changedistinct":
				distinct = true
			default:
				stateOps = append(stateOps, op)
			}
		}
		reply, err := runOps(&ctx.CRDTContext, stateOps, apply, render)
		if err != nil || none {
			return reply, err
		}
		last := render(ctx.State())
		onChange := func(cc *sdk.CRDTChangeContext[C]) (*testpb.CrdtResponse, error) {
			if fail {
				return nil, cc.Fail("change failed")
			}
			if mutate != "" {
				verb, arg, _ := strings.Cut(mutate, ":")
				if _, err := apply(cc.State(), verb, arg); err != nil {
					return nil, err
				}
			}
			if effect != "" {
				if err := cc.SideEffect(twoService, "Call", &testpb.Request{Id: effect}, false); err != nil {
					return nil, err
				}
			}
			if forward != "" {
				return nil, cc.Forward(twoService, "Call", &testpb.Request{Id: forward})
			}
			r := render(cc.State())
			if distinct && r == last {
				return nil, nil
			}
			last = r
			if end != "" && r == end {
				cc.EndStream()
			}
			return &testpb.CrdtResponse{State: r}, nil
		}
		if !noChange {
			ctx.OnChange(onChange)
		}
		if onCancel != "" {
			ctx.OnCancel(func(cc *sdk.CRDTCancelContext[C]) error {
				verb, arg, _ := strings.Cut(onCancel, ":")
				switch verb {
				case "fail":
					return errors.New(arg)
				case "delete":
					cc.Delete()
					return nil
				case "effect":
					return cc.SideEffect(twoService, "Call", &testpb.Request{Id: arg}, false)
				case "consistency":
					cc.SetWriteConsistency(sdk.WriteAll)
				}
				_, err := apply(cc.State(), verb, arg)
				return err
			})
		}
		if empty {
			return nil, nil
		}
		return reply, nil
	})
	return e
}

func runOps[C sdk.CRDT](ctx *sdk.CRDTContext[C], ops []string, apply applyFunc[C], render func(C) string) (*testpb.CrdtResponse, error) {
	var reply *testpb.CrdtResponse
	forwarded, noReply := false, false
	for _, op := range ops {
		verb, arg, _ := strings.Cut(op, ":")
		switch verb {
		case "fail":
			return nil, ctx.Fail("%s", arg)
		case "error":
			return nil, errors.New(arg)
		case "panic":
			panic(arg)
		case "delete":
			ctx.Delete()
		case "noreply":
			noReply = true
		case "forward":
			if err := ctx.Forward(twoService, "Call", &testpb.Request{Id: arg}); err != nil {
				return nil, err
			}
			forwarded = true
		case "effect", "synceffect":
			if err := ctx.SideEffect(twoService, "Call", &testpb.Request{Id: arg}, verb == "synceffect"); err != nil {
				return nil, err
			}
		case "meta":
			reply = &testpb.CrdtResponse{State: ctx.Metadata().Get(arg)}
		case "consistency":
			switch arg {
			case "majority":
				ctx.SetWriteConsistency(sdk.WriteMajority)
			case "all":
				ctx.SetWriteConsistency(sdk.WriteAll)
			default:
				ctx.SetWriteConsistency(sdk.WriteLocal)
			}
		default:
			handled, err := apply(ctx.State(), verb, arg)
			if err != nil {
				return nil, err
			}
			if !handled {
				return nil, fmt.Errorf("unknown op %q", op)
			}
		}
	}
	if forwarded || noReply {
		return nil, nil
	}
	if reply == nil {
		reply = &testpb.CrdtResponse{State: render(ctx.State())}
	}
	return reply, nil
}

func atoi(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		panic(err)
	}
	return n
}

func item(name string) *testpb.Item { return &testpb.Item{Name: name} }

func names(items []*testpb.Item) string {
	ns := make([]string, len(items))
	for i, it := range items {
		ns[i] = it.GetName()
	}
	slices.Sort(ns)
	return strings.Join(ns, ",")
}

func gcounterEntity() *sdk.CRDTEntity[*sdk.GCounter] {
	return crdtEntity(func(s *sdk.GCounter, verb, arg string) (bool, error) {
		if verb != "inc" {
			return false, nil
		}
		return true, s.Increment(atoi(arg))
	}, func(s *sdk.GCounter) string { return strconv.FormatUint(s.Value(), 10) })
}

func pncounterEntity() *sdk.CRDTEntity[*sdk.PNCounter] {
	return crdtEntity(func(s *sdk.PNCounter, verb, arg string) (bool, error) {
		switch verb {
		case "inc":
			return true, s.Increment(atoi(arg))
		case "dec":
			return true, s.Decrement(atoi(arg))
		}
		return false, nil
	}, func(s *sdk.PNCounter) string { return strconv.FormatInt(s.Value(), 10) })
}

func gsetEntity() *sdk.CRDTEntity[*sdk.GSet[*testpb.Item]] {
	return crdtEntity(func(s *sdk.GSet[*testpb.Item], verb, arg string) (bool, error) {
		if verb != "add" {
			return false, nil
		}
		return true, s.Add(item(arg))
	}, func(s *sdk.GSet[*testpb.Item]) string { return names(s.Elements()) })
}

func applyORSet(s *sdk.ORSet[*testpb.Item], verb, arg string) (bool, error) {
	switch verb {
	case "add":
		return true, s.Add(item(arg))
	case "remove":
		return true, s.Remove(item(arg))
	case "clear":
		return true, s.Clear()
	case "addnil":
		return true, s.Add(nil)
	}
	return false, nil
}

func orsetEntity() *sdk.CRDTEntity[*sdk.ORSet[*testpb.Item]] {
	return crdtEntity(applyORSet, func(s *sdk.ORSet[*testpb.Item]) string { return names(s.Elements()) })
}

func applyLWW(s *sdk.LWWRegister[*testpb.Item], verb, arg string) (bool, error) {
	switch verb {
	case "set":
		return true, s.Set(item(arg))
	case "setreverse":
		return true, s.SetWithClock(item(arg), sdk.ClockReverse, 0)
	case "setcustom", "setauto":
		v, n, _ := strings.Cut(arg, "@")
		clock := sdk.ClockCustom
		if verb == "setauto" {
			clock = sdk.ClockCustomAutoIncrement
		}
		return true, s.SetWithClock(item(v), clock, atoi(n))
	}
	return false, nil
}

func renderLWW(s *sdk.LWWRegister[*testpb.Item]) string {
	if !s.HasValue() {
		return "<none>"
	}
	return s.Get().GetName()
}

func lwwEntity() *sdk.CRDTEntity[*sdk.LWWRegister[*testpb.Item]] {
	return crdtEntity(applyLWW, renderLWW)
}

func flagEntity() *sdk.CRDTEntity[*sdk.Flag] {
	return crdtEntity(func(s *sdk.Flag, verb, _ string) (bool, error) {
		if verb != "enable" {
			return false, nil
		}
		return true, s.Enable()
	}, func(s *sdk.Flag) string { return strconv.FormatBool(s.Enabled()) })
}

func applyVote(s *sdk.Vote, verb, arg string) (bool, error) {
	if verb != "vote" {
		return false, nil
	}
	return true, s.Vote(arg == "true")
}

func renderVote(s *sdk.Vote) string {
	return fmt.Sprintf("self=%v for=%d voters=%d", s.SelfVote(), s.VotesFor(), s.Voters())
}

func voteEntity() *sdk.CRDTEntity[*sdk.Vote] { return crdtEntity(applyVote, renderVote) }

type counterMap = sdk.ORMap[*testpb.Item, *sdk.PNCounter]

// ormapEntity is a map of counters: "inc:K=N", "create:K", "drop:K", "clear".
func ormapEntity() *sdk.CRDTEntity[*counterMap] {
	return crdtEntity(func(s *counterMap, verb, arg string) (bool, error) {
		switch verb {
		case "inc":
			k, n, _ := strings.Cut(arg, "=")
			c, err := s.GetOrCreate(item(k))
			if err != nil {
				return true, err
			}
			return true, c.Increment(atoi(n))
		case "create":
			_, err := s.GetOrCreate(item(arg))
			return true, err
		case "drop":
			return true, s.Remove(item(arg))
		case "clear":
			return true, s.Clear()
		}
		return false, nil
	}, renderCounterMap)
}

func renderCounterMap(s *counterMap) string {
	var parts []string
	for k, v := range s.All() {
		parts = append(parts, fmt.Sprintf("%s=%d", k.GetName(), v.Value()))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

type setMap = sdk.ORMap[*testpb.Item, *sdk.ORSet[*testpb.Item]]

// setMapEntity is a map of sets: "add:K=X", "remove:K=X", "drop:K".
func setMapEntity() *sdk.CRDTEntity[*setMap] {
	return crdtEntity(func(s *setMap, verb, arg string) (bool, error) {
		k, x, _ := strings.Cut(arg, "=")
		switch verb {
		case "add", "remove":
			set, err := s.GetOrCreate(item(k))
			if err != nil {
				return true, err
			}
			return applyORSet(set, verb, x)
		case "drop":
			return true, s.Remove(item(k))
		}
		return false, nil
	}, func(s *setMap) string {
		var parts []string
		for k, v := range s.All() {
			parts = append(parts, k.GetName()+"={"+names(v.Elements())+"}")
		}
		return strings.Join(parts, ",")
	})
}

type registerMap = sdk.ORMap[*testpb.Item, *sdk.LWWRegister[*testpb.Item]]

// registerMapEntity is a map of registers: "set:K=X", "create:K".
func registerMapEntity() *sdk.CRDTEntity[*registerMap] {
	return crdtEntity(func(s *registerMap, verb, arg string) (bool, error) {
		k, x, _ := strings.Cut(arg, "=")
		switch verb {
		case "set":
			r, err := s.GetOrCreate(item(k))
			if err != nil {
				return true, err
			}
			return true, r.Set(item(x))
		case "create":
			_, err := s.GetOrCreate(item(k))
			return true, err
		}
		return false, nil
	}, func(s *registerMap) string {
		var parts []string
		for k, v := range s.All() {
			parts = append(parts, k.GetName()+"="+v.Get().GetName())
		}
		return strings.Join(parts, ",")
	})
}

// anyMapEntity reads a map of any CRDTs (it can change only what exists).
func anyMapEntity() *sdk.CRDTEntity[*sdk.ORMap[*anypb.Any, sdk.CRDT]] {
	return crdtEntity(func(s *sdk.ORMap[*anypb.Any, sdk.CRDT], verb, arg string) (bool, error) {
		switch verb {
		case "create":
			_, err := s.GetOrCreate(anyItem(arg))
			return true, err
		case "inc":
			v, ok := s.Get(anyItem(arg))
			if !ok {
				return true, errors.New("no entry")
			}
			return true, v.(*sdk.GCounter).Increment(1)
		}
		return false, nil
	}, func(s *sdk.ORMap[*anypb.Any, sdk.CRDT]) string {
		var parts []string
		for k, v := range s.All() {
			it := &testpb.Item{}
			_ = k.UnmarshalTo(it)
			var val string
			switch v := v.(type) {
			case *sdk.GCounter:
				val = strconv.FormatUint(v.Value(), 10)
			case *sdk.ORSet[*anypb.Any]:
				val = fmt.Sprintf("set of %d", v.Len())
			case *sdk.Vote:
				val = renderVote(v)
			default:
				val = fmt.Sprintf("%T", v)
			}
			parts = append(parts, it.GetName()+"="+val)
		}
		return strings.Join(parts, ",")
	})
}

// anyItem is an Item as an element: the deterministic encoding the SDK uses.
func anyItem(name string) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, item(name), proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return a
}

func anyItems(names ...string) []*anypb.Any {
	out := make([]*anypb.Any, len(names))
	for i, n := range names {
		out[i] = anyItem(n)
	}
	return out
}

// Protocol deltas, as the tests expect them.

func gcounterOp(n uint64) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gcounter{Gcounter: &crdtpb.GCounterDelta{Increment: n}}}
}

func pncounterOp(n int64) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Pncounter{Pncounter: &crdtpb.PNCounterDelta{Change: n}}}
}

func gsetOp(added ...string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Gset{Gset: &crdtpb.GSetDelta{Added: anyItems(added...)}}}
}

func orsetOp(cleared bool, removed, added []string) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: &crdtpb.ORSetDelta{
		Cleared: cleared, Removed: anyItems(removed...), Added: anyItems(added...),
	}}}
}

func lwwOp(v string, clock crdtpb.CrdtClock, custom int64) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Lwwregister{Lwwregister: &crdtpb.LWWRegisterDelta{
		Value: anyItem(v), Clock: clock, CustomClockValue: custom,
	}}}
}

func flagOp() *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Flag{Flag: &crdtpb.FlagDelta{Value: true}}}
}

func voteOp(v bool) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: v}}}
}

func voteState(self bool, votesFor, voters int32) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: self, VotesFor: votesFor, TotalVoters: voters}}}
}

type entryOp struct {
	key string
	op  *crdtpb.CrdtDelta
}

func ormapOp(cleared bool, removed []string, updated, added []entryOp) *crdtpb.CrdtDelta {
	d := &crdtpb.ORMapDelta{Cleared: cleared, Removed: anyItems(removed...)}
	for _, e := range updated {
		d.Updated = append(d.Updated, &crdtpb.ORMapEntryDelta{Key: anyItem(e.key), Delta: e.op})
	}
	for _, e := range added {
		d.Added = append(d.Added, &crdtpb.ORMapEntryDelta{Key: anyItem(e.key), Delta: e.op})
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Ormap{Ormap: d}}
}
