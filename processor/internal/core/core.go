// Package core is the pure state machine of one partition a node owns: which command runs when,
// which entity is active, what goes into which transaction, when a read may be answered from
// memory, what a move or a lost fence does to the work in flight.
//
// It follows etcd-raft's shape. The shell (processor's partition owner) feeds inputs — a command
// arrived, an entity produced records or finished a command, a transaction's outcome, the clock
// ticked, the partition is revoked — each with the current time, and after every input takes the
// Ready: commands to dispatch to entities, commands to answer, entity writes to answer,
// a transaction to start, entities to passivate, a reason to give the partition up, and when to
// tick next. The core does no IO, starts no goroutine, reads no clock and keeps no record bytes;
// the same inputs always give the same outputs, so its rules are tested with scripted scenarios.
//
// The rules it owns (each tested in core_test.go):
//   - Lease (RELIABILITY F2): a command that writes nothing is answered from memory only while a
//     lease runs, and the lease of a transaction starts when the transaction is sent, not when it
//     returns. A new owner answers nothing until ReadLease+LeaseMargin after its fence completed,
//     so an old owner's lease has surely run out. Without a lease (ReadLease 0) every such
//     command proves ownership with a barrier transaction.
//   - Admission: a write whose records failed validation or whose largest record exceeds
//     MaxRecordBytes fails only its own command and never enters a transaction; transactions are
//     capped by records and bytes.
//   - Aborts: the writes of an aborted transaction are retried once, each in a transaction of its
//     own, so one bad write cannot fail its batch's innocent commands.
//   - Give-up: a fenced or indefinite outcome, or a storage failure, gives the partition up.
//   - Moves: a stop answers every queued command (partition and entity queues) and every write not
//     yet in a transaction with ErrNotOwner, so the router retries them at the new owner; the
//     transaction in flight is waited for, so its commands learn their real outcome.
//   - Entities: one command at a time per entity, bounded queues (ErrOverloaded when full), a
//     bounded number of active entities (the least recently used idle one is passivated), idle
//     passivation per service timeout, and no command run after its deadline.
package core

import (
	"container/heap"
	"container/list"
	"errors"
	"fmt"
	"time"
)

// Errors the core answers commands and writes with. The shell maps them to client codes.
var (
	// ErrNotOwner: the partition is not (or no longer) served here; the command never ran, so the
	// router may retry it at the current owner.
	ErrNotOwner = errors.New("partition not owned by this node")
	// ErrOverloaded: a bounded queue is full; the command never ran.
	ErrOverloaded = errors.New("overloaded")
	// ErrExpired: the command's deadline passed before it reached its entity; it never ran.
	ErrExpired = errors.New("deadline passed before the command ran")
	// ErrRecordTooLarge: a record of the command is larger than the topic accepts; the command can
	// never succeed as it is.
	ErrRecordTooLarge = errors.New("record too large")
	// ErrInvalidRecord: a record of the command would not pass restore's validation; it never
	// becomes durable.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrAborted: the command's transaction was aborted twice; nothing of it is durable.
	ErrAborted = errors.New("transaction aborted")
	// ErrFenced: another owner fenced this partition while the command's transaction ran; nothing
	// of it is durable.
	ErrFenced = errors.New("fenced by a new owner")
	// ErrOutcomeUnknown: the command's transaction may or may not have committed.
	ErrOutcomeUnknown = errors.New("transaction outcome unknown")
)

// CmdID identifies one command of the partition; the shell assigns them, unique per partition.
type CmdID uint64

// EntityKey identifies an entity: its service and entity id.
type EntityKey struct {
	Service string
	ID      string
}

