// Package proto holds kstate's .proto sources and, in sub-packages, the Go generated from them
// (`make generate`; never edit the *.pb.go files). It has no code of its own: its tests pin the
// wire layout of the generated types.
//
// Import paths of the generated packages:
//
//	github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb   cloudstate (entity.proto, entity_key.proto, legacy_entity_key.proto, eventing.proto)
//	github.com/kstatehq/kstate/proto/cloudstate/eventsourcedpb cloudstate.eventsourced
//	github.com/kstatehq/kstate/proto/cloudstate/valueentitypb  cloudstate.valueentity
//	github.com/kstatehq/kstate/proto/cloudstate/crdtpb         cloudstate.crdt
//	github.com/kstatehq/kstate/proto/cloudstate/actionpb       cloudstate.action
//	github.com/kstatehq/kstate/proto/kstate/v1                 kstate.v1 (package kstatev1)
//
// The Cloudstate packages speak protocol 0.2 byte for byte, so any Cloudstate language-support
// library works against kstate. proto/google/api holds google.api.http's .proto sources for
// compilation only: its Go types are genproto's (google.golang.org/genproto/googleapis/api/annotations).
package proto
