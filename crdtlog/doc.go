// Package crdtlog holds kstate's pure CRDT types (GCounter, PNCounter, GSet, ORSet, LWWRegister,
// Flag, ORMap, Vote), their deltas, merge and delta-log encoding. It does no IO.
//
// The CRDT entity issue fills it; the package exists now so the dependency graph is fixed from the
// start (see internal/lint).
package crdtlog