// Config holds the core's policies. Zero values take the documented defaults (see Defaults).
type Config struct {
	// ReadLease is how long after a transaction was sent (and then committed) a command that
	// writes nothing is answered from memory. 0 disables the lease: every such command commits a
	// barrier transaction first.
	ReadLease time.Duration
	// LeaseMargin is added to ReadLease before a new owner answers anything: it covers clock-rate
	// drift between nodes and scheduling delay. Default 100ms + ReadLease/20.
	LeaseMargin time.Duration
	// CommitLinger is how long to wait for more writes before a transaction starts when none is in
	// flight. 0 starts at once.
	CommitLinger time.Duration
	// MaxBatchRecords and MaxBatchBytes cap one transaction (a single larger write goes alone).
	// Defaults 2000 records, 8 MiB.
	MaxBatchRecords int
	MaxBatchBytes   int
	// MaxRecordBytes is the largest record a write may hold (the topics' max.message.bytes less
	// overhead). Default 1 MiB - 1 KiB.
	MaxRecordBytes int
	// MaxActiveEntities bounds the entities active at once; default 10000.
	MaxActiveEntities int
	// EntityQueue bounds the commands waiting for one entity behind the one it runs; default 1024.
	EntityQueue int
	// PartitionQueue bounds the commands waiting while the partition does not serve yet; default 4096.
	PartitionQueue int
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	if c.LeaseMargin <= 0 {
		c.LeaseMargin = 100*time.Millisecond + c.ReadLease/20
	}
	if c.MaxBatchRecords <= 0 {
		c.MaxBatchRecords = 2000
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 8 << 20
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = 1<<20 - 1<<10
	}
	if c.MaxActiveEntities <= 0 {
		c.MaxActiveEntities = 10000
	}
	if c.EntityQueue <= 0 {
		c.EntityQueue = 1024
	}
	if c.PartitionQueue <= 0 {
		c.PartitionQueue = 4096
	}
	return c
}

// Command is a command arriving for an entity of the partition.
type Command struct {
	ID     CmdID
	Entity EntityKey
	// Deadline is the caller's deadline; zero means none.
	Deadline time.Time
	// Passivation is the entity's idle timeout (its service's); zero never passivates.
	Passivation time.Duration
}

// expired reports whether the command's deadline has passed at now.
func (c Command) expired(now time.Time) bool {
	return !c.Deadline.IsZero() && !now.Before(c.Deadline)
}

// Write is what an entity's command asks to make durable.
type Write struct {
	Cmd CmdID
	// Records and Bytes count the records and their encoded size; Records 0 is a read (the lease
	// or a barrier proves ownership).
	Records int
	Bytes   int
	// Largest is the size of the largest record.
	Largest int
	// Invalid, when set, is why a record failed validation.
	Invalid error
}

// Outcome is how a transaction ended.
type Outcome int

// Transaction outcomes, as the shell classifies the broker's answer.
const (
	Committed     Outcome = iota
	Aborted               // nothing visible; the producer is usable
	Fenced                // another producer owns the partition
	Indefinite            // the outcome is unknown
	StorageFailed         // committed, but the local store could not apply it
)

// Dispatch hands a command to its entity. Activate means a new incarnation of the entity must be
// started first (init from durable state); the shell keeps at most one per key.
type Dispatch struct {
	Cmd      CmdID
	Entity   EntityKey
	Activate bool
}

// Answer finishes a command the core refuses or that never reached its entity.
type Answer struct {
	Cmd CmdID
	Err error
}

// Written answers an entity's write: nil means durable (or a read the lease or a barrier covers).
type Written struct {
	Cmd CmdID
	Err error
}

// Txn is a transaction to run: the writes of Cmds, in order. When none of them holds records
// (reads past the lease), it is a barrier: the shell commits its ownership record instead.
type Txn struct {
	ID   uint64
	Cmds []CmdID
}

// Ready is what the shell must do after an input. Slices are valid until the next input.
type Ready struct {
	Dispatch  []Dispatch
	Answers   []Answer
	Written   []Written
	Txn       *Txn
	Passivate []EntityKey
	// GiveUp, when set, says why the partition must be given up (fenced, indefinite, storage).
	GiveUp error
	// Stopped reports that nothing is in flight any more after Stop or a give-up: the shell
	// closes the entities, and answers what still arrives by feeding it to the core, which
	// refuses it.
	Stopped bool
	// NextTick is when the shell must call Tick next; zero means no timer is needed.
	NextTick time.Time
}

