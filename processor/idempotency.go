package processor

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kstatehq/kstate/broker"
	"github.com/kstatehq/kstate/processor/internal/catalog"
	"github.com/kstatehq/kstate/proto/cloudstate/cloudstatepb"
	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// Idempotency keys (docs/idempotency.md). A client may send a key with a command
// (kstatev1.IdempotencyKeyHeader); the command's outcome — reply, failure or forward — is then
// written to the app's idempotency topic in the same transaction as its events or state, and
// restored into Pebble with the partition. A command with a key that the entity remembers is
// answered with the remembered outcome and not run again: the entity runs one command at a time,
// so a retry that arrives while the first attempt runs waits behind it and finds its outcome.
// Forwards and side effects kstate issues carry keys derived from their command's, so the router
// may retry them whatever the outcome of an attempt, and a replayed forward is deduplicated at its
// target.

// maxIdempotencyKeyBytes bounds a client's idempotency key.
const maxIdempotencyKeyBytes = 256

// defaultIdempotencyWindow is how long an outcome is remembered unless Config says otherwise.
const defaultIdempotencyWindow = 24 * time.Hour

// idempotencySweepEvery is how often a partition owner removes expired outcomes from Pebble.
const idempotencySweepEvery = time.Minute

// maxFilterKeys bounds the key hashes an active entity keeps (keyFilter); an entity with more
// remembered outcomes looks every keyed command up in Pebble.
const maxFilterKeys = 1024

// keyFilter is what an active entity knows of its remembered idempotency keys: a hash of every key
// it has an outcome for (read from Pebble once, on its first keyed command, and added to as it
// remembers more), so that a command with a key it never saw — nearly every keyed command — needs
// no store lookup. The entity is the only writer of its outcomes, so the set is complete while it
// is active. full means there were too many to keep: every keyed command is looked up.
type keyFilter struct {
	hashes map[uint64]struct{}
	full   bool
}

var filterSeed = maphash.MakeSeed()

func (f *keyFilter) add(key string) {
	if f.full {
		return
	}
	if len(f.hashes) >= maxFilterKeys {
		f.full, f.hashes = true, nil
		return
	}
	f.hashes[maphash.String(filterSeed, key)] = struct{}{}
}

// mayHave reports whether key may have a remembered outcome (false: surely not).
func (f *keyFilter) mayHave(key string) bool {
	if f.full {
		return true
	}
	_, ok := f.hashes[maphash.String(filterSeed, key)]
	return ok
}

// filter returns the entity's key filter, loading it on first use.
func (e *entity) filter() (*keyFilter, error) {
	if e.keys != nil {
		return e.keys, nil
	}
	keys, complete, err := e.o.n.store.IdempotencyKeys(e.o.p, e.svc.PersistenceID, e.key.ID, maxFilterKeys)
	if err != nil {
		return nil, err
	}
	f := &keyFilter{hashes: make(map[uint64]struct{}, len(keys)), full: !complete}
	if f.full {
		f.hashes = nil
	}
	for _, k := range keys {
		f.add(k)
	}
	e.keys = f
	return f, nil
}

// idempotencySweepLimit bounds the outcomes one sweep removes, so a sweep never stalls commits.
const idempotencySweepLimit = 10000

// idempotencyKey returns the command's idempotency key from its metadata ("" when it has none),
// or an INVALID_ARGUMENT error a client can act on.
func idempotencyKey(md *cloudstatepb.Metadata) (string, error) {
	key, n := "", 0
	for _, e := range md.GetEntries() {
		if e.GetKey() != kstatev1.IdempotencyKeyHeader {
			continue
		}
		n++
		key = e.GetStringValue()
	}
	switch {
	case n == 0:
		return "", nil
	case n > 1:
		return "", fmt.Errorf("%w: %d %s headers: send one", catalog.ErrInvalidArgument, n, kstatev1.IdempotencyKeyHeader)
	}
	return key, checkIdempotencyKey(key)
}

