package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	kstatev1 "github.com/kstatehq/kstate/proto/kstate/v1"
)

// Record is one Kafka record of an entity, as broker.ReadKey returned it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Timestamp time.Time
	Key       []byte
	// Value is nil for a tombstone.
	Value   []byte
	Headers map[string]string
}

// Resolver finds message types by type URL ("type.googleapis.com/pkg.Msg"); protoregistry.Types
// and dynamicpb.Types are Resolvers.
type Resolver interface {
	FindMessageByURL(url string) (protoreflect.MessageType, error)
	FindMessageByName(protoreflect.FullName) (protoreflect.MessageType, error)
	FindExtensionByName(protoreflect.FullName) (protoreflect.ExtensionType, error)
	FindExtensionByNumber(protoreflect.FullName, protoreflect.FieldNumber) (protoreflect.ExtensionType, error)
}

// Resolvers tries each resolver in turn.
type Resolvers []Resolver

// FindMessageByURL returns the first resolver's answer that is not an error.
func (rs Resolvers) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	for _, r := range rs {
		if mt, err := r.FindMessageByURL(url); err == nil {
			return mt, nil
		}
	}
	return nil, protoregistry.NotFound
}

// FindMessageByName returns the first resolver's answer that is not an error.
func (rs Resolvers) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	for _, r := range rs {
		if mt, err := r.FindMessageByName(name); err == nil {
			return mt, nil
		}
	}
	return nil, protoregistry.NotFound
}

// FindExtensionByName returns the first resolver's answer that is not an error.
func (rs Resolvers) FindExtensionByName(name protoreflect.FullName) (protoreflect.ExtensionType, error) {
	for _, r := range rs {
		if xt, err := r.FindExtensionByName(name); err == nil {
			return xt, nil
		}
	}
	return nil, protoregistry.NotFound
}

// FindExtensionByNumber returns the first resolver's answer that is not an error.
func (rs Resolvers) FindExtensionByNumber(m protoreflect.FullName, n protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	for _, r := range rs {
		if xt, err := r.FindExtensionByNumber(m, n); err == nil {
			return xt, nil
		}
	}
	return nil, protoregistry.NotFound
}

// LoadDescriptorSet reads a FileDescriptorSet (protoc --descriptor_set_out=FILE
// --include_imports, or buf build -o FILE) and returns the types it declares. Imports missing
// from the set are allowed: their types cannot be decoded, the others can.
func LoadDescriptorSet(path string) (*dynamicpb.Types, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%s is not a FileDescriptorSet: %w", path, err)
	}
	files, err := FilesOf(&set)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return dynamicpb.NewTypes(files), nil
}

// FilesOf builds a registry from a descriptor set, allowing unresolvable imports.
func FilesOf(set *descriptorpb.FileDescriptorSet) (*protoregistry.Files, error) {
	return protodesc.FileOptions{AllowUnresolvable: true}.NewFiles(set)
}

// Message is one decoded record value: its type and, when its descriptor is known, its JSON;
// otherwise its bytes (base64 in JSON output).
type Message struct {
	Type  string          `json:"type"`
	JSON  json.RawMessage `json:"value,omitempty"`
	Bytes []byte          `json:"bytes,omitempty"`
	// Error says why the value could not be decoded.
	Error string `json:"decodeError,omitempty"`
}