type phase int

const (
	restoring phase = iota
	waiting         // restored; waiting for an old owner's lease to run out
	serving
	stopping // no new work; the transaction in flight is awaited
	stopped
)

type cmdState struct {
	c      Command
	entity *entity // nil while in the partition queue
}

type entity struct {
	key         EntityKey
	busy        CmdID // 0 when idle
	queue       []CmdID
	passivation time.Duration
	idleSince   time.Time
	idleElem    *list.Element // in Core.idle while idle
	timerAt     time.Time     // its entry in Core.timeouts; zero when it has none
}

type write struct {
	w       Write
	retried bool
}

type txn struct {
	id     uint64
	writes []*write
	sentAt time.Time
}

// Core is the partition state machine. Not safe for concurrent use: the shell's goroutine owns it.
type Core struct {
	cfg        Config
	phase      phase
	serveAt    time.Time
	leaseUntil time.Time

	cmds     map[CmdID]*cmdState
	queued   []CmdID // partition queue: arrived before the partition serves
	entities map[EntityKey]*entity
	idle     *list.List // idle entities, least recently used first
	timeouts timeoutHeap

	pending      []*write
	pendingRecs  int
	pendingBytes int
	lingerUntil  time.Time
	inflight     *txn
	nextTxn      uint64
	giveUp       error

	rd Ready
}

// New returns a core for a partition that is restoring: commands queue until Restored.
func New(cfg Config) *Core {
	return &Core{
		cfg:      cfg.Defaults(),
		cmds:     make(map[CmdID]*cmdState),
		entities: make(map[EntityKey]*entity),
		idle:     list.New(),
	}
}

// Restored reports that the partition's restore finished. fencedAt is when the fence (the
// producer's epoch bump) completed: an old owner may answer reads from its lease until
// ReadLease after that, so this core answers nothing before fencedAt+ReadLease+LeaseMargin.
func (c *Core) Restored(now, fencedAt time.Time) {
	if c.phase != restoring {
		return
	}
	c.phase = waiting
	if c.cfg.ReadLease > 0 {
		c.serveAt = fencedAt.Add(c.cfg.ReadLease + c.cfg.LeaseMargin)
	}
	c.Tick(now)
}

// Command takes a command arriving for the partition.
func (c *Core) Command(now time.Time, cmd Command) {
	if _, dup := c.cmds[cmd.ID]; dup {
		c.answer(cmd.ID, fmt.Errorf("duplicate command id %d", cmd.ID))
		return
	}
	switch c.phase {
	case stopping, stopped:
		c.answer(cmd.ID, ErrNotOwner)
		return
	case restoring, waiting:
		if len(c.queued) >= c.cfg.PartitionQueue {
			c.answer(cmd.ID, fmt.Errorf("%w: %d commands wait for the partition to serve", ErrOverloaded, len(c.queued)))
			return
		}
		c.cmds[cmd.ID] = &cmdState{c: cmd}
		c.queued = append(c.queued, cmd.ID)
		return
	}
	c.cmds[cmd.ID] = &cmdState{c: cmd}
	c.route(now, cmd.ID)
}

// route hands a known command to its entity: run it now, queue it, or refuse it.
func (c *Core) route(now time.Time, id CmdID) {
	cs := c.cmds[id]
	cmd := cs.c
	if cmd.expired(now) {
		delete(c.cmds, id)
		c.answer(id, ErrExpired)
		return
	}
	e, ok := c.entities[cmd.Entity]
	if !ok {
		if len(c.entities) >= c.cfg.MaxActiveEntities && !c.evictOne() {
			delete(c.cmds, id)
			c.answer(id, fmt.Errorf("%w: %d entities of the partition are busy", ErrOverloaded, len(c.entities)))
			return
		}
		e = &entity{key: cmd.Entity, passivation: cmd.Passivation}
		c.entities[cmd.Entity] = e
		cs.entity = e
		c.start(e, id, true)
		return
	}
	cs.entity = e
	if e.busy != 0 {
		if len(e.queue) >= c.cfg.EntityQueue {
			delete(c.cmds, id)
			c.answer(id, fmt.Errorf("%w: entity %s/%s has %d commands waiting", ErrOverloaded, e.key.Service, e.key.ID, len(e.queue)))
			return
		}
		e.queue = append(e.queue, id)
		return
	}
	c.start(e, id, false)
}