// checkIdempotencyKey validates a key from a client or a peer: 1 to 256 printable ASCII bytes.
func checkIdempotencyKey(key string) error {
	if key == "" || len(key) > maxIdempotencyKeyBytes {
		return fmt.Errorf("%w: %s must be 1 to %d bytes, got %d", catalog.ErrInvalidArgument, kstatev1.IdempotencyKeyHeader, maxIdempotencyKeyBytes, len(key))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return fmt.Errorf("%w: %s must be printable ASCII (byte %d is 0x%02x)", catalog.ErrInvalidArgument, kstatev1.IdempotencyKeyHeader, i, key[i])
		}
	}
	return nil
}

// derivedKey is the idempotency key of a forward or side effect (what) of the command whose own
// key, or unique command id, is base. It is deterministic, so a replayed command derives the same
// keys, and of fixed length, so chains of forwards do not grow it.
func derivedKey(base, what string) string {
	h := sha256.Sum256([]byte(base + "\x00" + what))
	return "kstate-" + hex.EncodeToString(h[:16])
}

// effectKey is the derived key of side effect i.
func effectKey(base string, i int) string { return derivedKey(base, "effect/"+strconv.Itoa(i)) }

// forwardKey is the derived key of a command's forward.
func forwardKey(base string) string { return derivedKey(base, "forward") }

// invocationBase is the base of the derived keys of an action call: the client's key when it sent
// one (a retried call derives the same keys), else a fresh random id (the router's own retries of
// its forwards and side effects are still safe).
func invocationBase(key string) string {
	if key != "" {
		return key
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "invocation/" + hex.EncodeToString(b[:])
}

// requestHash identifies a command's request, so that a key reused for another request is
// refused rather than answered with the wrong outcome. The payload is hashed in its canonical
// encoding: the same message may arrive with its fields in another order (the HTTP transcoder
// appends path-bound fields after the body's).
func requestHash(m *catalog.Method, payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte(m.FullName))
	h.Write([]byte{0})
	msg := dynamicpb.NewMessage(m.Input)
	canonical, err := payload, proto.Unmarshal(payload, msg)
	if err == nil {
		if b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(msg); err == nil {
			canonical = b
		}
	}
	h.Write(canonical)
	return h.Sum(nil)
}

// requestHash is r's request hash, computed once.
func (r *request) requestHash() []byte {
	if r.hash == nil {
		r.hash = requestHash(r.method, r.payload)
	}
	return r.hash
}

// remembered is what a command with an idempotency key does, given the outcome its entity
// remembers for the key.
type remembered int

const (
	// runCommand: nothing is remembered for the key (or it expired): run the command.
	runCommand remembered = iota
	// replayOutcome: answer with the remembered outcome; the command does not run again.
	replayOutcome
	// keyReused: the key was first used for another request: refuse the command.
	keyReused
)

// recall is the idempotency rule, a pure function of the remembered record (found false when
// there is none), the time and the request's hash.
func recall(ir *kstatev1.IdempotencyRecord, found bool, now time.Time, hash []byte) remembered {
	switch {
	case !found || !now.Before(ir.GetExpiresAt().AsTime()):
		return runCommand
	case string(ir.GetRequestHash()) != string(hash):
		return keyReused
	}
	return replayOutcome
}

// settled answers r without running it when it must not run: its caller has gone or its
// deadline passed (it never ran), or its idempotency key names an outcome the entity remembers.
// It runs on the entity's goroutine, before the command reaches the user function.
func (e *entity) settled(r *request) bool {
	if err := r.ctx.Err(); err != nil {
		r.finish(result{err: fmt.Errorf("%w: the command did not run", err)})
		return true
	}
	if r.key == "" {
		return false
	}
	n := e.o.n
	f, err := e.filter()
	if err != nil {
		r.finish(result{err: fmt.Errorf("%w: read the idempotency keys: %v", catalog.ErrUnavailable, err)})
		return true
	}
	if !f.mayHave(r.key) {
		return false
	}
	ir, found, err := n.store.LoadIdempotency(e.o.p, e.svc.PersistenceID, e.key.ID, r.key)
	if err != nil {
		r.finish(result{err: fmt.Errorf("%w: read the idempotency key: %v", catalog.ErrUnavailable, err)})
		return true
	}
	switch recall(ir, found, time.Now(), r.requestHash()) {
	case runCommand:
		return false
	case keyReused:
		r.finish(result{err: fmt.Errorf("%w: idempotency key %q was first used for another request to entity %s/%s (command %s); use a new key for a new request",
			catalog.ErrInvalidArgument, r.key, e.key.Service, e.key.ID, ir.GetCommandId())})
		return true
	}
	e.log.Debug("answered from the remembered outcome of its idempotency key", "key", r.key, "command_id", ir.GetCommandId())
	switch o := ir.GetOutcome().(type) {
	case *kstatev1.IdempotencyRecord_Failure:
		r.finish(result{err: &catalog.CommandFailure{Description: o.Failure.GetDescription()}})
	case *kstatev1.IdempotencyRecord_Forward:
		// The forward is sent again with the key it had: its target remembers its own outcome.
		n.complete(r, &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Forward{Forward: o.Forward}}, nil, ir.GetForwardKey())
	default:
		r.finish(n.replyResult(r.method, &cloudstatepb.ClientAction{Action: &cloudstatepb.ClientAction_Reply{Reply: ir.GetReply()}}))
	}
	return true
}

