// Package catalog owns what the runtime knows about the user function's services: the
// descriptors of an EntitySpec turned into a Catalog of Services and Methods (entity kind,
// persistence id, passivation, entity-key fields and the Java-compatible rendering of entity
// ids), Discover and ReportError (the Cloudstate discovery handshake and protocol-version check),
// the spec errors (SpecError, SpecProblem) and the sentinel errors of the runtime (ErrNotOwner,
// ErrUnavailable, ErrOutcomeUnknown, CommandFailure, …) that the front door maps to gRPC codes.
//
// It does no serving: the front door (processor/internal/frontdoor) and the runtime (processor)
// both read a Catalog. ErrNotOwner and ErrOverloaded are the pure core's sentinels
// (processor/internal/core), re-exported, so errors.Is matches the core's answers.
package catalog