// start runs command id on idle entity e.
func (c *Core) start(e *entity, id CmdID, activate bool) {
	if e.idleElem != nil {
		c.idle.Remove(e.idleElem)
		e.idleElem = nil
	}
	e.busy = id
	c.rd.Dispatch = append(c.rd.Dispatch, Dispatch{Cmd: id, Entity: e.key, Activate: activate})
}

// evictOne passivates the least recently used idle entity; false if every entity is busy.
func (c *Core) evictOne() bool {
	front := c.idle.Front()
	if front == nil {
		return false
	}
	c.passivate(front.Value.(*entity))
	return true
}

func (c *Core) passivate(e *entity) {
	if e.idleElem != nil {
		c.idle.Remove(e.idleElem)
		e.idleElem = nil
	}
	delete(c.entities, e.key)
	c.rd.Passivate = append(c.rd.Passivate, e.key)
}

// Write takes the records an entity's running command asks to make durable.
func (c *Core) Write(now time.Time, w Write) {
	cs, ok := c.cmds[w.Cmd]
	if !ok || cs.entity == nil || cs.entity.busy != w.Cmd {
		c.written(w.Cmd, fmt.Errorf("write for command %d, which is not running", w.Cmd))
		return
	}
	switch {
	case c.phase != serving:
		c.written(w.Cmd, ErrNotOwner)
	case w.Invalid != nil:
		c.written(w.Cmd, fmt.Errorf("%w: %v", ErrInvalidRecord, w.Invalid))
	case w.Largest > c.cfg.MaxRecordBytes:
		c.written(w.Cmd, fmt.Errorf("%w: a record of %d bytes is over the limit of %d bytes", ErrRecordTooLarge, w.Largest, c.cfg.MaxRecordBytes))
	case w.Records == 0 && c.cfg.ReadLease > 0 && now.Before(c.leaseUntil):
		c.written(w.Cmd, nil) // the lease proves ownership
	default:
		c.pending = append(c.pending, &write{w: w})
		c.pendingRecs += w.Records
		c.pendingBytes += w.Bytes
		c.maybeCommit(now)
	}
}

// Done reports that an entity finished (answered) its running command. exited means the entity's
// incarnation is gone (its stream failed): its queued commands go to a fresh activation.
func (c *Core) Done(now time.Time, id CmdID, exited bool) {
	cs, ok := c.cmds[id]
	if !ok || cs.entity == nil || cs.entity.busy != id {
		return
	}
	delete(c.cmds, id)
	e := cs.entity
	e.busy = 0
	if exited {
		if c.entities[e.key] == e {
			delete(c.entities, e.key)
		}
		queue := e.queue
		e.queue = nil
		for _, q := range queue {
			c.cmds[q].entity = nil
			if c.phase == serving {
				c.route(now, q)
			} else {
				delete(c.cmds, q)
				c.answer(q, ErrNotOwner)
			}
		}
		return
	}
	c.next(now, e)
}

// next starts e's next queued command, or makes it idle.
func (c *Core) next(now time.Time, e *entity) {
	for len(e.queue) > 0 {
		id := e.queue[0]
		e.queue = e.queue[1:]
		cs := c.cmds[id]
		if cs.c.expired(now) {
			delete(c.cmds, id)
			c.answer(id, ErrExpired)
			continue
		}
		c.start(e, id, false)
		return
	}
	e.queue = nil
	e.idleSince = now
	e.idleElem = c.idle.PushBack(e)
	if e.passivation > 0 && e.timerAt.IsZero() {
		// One heap entry per entity at most: a stale one is re-armed when it fires.
		e.timerAt = now.Add(e.passivation)
		heap.Push(&c.timeouts, timeout{at: e.timerAt, e: e})
	}
}

