// Package projection follows journals and state topics to build read models, event-log eventing and
// the Subscribe stream. It imports broker and partition's store API only.
//
// The eventing and projections issue fills it; the package exists now so the dependency graph is
// fixed from the start (see internal/lint).
package projection
