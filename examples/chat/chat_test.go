package chat_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kstatehq/kstate/examples/chat"
	"github.com/kstatehq/kstate/examples/chat/chatpb"
	"github.com/kstatehq/kstate/proto/cloudstate/crdtpb"
	"github.com/kstatehq/kstate/sdk"
	"github.com/kstatehq/kstate/sdk/sdktest"
)

func online(t *testing.T, m sdktest.StreamMessage) bool {
	t.Helper()
	s, ok := m.Reply.(*chatpb.OnlineStatus)
	if !ok {
		t.Fatalf("message %+v is not an OnlineStatus", m)
	}
	return s.GetOnline()
}

func wantStatus(t *testing.T, st *sdktest.CRDTStream, want bool) {
	t.Helper()
	m, ok := st.Next()
	if !ok {
		t.Fatalf("no status message, want online=%v", want)
	}
	if got := online(t, m); got != want {
		t.Fatalf("online %v, want %v", got, want)
	}
}

func wantQuiet(t *testing.T, st *sdktest.CRDTStream) {
	t.Helper()
	if m, ok := st.Next(); ok {
		t.Fatalf("unexpected status %+v", m)
	}
}

func stream(t *testing.T, h *sdktest.CRDT[*sdkVote], method string) *sdktest.CRDTStream {
	t.Helper()
	st, err := h.Stream(method, &chatpb.User{Name: "alice"})
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return st
}

func TestPresence(t *testing.T) {
	h := sdktest.NewCRDT(t, chat.NewPresence(), "alice")
	monitor := stream(t, h, "Monitor")
	if online(t, sdktest.StreamMessage{Reply: monitor.First.Reply}) {
		t.Fatal("alice starts online")
	}
	phone := stream(t, h, "Connect")
	if !phone.Open || phone.First.Reply != nil || !proto.Equal(phone.First.Update, vote(true)) {
		t.Fatalf("connect: open %v, %+v", phone.Open, phone.First)
	}
	wantStatus(t, monitor, true)
	laptop := stream(t, h, "Connect")
	if laptop.First.Update != nil {
		t.Fatalf("a second connection voted again: %v", laptop.First.Update)
	}
	wantQuiet(t, monitor)

	if res := phone.Cancel(); res.Update != nil {
		t.Fatalf("cancelling one of two connections voted %v", res.Update)
	}
	wantQuiet(t, monitor)
	if res := laptop.Cancel(); !proto.Equal(res.Update, vote(false)) {
		t.Fatalf("cancelling the last connection: %+v", res)
	}
	wantStatus(t, monitor, false)

	// Connected through another node, then that node leaves the application.
	h.Remote("node-b", vote(true))
	wantStatus(t, monitor, true)
	h.Remote("node-c", vote(false))
	wantQuiet(t, monitor)
	h.RemoveNode("node-b")
	wantStatus(t, monitor, false)
	if v := h.State(); v.Voters() != 2 || v.VotesFor() != 0 {
		t.Fatalf("voters %d, votes for %d", v.Voters(), v.VotesFor())
	}
	monitor.Cancel()
}

func TestConnectMustStream(t *testing.T) {
	h := sdktest.NewCRDT(t, chat.NewPresence(), "alice")
	_, err := h.Command("Connect", &chatpb.User{Name: "alice"})
	var f *sdktest.Failure
	if !errors.As(err, &f) {
		t.Fatalf("unstreamed Connect: %v", err)
	}
}

func friends(t *testing.T, h *sdktest.CRDT[*friendSet]) []string {
	t.Helper()
	res, err := h.Command("GetFriends", &chatpb.User{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range res.Reply.(*chatpb.FriendsList).GetFriends() {
		names = append(names, f.GetUser())
	}
	return names
}

func friendOp(name string) *chatpb.FriendRequest {
	return &chatpb.FriendRequest{User: "alice", Friend: &chatpb.Friend{User: name}}
}

func TestFriends(t *testing.T) {
	h := sdktest.NewCRDT(t, chat.NewFriends(), "alice")
	for _, n := range []string{"carol", "bob", "carol"} {
		if _, err := h.Command("Add", friendOp(n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{"", "alice"} {
		if _, err := h.Command("Add", friendOp(bad)); err == nil {
			t.Fatalf("adding %q succeeded", bad)
		}
	}
	if got := friends(t, h); len(got) != 2 || got[0] != "bob" || got[1] != "carol" {
		t.Fatalf("friends %v", got)
	}
	res, err := h.Command("Remove", friendOp("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Update.GetOrset().GetRemoved() == nil {
		t.Fatalf("remove sent %v", res.Update)
	}
	if _, err := h.Command("Remove", friendOp("nobody")); err != nil {
		t.Fatal(err)
	}
	// Another node adds dave, and re-adds carol while this node removes her: carol stays.
	if _, err := h.Command("Remove", friendOp("carol")); err != nil {
		t.Fatal(err)
	}
	h.Remote("node-b", addFriends(t, "carol", "dave"))
	if got := friends(t, h); len(got) != 2 || got[0] != "carol" || got[1] != "dave" {
		t.Fatalf("friends %v", got)
	}
	h.Restart()
	if got := friends(t, h); len(got) != 2 {
		t.Fatalf("after restart %v", got)
	}
}

func addFriends(t *testing.T, names ...string) *crdtpb.CrdtDelta {
	t.Helper()
	d := &crdtpb.ORSetDelta{}
	for _, n := range names {
		a, err := anypb.New(&chatpb.Friend{User: n})
		if err != nil {
			t.Fatal(err)
		}
		d.Added = append(d.Added, a)
	}
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Orset{Orset: d}}
}

func vote(v bool) *crdtpb.CrdtDelta {
	return &crdtpb.CrdtDelta{Delta: &crdtpb.CrdtDelta_Vote{Vote: &crdtpb.VoteDelta{SelfVote: v}}}
}

type (
	sdkVote   = sdk.Vote
	friendSet = sdk.ORSet[*chatpb.Friend]
)