// Committed takes the outcome of the transaction in flight.
func (c *Core) Committed(now time.Time, id uint64, out Outcome, cause error) {
	t := c.inflight
	if t == nil || t.id != id {
		return
	}
	c.inflight = nil
	switch out {
	case Committed:
		if until := t.sentAt.Add(c.cfg.ReadLease); until.After(c.leaseUntil) {
			c.leaseUntil = until
		}
		for _, w := range t.writes {
			c.written(w.w.Cmd, nil)
		}
	case Aborted:
		var retry []*write
		for _, w := range t.writes {
			if w.retried || c.phase != serving {
				c.written(w.w.Cmd, fmt.Errorf("%w: %v", ErrAborted, cause))
				continue
			}
			w.retried = true
			retry = append(retry, w)
		}
		c.pending = append(retry, c.pending...)
		for _, w := range retry {
			c.pendingRecs += w.w.Records
			c.pendingBytes += w.w.Bytes
		}
	default:
		err := ErrOutcomeUnknown
		switch out {
		case Fenced:
			err = ErrFenced
		case StorageFailed:
			// Committed in Kafka, but this node's image is behind: the commands did happen.
			err = nil
		}
		for _, w := range t.writes {
			if err == nil {
				c.written(w.w.Cmd, nil)
			} else {
				c.written(w.w.Cmd, fmt.Errorf("%w: %v", err, cause))
			}
		}
		c.stop(fmt.Errorf("%s: %w", outcomeName(out), cause))
		return
	}
	if c.phase == stopping {
		c.finishStop()
		return
	}
	c.maybeCommit(now)
}

func outcomeName(o Outcome) string {
	switch o {
	case Fenced:
		return "fenced"
	case Indefinite:
		return "transaction outcome unknown"
	case StorageFailed:
		return "local store failed"
	}
	return "transaction failed"
}

// Tick advances time: the lease wait, linger, passivation and deadlines of queued commands.
func (c *Core) Tick(now time.Time) {
	if c.phase == waiting && !now.Before(c.serveAt) {
		c.phase = serving
		queued := c.queued
		c.queued = nil
		for _, id := range queued {
			c.route(now, id)
		}
	}
	if c.phase == restoring || c.phase == waiting {
		// Commands waiting for the partition whose deadline passed are answered now.
		kept := c.queued[:0]
		for _, id := range c.queued {
			if c.cmds[id].c.expired(now) {
				delete(c.cmds, id)
				c.answer(id, ErrExpired)
				continue
			}
			kept = append(kept, id)
		}
		c.queued = kept
	}
	for len(c.timeouts) > 0 && !now.Before(c.timeouts[0].at) {
		e := heap.Pop(&c.timeouts).(timeout).e
		e.timerAt = time.Time{}
		if c.entities[e.key] != e || e.busy != 0 {
			continue // gone, or busy: next arms the timer again when it is idle
		}
		if at := e.idleSince.Add(e.passivation); now.Before(at) {
			e.timerAt = at // used since the timer was armed
			heap.Push(&c.timeouts, timeout{at: at, e: e})
			continue
		}
		c.passivate(e)
	}
	if c.phase == serving {
		c.maybeCommit(now)
	}
}

// Stop ends serving (revocation, shutdown): queued work is answered ErrNotOwner and the
// transaction in flight, if any, is awaited; Ready.Stopped reports the end.
func (c *Core) Stop() { c.stop(nil) }

