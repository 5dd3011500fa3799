// Package chat is the presence and friends part of Cloudstate's chat sample, written as kstate
// CRDT entities with the Go SDK.
//
// Presence (NewPresence) is a Vote per user: every kstate node that hosts the user's entity
// votes, and the user is online while at least one node votes true. A node votes true while a
// client of the user holds a Connect stream open through it, and false when the last such
// stream is cancelled; when a node leaves the application, kstate removes its vote, so a user
// connected only through a crashed node goes offline. Monitor streams the user's online status:
// the current status first, then each change, wherever it was made.
//
// Friends (NewFriends) is an ORSet of friends per user: Add and Remove change it on the node
// that serves the call, every node converges to the same set, and an Add concurrent with a
// Remove of the same friend wins.
//
// Both are keyed by the user's name (cloudstate.entity_key in chat.proto). Serve them in
// process with a kstate runtime (Entities), or standalone as a user function with cmd/chat-uf.
package chat

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kstatehq/kstate/examples/chat/chatpb"
	"github.com/kstatehq/kstate/sdk"
)

const (
	// PresenceService is the gRPC service of the presence entity.
	PresenceService = "com.example.chat.Presence"
	// FriendsService is the gRPC service of the friends entity.
	FriendsService = "com.example.chat.Friends"
	// PresencePersistenceID names the presence entities' replicated state in kstate.
	PresencePersistenceID = "chat-presence"
	// FriendsPersistenceID names the friends entities' replicated state in kstate.
	FriendsPersistenceID = "chat-friends"
)

// Entities returns the presence and friends entities, for sdk.ListenAndServe,
// sdk.Server.Register or a kstate runtime.
func Entities() []sdk.Entity {
	return []sdk.Entity{NewPresence(), NewFriends()}
}

// NewPresence returns the presence entity definition: a Vote per user.
func NewPresence() *sdk.CRDTEntity[*sdk.Vote] {
	p := sdk.NewCRDT[*sdk.Vote](PresenceService).PersistenceID(PresencePersistenceID)
	sdk.CRDTStreamed(p, "Connect", Connect)
	sdk.CRDTStreamed(p, "Monitor", Monitor)
	return p
}

// Connect makes the user online while the stream is open: this node votes true now, and votes
// false when the last Connect stream of the user through this node is cancelled. The stream
// sends no elements.
func Connect(ctx *sdk.CRDTStreamContext[*sdk.Vote, *emptypb.Empty], in *chatpb.User) (*emptypb.Empty, error) {
	if !ctx.Streamed() {
		return nil, ctx.Fail("Connect must be called as a stream: the user is online while it is open")
	}
	if err := ctx.State().Vote(true); err != nil {
		return nil, err
	}
	ctx.OnCancel(func(cc *sdk.CRDTCancelContext[*sdk.Vote]) error {
		if cc.OpenStreams("Connect") > 0 {
			return nil // another client of the user is still connected through this node
		}
		return cc.State().Vote(false)
	})
	return nil, nil
}

// Monitor streams the user's online status: the current one, then one element each time it
// changes.
func Monitor(ctx *sdk.CRDTStreamContext[*sdk.Vote, *chatpb.OnlineStatus], in *chatpb.User) (*chatpb.OnlineStatus, error) {
	online := ctx.State().AtLeastOne()
	ctx.OnChange(func(cc *sdk.CRDTChangeContext[*sdk.Vote]) (*chatpb.OnlineStatus, error) {
		now := cc.State().AtLeastOne()
		if now == online {
			return nil, nil // the votes changed, the status did not
		}
		online = now
		return &chatpb.OnlineStatus{Online: now}, nil
	})
	return &chatpb.OnlineStatus{Online: online}, nil
}

// NewFriends returns the friends entity definition: an ORSet of friends per user.
func NewFriends() *sdk.CRDTEntity[*sdk.ORSet[*chatpb.Friend]] {
	f := sdk.NewCRDT[*sdk.ORSet[*chatpb.Friend]](FriendsService).PersistenceID(FriendsPersistenceID)
	sdk.CRDTCommand(f, "Add", Add)
	sdk.CRDTCommand(f, "Remove", Remove)
	sdk.CRDTCommand(f, "GetFriends", GetFriends)
	return f
}

// Add adds a friend. The friend's name must be set and differ from the user's.
func Add(ctx *sdk.CRDTContext[*sdk.ORSet[*chatpb.Friend]], in *chatpb.FriendRequest) (*emptypb.Empty, error) {
	switch name := in.GetFriend().GetUser(); name {
	case "":
		return nil, ctx.Fail("A friend needs a name.")
	case in.GetUser():
		return nil, ctx.Fail("%s cannot be their own friend.", name)
	}
	return &emptypb.Empty{}, ctx.State().Add(&chatpb.Friend{User: in.GetFriend().GetUser()})
}

// Remove removes a friend; removing someone who is not a friend changes nothing.
func Remove(ctx *sdk.CRDTContext[*sdk.ORSet[*chatpb.Friend]], in *chatpb.FriendRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, ctx.State().Remove(&chatpb.Friend{User: in.GetFriend().GetUser()})
}

// GetFriends lists the user's friends by name.
func GetFriends(ctx *sdk.CRDTContext[*sdk.ORSet[*chatpb.Friend]], _ *chatpb.User) (*chatpb.FriendsList, error) {
	friends := ctx.State().Elements()
	slices.SortFunc(friends, func(a, b *chatpb.Friend) int { return cmp.Compare(a.GetUser(), b.GetUser()) })
	return &chatpb.FriendsList{Friends: friends}, nil
}