// Decode decodes b, a message of the type typeURL names, to JSON with res.
func Decode(typeURL string, b []byte, res Resolver) Message {
	m := Message{Type: typeURL[strings.LastIndexByte(typeURL, '/')+1:]}
	if typeURL == "" {
		m.Type = "(no type header)"
	}
	mt, err := res.FindMessageByURL(typeURL)
	if err != nil {
		m.Bytes = b
		m.Error = "no descriptor for " + m.Type + " (pass --descriptor-set or --node)"
		return m
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(b, msg); err != nil {
		m.Bytes, m.Error = b, err.Error()
		return m
	}
	js, err := protojson.MarshalOptions{Resolver: res}.Marshal(msg)
	if err != nil {
		m.Bytes, m.Error = b, err.Error()
		return m
	}
	var c bytes.Buffer
	if json.Compact(&c, js) == nil {
		js = c.Bytes()
	}
	m.JSON = js
	return m
}

// Kinds of entity `kstate inspect` shows.
const (
	KindEventSourced = "event-sourced"
	KindValue        = "value"
)

// EntityInput is what `kstate inspect` read for one entity.
type EntityInput struct {
	Service, EntityID string
	// Namespace names the topics: <namespace>.<persistence id>.<events|snapshots|state>.
	Namespace string
	// PersistenceID, when not empty, is the one to show (--persistence-id); else it is found from
	// the records' entity type header.
	PersistenceID string
	// Records are the entity's records on the events, snapshots and state topics read.
	Records []Record
	// Idempotency are the entity's records on the idempotency topics.
	Idempotency []Record
	// Topics are the topics read, for the message when nothing was found.
	Topics []string
	Now    time.Time
}

// Entity is one entity as `kstate inspect` shows it (also its --json output).
type Entity struct {
	Service       string `json:"service"`
	EntityID      string `json:"entityId"`
	PersistenceID string `json:"persistenceId"`
	Kind          string `json:"kind"`
	// Topic and Partition locate its journal (event-sourced) or state (value) records.
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Events    []Event `json:"events,omitempty"`
	// Snapshot is the latest snapshot (event-sourced).
	Snapshot *Snapshot `json:"snapshot,omitempty"`
	// State is the latest state (value entities); Deleted when its latest record is a tombstone.
	State   *StateRecord `json:"state,omitempty"`
	Updates int          `json:"updates,omitempty"`
	// Idempotency counts the remembered outcomes of its commands with idempotency keys.
	Idempotency Idempotency `json:"idempotency"`
}

// Event is one journal record.
type Event struct {
	Seq       int64     `json:"seq"`
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"`
	CommandID string    `json:"commandId,omitempty"`
	Message
}

// Snapshot is a snapshot record: the state as of event Seq.
type Snapshot struct {
	Seq    int64     `json:"seq"`
	Offset int64     `json:"offset"`
	Time   time.Time `json:"time"`
	Message
}

// StateRecord is a value entity's latest state record.
type StateRecord struct {
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"`
	CommandID string    `json:"commandId,omitempty"`
	Deleted   bool      `json:"deleted,omitempty"`
	*Message
}

// Idempotency counts an entity's entries on the idempotency topic: Remembered still deduplicate,
// Expired are past their window (the topic's retention removes them).
type Idempotency struct {
	Remembered int `json:"remembered"`
	Expired    int `json:"expired"`
}

// topicKind splits "<ns>.<pid>.<kind>" into the persistence id and kind.
func topicKind(ns, topic string) (pid, kind string) {
	rest, ok := strings.CutPrefix(topic, ns+".")
	i := strings.LastIndexByte(rest, '.')
	if !ok || i < 0 {
		return "", ""
	}
	return rest[:i], rest[i+1:]
}

// TypeNames are the message types the records name in their type headers, for fetching their
// descriptors (snapshots name theirs inside).
func TypeNames(recs []Record) []string {
	seen := map[string]bool{}
	var out []string
	add := func(url string) {
		name := url[strings.LastIndexByte(url, '/')+1:]
		if name != "" && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	for _, r := range recs {
		if u, ok := r.Headers[kstatev1.HeaderType]; ok {
			add(u)
		}
		if strings.HasSuffix(r.Topic, ".snapshots") && r.Value != nil {
			var s kstatev1.SnapshotRecord
			if proto.Unmarshal(r.Value, &s) == nil && s.GetSnapshot() != nil {
				add(s.GetSnapshot().GetTypeUrl())
			}
		}
	}
	sort.Strings(out)
	return out
}

// ErrNoRecords is wrapped when the entity has no records in any topic read.
var ErrNoRecords = fmt.Errorf("no records")

// BuildEntity finds the entity's persistence id and kind and decodes its records with res.
func BuildEntity(in EntityInput, res Resolver) (Entity, error) {
	e := Entity{Service: in.Service, EntityID: in.EntityID, PersistenceID: in.PersistenceID}
	// The persistence id: given, or the one whose events or state records carry the service as
	// their entity type (several services may share a persistence id's topics).
	if e.PersistenceID == "" {
		pids := map[string]bool{}
		for _, r := range in.Records {
			pid, kind := topicKind(in.Namespace, r.Topic)
			if (kind == "events" || kind == "state") && serviceMatches(r.Headers[kstatev1.HeaderEntityType], in.Service) {
				pids[pid] = true
			}
		}
		switch len(pids) {
		case 0:
			return e, fmt.Errorf("%w of service %s for entity %q in %d topics (%s): check the entity id, or name the persistence id with --persistence-id",
				ErrNoRecords, in.Service, in.EntityID, len(in.Topics), strings.Join(in.Topics, ", "))
		case 1:
			for pid := range pids {
				e.PersistenceID = pid
			}
		default:
			var ids []string
			for pid := range pids {
				ids = append(ids, pid)
			}
			sort.Strings(ids)
			return e, fmt.Errorf("entity %q of service %s has records under the persistence ids %s: choose one with --persistence-id", in.EntityID, in.Service, strings.Join(ids, ", "))
		}
	}
	var events, snaps, states []Record
	for _, r := range in.Records {
		pid, kind := topicKind(in.Namespace, r.Topic)
		if pid != e.PersistenceID {
			continue
		}
		switch kind {
		case "events":
			events = append(events, r)
		case "snapshots":
			snaps = append(snaps, r)
		case "state":
			states = append(states, r)
		}
	}
	switch {
	case len(states) > 0 && len(events) == 0:
		e.Kind = KindValue
		e.Topic = in.Namespace + "." + e.PersistenceID + ".state"
	default:
		e.Kind = KindEventSourced
		e.Topic = in.Namespace + "." + e.PersistenceID + ".events"
	}
	for _, r := range slices.Concat(events, states) {
		e.Partition = r.Partition
		break
	}
	for _, r := range events {
		seq, _ := strconv.ParseInt(r.Headers[kstatev1.HeaderSequence], 10, 64)
		e.Events = append(e.Events, Event{Seq: seq, Offset: r.Offset, Time: r.Timestamp, CommandID: r.Headers[kstatev1.HeaderCommandID],
			Message: Decode(r.Headers[kstatev1.HeaderType], r.Value, res)})
	}
	if n := len(snaps); n > 0 {
		r := snaps[n-1]
		var s kstatev1.SnapshotRecord
		if r.Value != nil && proto.Unmarshal(r.Value, &s) == nil {
			e.Snapshot = &Snapshot{Seq: s.GetSequence(), Offset: r.Offset, Time: r.Timestamp,
				Message: Decode(s.GetSnapshot().GetTypeUrl(), s.GetSnapshot().GetValue(), res)}
		}
	}
	if n := len(states); n > 0 {
		r := states[n-1]
		e.Updates = n
		e.State = &StateRecord{Offset: r.Offset, Time: r.Timestamp, CommandID: r.Headers[kstatev1.HeaderCommandID], Deleted: r.Value == nil}
		if r.Value != nil {
			m := Decode(r.Headers[kstatev1.HeaderType], r.Value, res)
			e.State.Message = &m
		}
	}
	keys := map[string]bool{}
	expired := map[string]bool{}
	for _, r := range in.Idempotency {
		var ir kstatev1.IdempotencyRecord
		if r.Value == nil || proto.Unmarshal(r.Value, &ir) != nil || ir.GetPersistenceId() != e.PersistenceID {
			continue
		}
		if ir.GetExpiresAt() != nil && !ir.GetExpiresAt().AsTime().After(in.Now) {
			expired[ir.GetKey()] = true
		} else {
			keys[ir.GetKey()] = true
		}
	}
	for k := range keys {
		delete(expired, k)
	}
	e.Idempotency = Idempotency{Remembered: len(keys), Expired: len(expired)}
	return e, nil
}

// serviceMatches reports whether an entity type header names service: its full name, or its
// simple name when service is given without a package.
func serviceMatches(header, service string) bool {
	return header == service || (!strings.Contains(service, ".") && strings.HasSuffix(header, "."+service))
}

// WriteText prints e for a terminal.
func (e Entity) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "%s %q: %s entity, persistence id %s\n", e.Service, e.EntityID, e.Kind, e.PersistenceID)
	switch e.Kind {
	case KindEventSourced:
		fmt.Fprintf(w, "journal: %s, partition %d: %d events\n", e.Topic, e.Partition, len(e.Events))
	case KindValue:
		fmt.Fprintf(w, "state: %s, partition %d: %d updates\n", e.Topic, e.Partition, e.Updates)
	}
	fmt.Fprintf(w, "idempotency: %d remembered outcomes", e.Idempotency.Remembered)
	if e.Idempotency.Expired > 0 {
		fmt.Fprintf(w, " (and %d expired)", e.Idempotency.Expired)
	}
	fmt.Fprintln(w)
	if len(e.Events) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nSEQ\tOFFSET\tTIME\tTYPE\tVALUE")
		for _, ev := range e.Events {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", ev.Seq, ev.Offset, ev.Time.UTC().Format(time.RFC3339Nano), ev.Type, ev.Message.text())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if s := e.Snapshot; s != nil {
		fmt.Fprintf(w, "\nsnapshot at seq %d (offset %d, %s): %s %s\n", s.Seq, s.Offset, s.Time.UTC().Format(time.RFC3339), s.Type, s.Message.text())
	}
	if s := e.State; s != nil {
		if s.Deleted {
			fmt.Fprintf(w, "\nstate: deleted (tombstone at offset %d, %s)\n", s.Offset, s.Time.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(w, "\nstate at offset %d (%s): %s %s\n", s.Offset, s.Time.UTC().Format(time.RFC3339), s.Type, s.Message.text())
		}
	}
	var undecoded []string
	for _, ev := range e.Events {
		if ev.Error != "" && !slices.Contains(undecoded, ev.Error) {
			undecoded = append(undecoded, ev.Error)
		}
	}
	for _, u := range undecoded {
		fmt.Fprintf(w, "note: %s\n", u)
	}
	return nil
}

// text is the value for a terminal: its JSON, or its bytes in base64.
func (m Message) text() string {
	if m.JSON != nil {
		return string(m.JSON)
	}
	b, _ := json.Marshal(m.Bytes) // base64
	return "bytes " + string(b)
}
