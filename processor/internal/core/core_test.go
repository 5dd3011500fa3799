package core

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The scenarios drive the core with scripted inputs at scripted times and compare each Ready,
// rendered as one line, with the expected line. Rendering (see render):
//
//	dispatch 1>a+      command 1 to entity a, activating it (no "+": already active)
//	answer 2:notowner  command 2 answered by the core
//	written 1:ok       write of command 1 answered
//	txn 3[1,2]         transaction 3 with the writes of commands 1 and 2 (a write of 0 records is a barrier)
//	passivate a        entity a passivated
//	giveup:fenced      the partition is given up
//	stopped            nothing in flight any more
//	tick@1500          next tick at t0+1500ms
//
// Each scenario is a defect found in review (issue "partition runtime as a pure state machine")
// or a rule of the package doc; each would fail against the old owner loop's policy.

var t0 = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

type harness struct {
	t *testing.T
	c *Core
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	return &harness{t: t, c: New(cfg)}
}

// serving restores the core at time 0 with a fence long ago (no lease wait).
func (h *harness) serving() *harness {
	h.c.Restored(t0, t0.Add(-time.Hour))
	h.c.Ready()
	return h
}

func (h *harness) expect(what string, want string) {
	h.t.Helper()
	if got := render(h.c.Ready()); got != want {
		h.t.Fatalf("after %s:\n got: %s\nwant: %s", what, got, want)
	}
}

func cmd(id CmdID, entity string) Command {
	return Command{ID: id, Entity: EntityKey{Service: "s", ID: entity}}
}

func (h *harness) command(at int, c Command, want string) {
	h.t.Helper()
	h.c.Command(ms(at), c)
	h.expect(fmt.Sprintf("command %d at %dms", c.ID, at), want)
}

func (h *harness) write(at int, w Write, want string) {
	h.t.Helper()
	h.c.Write(ms(at), w)
	h.expect(fmt.Sprintf("write %d at %dms", w.Cmd, at), want)
}

func (h *harness) done(at int, id CmdID, exited bool, want string) {
	h.t.Helper()
	h.c.Done(ms(at), id, exited)
	h.expect(fmt.Sprintf("done %d at %dms", id, at), want)
}

func (h *harness) committed(at int, txn uint64, out Outcome, want string) {
	h.t.Helper()
	var cause error
	if out != Committed {
		cause = errors.New("cause")
	}
	h.c.Committed(ms(at), txn, out, cause)
	h.expect(fmt.Sprintf("txn %d outcome %d at %dms", txn, out, at), want)
}

func (h *harness) tick(at int, want string) {
	h.t.Helper()
	h.c.Tick(ms(at))
	h.expect(fmt.Sprintf("tick at %dms", at), want)
}

func (h *harness) stop(want string) {
	h.t.Helper()
	h.c.Stop()
	h.expect("stop", want)
}

func recs(id CmdID, n int) Write { return Write{Cmd: id, Records: n, Bytes: 100 * n, Largest: 100} }

func errName(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{
		{ErrNotOwner, "notowner"}, {ErrOverloaded, "overloaded"}, {ErrExpired, "expired"},
		{ErrRecordTooLarge, "toolarge"}, {ErrInvalidRecord, "invalid"}, {ErrAborted, "aborted"},
		{ErrFenced, "fenced"}, {ErrOutcomeUnknown, "unknown"},
	} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	if err == nil {
		return "ok"
	}
	return "err(" + err.Error() + ")"
}

func render(rd Ready) string {
	var parts []string
	for _, d := range rd.Dispatch {
		s := fmt.Sprintf("dispatch %d>%s", d.Cmd, d.Entity.ID)
		if d.Activate {
			s += "+"
		}
		parts = append(parts, s)
	}
	for _, a := range rd.Answers {
		parts = append(parts, fmt.Sprintf("answer %d:%s", a.Cmd, errName(a.Err)))
	}
	for _, w := range rd.Written {
		parts = append(parts, fmt.Sprintf("written %d:%s", w.Cmd, errName(w.Err)))
	}
	if rd.Txn != nil {
		ids := make([]string, len(rd.Txn.Cmds))
		for i, c := range rd.Txn.Cmds {
			ids[i] = fmt.Sprint(c)
		}
		parts = append(parts, fmt.Sprintf("txn %d[%s]", rd.Txn.ID, strings.Join(ids, ",")))
	}
	for _, k := range rd.Passivate {
		parts = append(parts, "passivate "+k.ID)
	}
	if rd.GiveUp != nil {
		parts = append(parts, "giveup:"+strings.SplitN(rd.GiveUp.Error(), ":", 2)[0])
	}
	if rd.Stopped {
		parts = append(parts, "stopped")
	}
	if !rd.NextTick.IsZero() {
		parts = append(parts, fmt.Sprintf("tick@%d", rd.NextTick.Sub(t0).Milliseconds()))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " | ")
}

