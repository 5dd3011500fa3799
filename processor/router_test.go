package processor

import "testing"

func TestNotSent(t *testing.T) {
	for msg, want := range map[string]bool{
		`connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`: true,
		`error reading from server: EOF`:       false, // the request may have been processed
		`unavailable: commit: outcome unknown`: false,
		`transport is closing`:                 false,
	} {
		if got := notSent(msg); got != want {
			t.Errorf("notSent(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestSameType(t *testing.T) {
	if !sameType("type.googleapis.com/a.B", "type.googleapis.com/a.B") || !sameType("example.com/x/a.B", "type.googleapis.com/a.B") || sameType("type.googleapis.com/a.C", "type.googleapis.com/a.B") {
		t.Fatal("sameType compares by message name")
	}
}