// idempotencyRecord is the record that remembers the outcome of r (which carries a key): the
// client action the user function answered, nil for no reply.
func (e *entity) idempotencyRecord(r *request, ca *cloudstatepb.ClientAction) (broker.Record, error) {
	n := e.o.n
	ir := &kstatev1.IdempotencyRecord{
		PersistenceId: e.svc.PersistenceID,
		Key:           r.key,
		RequestHash:   r.requestHash(),
		ExpiresAt:     timestamppb.New(time.Now().Add(n.cfg.IdempotencyWindow)),
		CommandId:     r.cmdID,
	}
	switch a := ca.GetAction().(type) {
	case *cloudstatepb.ClientAction_Failure:
		ir.Outcome = &kstatev1.IdempotencyRecord_Failure{Failure: &cloudstatepb.Failure{Description: a.Failure.GetDescription()}}
	case *cloudstatepb.ClientAction_Forward:
		ir.Outcome = &kstatev1.IdempotencyRecord_Forward{Forward: a.Forward}
		ir.ForwardKey = forwardKey(r.dedupBase())
	case *cloudstatepb.ClientAction_Reply:
		ir.Outcome = &kstatev1.IdempotencyRecord_Reply{Reply: a.Reply}
	default:
		ir.Outcome = &kstatev1.IdempotencyRecord_Reply{Reply: &cloudstatepb.Reply{}}
	}
	v, err := proto.Marshal(ir)
	if err != nil {
		return broker.Record{}, err
	}
	if f, err := e.filter(); err == nil {
		// Before the commit: if it fails, the filter only says "look it up" once too often.
		f.add(r.key)
	}
	return broker.Record{
		Topic:     n.cfg.Broker.IdempotencyTopic(),
		Partition: e.o.p,
		Key:       []byte(e.key.ID),
		Value:     v,
		Headers: []broker.Header{
			{Key: kstatev1.HeaderCommandID, Value: []byte(r.cmdID)},
			{Key: kstatev1.HeaderEntityType, Value: []byte(e.svc.Name)},
		},
	}, nil
}

// remember appends the record of r's outcome to recs when r carries an idempotency key.
func (e *entity) remember(r *request, ca *cloudstatepb.ClientAction, recs []broker.Record) ([]broker.Record, error) {
	if r.key == "" {
		return recs, nil
	}
	rec, err := e.idempotencyRecord(r, ca)
	if err != nil {
		return recs, err
	}
	return append(recs, rec), nil
}

// rememberFailure makes a failed command's outcome durable when it carries a key, so a retry gets
// the same failure; nothing else of a failed command is written. On an error r is not answered.
func (e *entity) rememberFailure(r *request, ca *cloudstatepb.ClientAction) error {
	if r.key == "" {
		return nil
	}
	recs, err := e.remember(r, ca, nil)
	if err != nil {
		return err
	}
	return e.o.persist(r, recs)
}

// sweepIdempotency removes outcomes whose window has passed from p's Pebble image; Kafka's
// retention removes them from the topic.
func (o *owner) sweepIdempotency(now time.Time) error {
	n, err := o.n.store.ExpireIdempotency(o.p, now, idempotencySweepLimit)
	if n > 0 {
		o.log.Debug("removed expired idempotency keys", "count", n)
	}
	o.sweptAt = now
	return err
}