func TestGroupCommitAndSerialEntities(t *testing.T) {
	h := newHarness(t, Config{ReadLease: time.Second}).serving()
	h.command(1, cmd(1, "a"), "dispatch 1>a+")
	h.command(2, cmd(2, "a"), "-") // queued behind 1: one command at a time per entity
	h.command(3, cmd(3, "b"), "dispatch 3>b+")
	h.write(4, recs(1, 1), "txn 1[1]")
	h.write(5, recs(3, 2), "-") // a transaction is in flight: batch behind it
	h.committed(6, 1, Committed, "written 1:ok | txn 2[3]")
	h.done(7, 1, false, "dispatch 2>a")
	h.committed(8, 2, Committed, "written 3:ok")
	h.done(9, 3, false, "-")
}

// Defect 2: the lease started when a commit returned. A transaction sent at 0 that returns at
// 900ms gives a lease until 1000ms, not 1900ms.
func TestLeaseStartsWhenTheTransactionIsSent(t *testing.T) {
	h := newHarness(t, Config{ReadLease: time.Second}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.write(0, recs(1, 1), "txn 1[1]")
	h.committed(900, 1, Committed, "written 1:ok")
	h.done(900, 1, false, "-")
	h.command(950, cmd(2, "a"), "dispatch 2>a")
	h.write(950, recs(2, 0), "written 2:ok") // within the lease: answered from memory
	h.done(950, 2, false, "-")
	h.command(1000, cmd(3, "a"), "dispatch 3>a")
	h.write(1000, recs(3, 0), "txn 2[3]") // lease over: a barrier proves ownership first
	h.committed(1010, 2, Committed, "written 3:ok")
}

// Defect 2, the new owner's side: it answers nothing until an old owner's lease, which may have
// started just before the fence completed, has run out.
func TestNewOwnerWaitsOutTheOldLease(t *testing.T) {
	h := newHarness(t, Config{ReadLease: time.Second, LeaseMargin: 100 * time.Millisecond})
	h.command(0, cmd(1, "a"), "-")
	h.c.Restored(ms(300), ms(200)) // fence completed at 200ms
	h.expect("restored", "tick@1300")
	h.command(400, cmd(2, "b"), "tick@1300")
	h.tick(1299, "tick@1300")
	h.tick(1300, "dispatch 1>a+ | dispatch 2>b+")
}

func TestNoLeaseMeansEveryReadIsABarrier(t *testing.T) {
	h := newHarness(t, Config{})
	h.c.Restored(t0, t0)
	h.expect("restored", "-") // no lease: nothing to wait out
	h.command(1, cmd(1, "a"), "dispatch 1>a+")
	h.write(1, recs(1, 1), "txn 1[1]")
	h.committed(2, 1, Committed, "written 1:ok")
	h.done(2, 1, false, "-")
	h.command(3, cmd(2, "a"), "dispatch 2>a")
	h.write(3, recs(2, 0), "txn 2[2]")
}

// Defects 1 and 4: an invalid or oversize write fails only its own command, never enters a
// transaction, and the partition keeps serving.
func TestAdmissionFailsOnlyTheBadCommand(t *testing.T) {
	h := newHarness(t, Config{MaxRecordBytes: 1000}).serving()
	h.command(1, cmd(1, "a"), "dispatch 1>a+")
	h.command(1, cmd(2, "b"), "dispatch 2>b+")
	h.command(1, cmd(3, "c"), "dispatch 3>c+")
	h.write(2, recs(1, 1), "txn 1[1]")
	h.write(2, Write{Cmd: 2, Records: 1, Bytes: 1500, Largest: 1500}, "written 2:toolarge")
	h.write(2, Write{Cmd: 3, Records: 1, Bytes: 10, Largest: 10, Invalid: errors.New("event without type")}, "written 3:invalid")
	h.committed(3, 1, Committed, "written 1:ok")
	h.done(3, 2, true, "-") // the entity whose write failed restarts from durable state
	h.command(4, cmd(4, "b"), "dispatch 4>b+")
}

// Defect 4: an aborted batch's innocent commands are retried once, each alone, not failed.
func TestAbortedBatchRetriesEachWriteAlone(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.command(0, cmd(2, "b"), "dispatch 2>b+")
	h.command(0, cmd(3, "c"), "dispatch 3>c+")
	h.write(1, recs(1, 1), "txn 1[1]")
	h.write(1, recs(2, 1), "-")
	h.committed(2, 1, Committed, "written 1:ok | txn 2[2]")
	h.write(3, recs(3, 1), "-")
	h.committed(4, 2, Aborted, "txn 3[2]") // retried alone
	h.committed(5, 3, Aborted, "written 2:aborted | txn 4[3]")
	h.committed(6, 4, Committed, "written 3:ok")
}

// Defect 5: commands queued behind an in-flight command hung to their deadline when the partition
// moved. A stop answers the partition queue, the entity queues and the writes not yet in a
// transaction at once, and waits only for the transaction in flight.
func TestStopAnswersEveryQueue(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.command(0, cmd(2, "a"), "-")
	h.command(0, cmd(3, "a"), "-")
	h.command(0, cmd(4, "b"), "dispatch 4>b+")
	h.command(0, cmd(5, "c"), "dispatch 5>c+")
	h.write(1, recs(4, 1), "txn 1[4]")
	h.write(1, recs(5, 1), "-")
	h.stop("answer 2:notowner | answer 3:notowner | written 5:notowner")
	h.command(2, cmd(6, "d"), "answer 6:notowner")
	h.write(2, recs(1, 1), "written 1:notowner") // the running command's write is refused
	h.committed(3, 1, Committed, "written 4:ok | stopped")
}

// Found by the e2e suite: a revocation while a transaction is in flight, and that transaction is
// then fenced — the stop must still finish (the partition loop waited forever, and with it the
// group's revoke callback).
func TestStopThenFencedTransactionStops(t *testing.T) {
	for _, out := range []Outcome{Fenced, Indefinite, StorageFailed, Aborted, Committed} {
		h := newHarness(t, Config{}).serving()
		h.command(0, cmd(1, "a"), "dispatch 1>a+")
		h.write(1, recs(1, 1), "txn 1[1]")
		h.stop("-")
		h.c.Committed(ms(2), 1, out, errors.New("cause"))
		if rd := h.c.Ready(); !rd.Stopped || len(rd.Written) != 1 {
			t.Fatalf("outcome %d after stop: %s, want the write answered and stopped", out, render(rd))
		}
	}
}

func TestStopWhileRestoringAnswersThePartitionQueue(t *testing.T) {
	h := newHarness(t, Config{})
	h.command(0, cmd(1, "a"), "-")
	h.stop("answer 1:notowner | stopped")
}

// A fenced transaction gives the partition up; nothing queued waits.
func TestFencedGivesUp(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.command(0, cmd(2, "a"), "-")
	h.command(0, cmd(3, "b"), "dispatch 3>b+")
	h.write(1, recs(1, 1), "txn 1[1]")
	h.write(1, recs(3, 1), "-")
	h.committed(2, 1, Fenced, "answer 2:notowner | written 1:fenced | written 3:notowner | giveup:fenced | stopped")
}

func TestIndefiniteOutcomeGivesUp(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.write(1, recs(1, 1), "txn 1[1]")
	h.committed(2, 1, Indefinite, "written 1:unknown | giveup:transaction outcome unknown | stopped")
}

// A storage failure after a commit: the commands did happen (they are in Kafka); the partition
// is reloaded.
func TestStorageFailureAnswersCommittedThenGivesUp(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.write(1, recs(1, 1), "txn 1[1]")
	h.committed(2, 1, StorageFailed, "written 1:ok | giveup:local store failed | stopped")
}

// A command whose deadline passed before it reached its entity is not run.
func TestExpiredCommandsAreNotRun(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	late := cmd(2, "a")
	late.Deadline = ms(50)
	h.command(0, late, "-")
	h.command(0, cmd(3, "a"), "-")
	h.done(60, 1, false, "dispatch 3>a | answer 2:expired")
	past := cmd(4, "b")
	past.Deadline = ms(60)
	h.command(60, past, "answer 4:expired")
}

func TestExpiredWhileRestoring(t *testing.T) {
	h := newHarness(t, Config{})
	c := cmd(1, "a")
	c.Deadline = ms(100)
	h.command(0, c, "tick@100")
	h.tick(100, "answer 1:expired")
}

// Bounded queues: RESOURCE_EXHAUSTED rather than unbounded memory.
func TestBoundedQueues(t *testing.T) {
	h := newHarness(t, Config{EntityQueue: 1, PartitionQueue: 1})
	h.command(0, cmd(1, "a"), "-")
	h.command(0, cmd(2, "a"), "answer 2:overloaded")
	h.c.Restored(t0, t0.Add(-time.Hour))
	h.expect("restored", "dispatch 1>a+")
	h.command(1, cmd(3, "a"), "-")
	h.command(1, cmd(4, "a"), "answer 4:overloaded")
}

// Bounded active entities: the least recently used idle one is passivated to make room.
func TestMaxActiveEntitiesPassivatesLRU(t *testing.T) {
	h := newHarness(t, Config{MaxActiveEntities: 2}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.command(0, cmd(2, "b"), "dispatch 2>b+")
	h.command(0, cmd(3, "c"), "answer 3:overloaded") // both busy
	h.done(1, 2, false, "-")                         // b idle first
	h.done(2, 1, false, "-")
	h.command(3, cmd(4, "c"), "dispatch 4>c+ | passivate b")
	h.command(4, cmd(5, "a"), "dispatch 5>a")
}

func TestIdlePassivation(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	c := cmd(1, "a")
	c.Passivation = 100 * time.Millisecond
	h.command(0, c, "dispatch 1>a+")
	h.done(10, 1, false, "tick@110")
	c.ID = 2
	h.command(50, c, "dispatch 2>a | tick@110")
	h.done(60, 2, false, "tick@110")
	h.tick(110, "tick@160") // used since: re-armed
	h.tick(160, "passivate a")
	c.ID = 3
	h.command(170, c, "dispatch 3>a+")
}

// An entity whose stream failed is gone: its queued commands go to a fresh activation.
func TestExitedEntityReactivatesForQueuedCommands(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.command(0, cmd(2, "a"), "-")
	h.done(1, 1, true, "dispatch 2>a+")
}

func TestLingerBatches(t *testing.T) {
	h := newHarness(t, Config{CommitLinger: 5 * time.Millisecond, MaxBatchRecords: 3}).serving()
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.command(0, cmd(2, "b"), "dispatch 2>b+")
	h.command(0, cmd(3, "c"), "dispatch 3>c+")
	h.write(1, recs(1, 1), "tick@6")
	h.write(2, recs(2, 1), "tick@6")
	h.tick(6, "txn 1[1,2]")
	h.write(7, recs(3, 3), "-")
	h.committed(8, 1, Committed, "written 1:ok | written 2:ok | txn 2[3]") // batch full: no linger
}

func TestBatchCaps(t *testing.T) {
	h := newHarness(t, Config{MaxBatchRecords: 3, MaxBatchBytes: 1000}).serving()
	for i := 1; i <= 4; i++ {
		h.command(0, cmd(CmdID(i), fmt.Sprint(i)), fmt.Sprintf("dispatch %d>%d+", i, i))
	}
	h.write(1, recs(1, 1), "txn 1[1]")
	h.write(1, recs(2, 2), "-")
	h.write(1, recs(3, 2), "-")
	h.write(1, Write{Cmd: 4, Records: 1, Bytes: 900, Largest: 900}, "-")
	h.committed(2, 1, Committed, "written 1:ok | txn 2[2]") // 2+2 records > 3
	h.committed(3, 2, Committed, "written 2:ok | txn 3[3]") // 200+900 bytes > 1000
	h.committed(4, 3, Committed, "written 3:ok | txn 4[4]")
}

// Stray inputs (a write or done for a command that is not running) change nothing.
func TestStrayInputs(t *testing.T) {
	h := newHarness(t, Config{}).serving()
	h.write(0, recs(9, 1), "written 9:err(write for command 9, which is not running)")
	h.done(0, 9, false, "-")
	h.committed(0, 7, Committed, "-")
	h.command(0, cmd(1, "a"), "dispatch 1>a+")
	h.command(0, cmd(1, "a"), "answer 1:err(duplicate command id 1)")
}