func (c *Core) stop(giveUp error) {
	switch c.phase {
	case stopped:
		return
	case stopping:
		// Already stopping (revoked) when the transaction in flight ended badly.
		if c.giveUp == nil {
			c.giveUp = giveUp
		}
		if c.inflight == nil {
			c.finishStop()
		}
		return
	}
	c.phase = stopping
	c.giveUp = giveUp
	for _, id := range c.queued {
		delete(c.cmds, id)
		c.answer(id, ErrNotOwner)
	}
	c.queued = nil
	for _, e := range c.entities {
		for _, id := range e.queue {
			delete(c.cmds, id)
			c.answer(id, ErrNotOwner)
		}
		e.queue = nil
	}
	for _, w := range c.pending {
		c.written(w.w.Cmd, ErrNotOwner)
	}
	c.pending, c.pendingRecs, c.pendingBytes = nil, 0, 0
	if c.inflight == nil {
		c.finishStop()
	}
}

func (c *Core) finishStop() {
	c.phase = stopped
	c.rd.Stopped = true
	c.rd.GiveUp = c.giveUp
}

// maybeCommit starts a transaction when none is in flight and the batching policy allows.
func (c *Core) maybeCommit(now time.Time) {
	if c.inflight != nil || len(c.pending) == 0 || c.phase != serving {
		return
	}
	if c.cfg.CommitLinger > 0 && c.pendingRecs < c.cfg.MaxBatchRecords && c.pendingBytes < c.cfg.MaxBatchBytes && !c.pending[0].retried {
		if c.lingerUntil.IsZero() {
			c.lingerUntil = now.Add(c.cfg.CommitLinger)
		}
		if now.Before(c.lingerUntil) {
			return
		}
	}
	c.lingerUntil = time.Time{}
	n, recs, bytes := 0, 0, 0
	for n < len(c.pending) {
		w := c.pending[n]
		if n > 0 && (w.retried || recs+w.w.Records > c.cfg.MaxBatchRecords || bytes+w.w.Bytes > c.cfg.MaxBatchBytes) {
			break
		}
		recs += w.w.Records
		bytes += w.w.Bytes
		n++
		if w.retried {
			break // a retried write runs alone, so a bad one cannot fail others again
		}
	}
	c.nextTxn++
	t := &txn{id: c.nextTxn, writes: c.pending[:n:n], sentAt: now}
	c.pending = append([]*write(nil), c.pending[n:]...)
	c.pendingRecs -= recs
	c.pendingBytes -= bytes
	c.inflight = t
	cmds := make([]CmdID, len(t.writes))
	for i, w := range t.writes {
		cmds[i] = w.w.Cmd
	}
	c.rd.Txn = &Txn{ID: t.id, Cmds: cmds}
}

func (c *Core) answer(id CmdID, err error) {
	c.rd.Answers = append(c.rd.Answers, Answer{Cmd: id, Err: err})
}

func (c *Core) written(id CmdID, err error) {
	c.rd.Written = append(c.rd.Written, Written{Cmd: id, Err: err})
}

// Ready returns what the shell must do now, and resets it. Call it after every input.
func (c *Core) Ready() Ready {
	rd := c.rd
	// Reuse the slices' arrays for the next Ready (the returned slices are valid until the next
	// input, as documented): no allocation per input in steady state.
	c.rd = Ready{
		Dispatch:  rd.Dispatch[:0],
		Answers:   rd.Answers[:0],
		Written:   rd.Written[:0],
		Passivate: rd.Passivate[:0],
	}
	rd.NextTick = c.nextTick()
	return rd
}

func (c *Core) nextTick() time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if c.phase == waiting {
		earlier(c.serveAt)
	}
	if c.phase == restoring || c.phase == waiting {
		for _, id := range c.queued {
			earlier(c.cmds[id].c.Deadline)
		}
	}
	if c.phase == serving && c.inflight == nil && len(c.pending) > 0 {
		earlier(c.lingerUntil)
	}
	if len(c.timeouts) > 0 {
		earlier(c.timeouts[0].at)
	}
	return next
}

type timeout struct {
	at time.Time
	e  *entity
}

type timeoutHeap []timeout

func (h timeoutHeap) Len() int           { return len(h) }
func (h timeoutHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timeoutHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeoutHeap) Push(x any)        { *h = append(*h, x.(timeout)) }
func (h *timeoutHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
