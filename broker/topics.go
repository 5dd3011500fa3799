package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TopicKind is the role of a topic in an app's layout (DESIGN.md §2).
type TopicKind int

// The topic kinds of DESIGN.md §2.
const (
	Events TopicKind = iota + 1
	Snapshots
	State
	Crdt
	CrdtState
	Commands
	Owners
	// Claims is the namespace's registry of persistence ids (see ClaimPersistenceIDs).
	Claims
	// DeadLetters holds quarantined records (Config.DeadLettersTopic).
	DeadLetters
	// Idempotency holds the remembered outcomes of commands with idempotency keys
	// (Config.IdempotencyTopic).
	Idempotency
)

// String returns the kind's topic-name suffix: "events", "snapshots", "state", "crdt",
// "crdt-state", "commands", "owners", "claims", "dead-letters" or "idempotency".
func (k TopicKind) String() string {
	switch k {
	case Events:
		return "events"
	case Snapshots:
		return "snapshots"
	case State:
		return "state"
	case Crdt:
		return "crdt"
	case CrdtState:
		return "crdt-state"
	case Commands:
		return "commands"
	case Owners:
		return "owners"
	case Claims:
		return "claims"
	case DeadLetters:
		return "dead-letters"
	case Idempotency:
		return "idempotency"
	}
	return "TopicKind(" + strconv.Itoa(int(k)) + ")"
}

// EntityKind is the kind of an entity type, which decides the topics it needs.
type EntityKind int

// The entity kinds of DESIGN.md §4.
const (
	EventSourced EntityKind = iota + 1
	Value
	CRDT
	Action
)

// String returns the kind's name.
func (k EntityKind) String() string {
	switch k {
	case EventSourced:
		return "event-sourced"
	case Value:
		return "value"
	case CRDT:
		return "crdt"
	case Action:
		return "action"
	}
	return "EntityKind(" + strconv.Itoa(int(k)) + ")"
}

// CrdtRetention is the retention of the CRDT delta topics: deltas older than this are covered by
// the compacted crdt-state topic.
const CrdtRetention = 7 * 24 * time.Hour

// IdempotencyRetention is the retention of the idempotency topic: the longest idempotency window
// a node may use (processor.Config.IdempotencyWindow), plus a day of margin.
const IdempotencyRetention = 8 * 24 * time.Hour

// TopicSpec is a topic kstate needs, with the settings it is created with.
type TopicSpec struct {
	Name              string
	Kind              TopicKind
	Partitions        int32
	ReplicationFactor int16
	// Configs are topic configs set at creation (cleanup.policy, retention.ms, ...).
	Configs map[string]string
}

// AppTopics returns the topics of an app whose entity types are entities (persistence id →
// kind), sorted by name: per event-sourced type its events (delete, infinite retention) and
// snapshots (compact) topics, per value type its state topic (compact), per CRDT type its crdt
// (delete, CrdtRetention) and crdt-state (compact) topics; actions need none. Every app also
// has its commands topic (delete) and its owners topic (compact, one partition: it is keyed by
// partition number and read whole) and the namespace's claims topic (delete, infinite retention,
// one partition: the registry of which app writes which persistence id), its dead-letters topic
// (delete, infinite retention) and its idempotency topic (delete, IdempotencyRetention). Entity
// topics and the commands, dead-letters and idempotency topics have c.Partitions partitions.
func (c Config) AppTopics(entities map[string]EntityKind) []TopicSpec {
	c = c.withDefaults()
	spec := func(name string, kind TopicKind, parts int32, configs map[string]string) TopicSpec {
		return TopicSpec{Name: name, Kind: kind, Partitions: parts, ReplicationFactor: c.ReplicationFactor, Configs: configs}
	}
	deleteForever := func() map[string]string {
		return map[string]string{"cleanup.policy": "delete", "retention.ms": "-1"}
	}
	compact := func() map[string]string { return map[string]string{"cleanup.policy": "compact"} }
	var specs []TopicSpec
	for pid, kind := range entities {
		switch kind {
		case EventSourced:
			specs = append(specs,
				spec(c.EventsTopic(pid), Events, c.Partitions, deleteForever()),
				spec(c.SnapshotsTopic(pid), Snapshots, c.Partitions, compact()))
		case Value:
			specs = append(specs, spec(c.StateTopic(pid), State, c.Partitions, compact()))
		case CRDT:
			specs = append(specs,
				spec(c.CrdtTopic(pid), Crdt, c.Partitions, map[string]string{
					"cleanup.policy": "delete",
					"retention.ms":   strconv.FormatInt(CrdtRetention.Milliseconds(), 10),
				}),
				spec(c.CrdtStateTopic(pid), CrdtState, c.Partitions, compact()))
		}
	}
	specs = append(specs,
		spec(c.CommandsTopic(), Commands, c.Partitions, map[string]string{"cleanup.policy": "delete"}),
		spec(c.OwnersTopic(), Owners, 1, compact()),
		spec(c.ClaimsTopic(), Claims, 1, deleteForever()),
		spec(c.DeadLettersTopic(), DeadLetters, c.Partitions, deleteForever()),
		spec(c.IdempotencyTopic(), Idempotency, c.Partitions, map[string]string{
			"cleanup.policy": "delete",
			"retention.ms":   strconv.FormatInt(IdempotencyRetention.Milliseconds(), 10),
		}))
	sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
	return specs
}

// ErrTopicMismatch is what every *TopicMismatchError wraps.
var ErrTopicMismatch = errors.New("existing topic does not match kstate's layout")

// ErrTopicNotFound is wrapped by errors about topics that do not exist.
var ErrTopicNotFound = errors.New("topic does not exist")

// TopicMismatchError reports an existing topic whose settings differ from its TopicSpec. kstate
// never re-creates or alters such a topic: an operator has to.
type TopicMismatchError struct {
	Topic string
	Field string // "partitions" or "cleanup.policy"
	Want  string
	Got   string
}

// Error names the topic, the field, the expected and the found value.
func (e *TopicMismatchError) Error() string {
	return fmt.Sprintf("topic %q: %s: expected %s, found %s (kstate never alters or re-creates an existing topic: fix the topic or the configuration)",
		e.Topic, e.Field, e.Want, e.Got)
}

// Unwrap returns ErrTopicMismatch.
func (e *TopicMismatchError) Unwrap() error { return ErrTopicMismatch }

// TopicInfo describes an existing topic, for `kstate topics`.
type TopicInfo struct {
	Name              string
	Partitions        int32
	ReplicationFactor int
	// CleanupPolicy is the topic's cleanup.policy ("delete", "compact" or "compact,delete").
	CleanupPolicy string
	// RetentionMs is the topic's retention.ms (-1: forever).
	RetentionMs int64
	// StartOffsets and EndOffsets are the log start offset and high watermark of each partition,
	// indexed by partition.
	StartOffsets []int64
	EndOffsets   []int64
}

// Admin creates and inspects kstate's topics.
type Admin struct {
	cfg Config
	cl  *kgo.Client
	adm *kadm.Client
	log hclog.Logger
}

// NewAdmin returns an Admin for the cluster in cfg. It does not connect until used.
func NewAdmin(cfg Config) (*Admin, error) {
	cfg = cfg.withDefaults()
	cl, err := cfg.newClientAs(roleAdmin)
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	adm.SetTimeoutMillis(int32(cfg.RequestTimeout.Milliseconds()))
	return &Admin{cfg: cfg, cl: cl, adm: adm, log: cfg.Logger.Named("admin")}, nil
}

// Close releases the Admin's connections.
func (a *Admin) Close() { a.cl.Close() }

// checkTopicName reports a name Kafka would refuse.
func checkTopicName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("topic name %q is not allowed", name)
	case len(name) > maxTopicNameLen:
		return fmt.Errorf("topic name %q is %d characters long, Kafka allows %d", name, len(name), maxTopicNameLen)
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return !legalTopicRune(r) }); i >= 0 {
		return fmt.Errorf("topic name %q: character %q is not allowed (use letters, digits, '.', '_', '-')", name, name[i])
	}
	return nil
}

// EnsureTopics creates the topics of specs that do not exist and checks those that do. An
// existing topic whose partition count or cleanup.policy differs from its spec is reported as a
// *TopicMismatchError (several are joined with errors.Join) and left alone: kstate never
// re-creates or alters a topic. It returns once every created topic has a leader for every
// partition, so it can be produced to and read at once.
func (a *Admin) EnsureTopics(ctx context.Context, specs []TopicSpec) error {
	return a.cfg.hint(a.ensureTopics(ctx, specs))
}

func (a *Admin) ensureTopics(ctx context.Context, specs []TopicSpec) error {
	if len(specs) == 0 {
		return nil
	}
	byName := make(map[string]TopicSpec, len(specs))
	names := make([]string, 0, len(specs))
	for _, s := range specs {
		if err := checkTopicName(s.Name); err != nil {
			return fmt.Errorf("ensure topics: %w", err)
		}
		if s.Partitions < 1 {
			return fmt.Errorf("ensure topics: topic %q: partitions %d: want at least 1", s.Name, s.Partitions)
		}
		if _, dup := byName[s.Name]; dup {
			return fmt.Errorf("ensure topics: topic %q is listed twice", s.Name)
		}
		byName[s.Name] = s
		names = append(names, s.Name)
	}

	existing, missing, err := a.split(ctx, names)
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	var created []string
	if len(missing) > 0 {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.TimeoutMillis = int32(a.cfg.RequestTimeout.Milliseconds())
		for _, name := range missing {
			s := byName[name]
			rt := kmsg.NewCreateTopicsRequestTopic()
			rt.Topic = name
			rt.NumPartitions = s.Partitions
			rt.ReplicationFactor = s.ReplicationFactor
			if rt.ReplicationFactor == 0 {
				rt.ReplicationFactor = -1
			}
			for _, k := range sortedKeys(s.Configs) {
				c := kmsg.NewCreateTopicsRequestTopicConfig()
				c.Name = k
				c.Value = kmsg.StringPtr(s.Configs[k])
				rt.Configs = append(rt.Configs, c)
			}
			req.Topics = append(req.Topics, rt)
		}
		resp, err := req.RequestWith(ctx, a.cl)
		if err != nil {
			return fmt.Errorf("ensure topics: create %v: %w", missing, err)
		}
		for _, t := range resp.Topics {
			err := kerr.ErrorForCode(t.ErrorCode)
			switch {
			case err == nil:
				created = append(created, t.Topic)
				a.log.Info("created topic", "topic", t.Topic, "partitions", byName[t.Topic].Partitions)
			case errors.Is(err, kerr.TopicAlreadyExists):
				// Another node created it concurrently; check it like any existing topic.
				existing = append(existing, t.Topic)
			default:
				msg := ""
				if t.ErrorMessage != nil {
					msg = ": " + *t.ErrorMessage
				}
				return fmt.Errorf("ensure topics: create topic %q: %w%s", t.Topic, err, msg)
			}
		}
	}
	if err := a.check(ctx, byName, existing); err != nil {
		return err
	}
	if len(created) > 0 {
		if err := a.waitReady(ctx, created, byName); err != nil {
			return fmt.Errorf("ensure topics: %w", err)
		}
	}
	return nil
}

// split sorts names into existing and missing topics.
func (a *Admin) split(ctx context.Context, names []string) (existing, missing []string, err error) {
	// All topics: asking for missing topics by name makes the client retry them for seconds.
	tds, err := a.adm.ListTopics(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("metadata: %w", err)
	}
	for _, name := range names {
		td, ok := tds[name]
		switch {
		case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, name)
		case td.Err != nil:
			return nil, nil, fmt.Errorf("metadata of topic %q: %w", name, td.Err)
		default:
			existing = append(existing, name)
		}
	}
	return existing, missing, nil
}

// check compares existing topics with their specs.
func (a *Admin) check(ctx context.Context, specs map[string]TopicSpec, existing []string) error {
	if len(existing) == 0 {
		return nil
	}
	tds, err := a.settledMetadata(ctx, existing)
	if err != nil {
		return fmt.Errorf("ensure topics: metadata: %w", err)
	}
	rcs, err := a.adm.DescribeTopicConfigs(ctx, existing...)
	if err != nil {
		return fmt.Errorf("ensure topics: describe configs: %w", err)
	}
	var errs []error
	for _, name := range existing {
		s := specs[name]
		td := tds[name]
		if td.Err != nil {
			return fmt.Errorf("ensure topics: metadata of topic %q: %w", name, td.Err)
		}
		if got := int32(len(td.Partitions)); got != s.Partitions {
			errs = append(errs, &TopicMismatchError{Topic: name, Field: "partitions", Want: strconv.Itoa(int(s.Partitions)), Got: strconv.Itoa(int(got))})
		}
		want, ok := s.Configs["cleanup.policy"]
		if !ok {
			continue
		}
		rc, err := rcs.On(name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			return fmt.Errorf("ensure topics: configs of topic %q: %w", name, err)
		}
		got := configValue(rc, "cleanup.policy", "delete")
		if normPolicy(got) != normPolicy(want) {
			errs = append(errs, &TopicMismatchError{Topic: name, Field: "cleanup.policy", Want: want, Got: got})
		}
	}
	return errors.Join(errs...)
}

// waitReady polls metadata until every topic has all its partitions with a leader.
// settledMetadata returns the metadata of topics that exist, waiting while the brokers still
// answer with a retriable error for any of them: a topic another node has just created is listed
// before every broker knows it (UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE).
func (a *Admin) settledMetadata(ctx context.Context, names []string) (kadm.TopicDetails, error) {
	backoff := 20 * time.Millisecond
	for {
		tds, err := a.adm.ListTopics(ctx, names...)
		if err != nil {
			return nil, err
		}
		settled := true
		for _, n := range names {
			if td := tds[n]; td.Err != nil && kerr.IsRetriable(td.Err) {
				settled = false
			}
		}
		if settled {
			return tds, nil
		}
		select {
		case <-ctx.Done():
			return tds, nil // let the caller report the topic's own error
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func (a *Admin) waitReady(ctx context.Context, names []string, specs map[string]TopicSpec) error {
	backoff := 20 * time.Millisecond
	for {
		tds, err := a.adm.ListTopics(ctx, names...)
		if err == nil {
			ready := true
			for _, n := range names {
				td, ok := tds[n]
				if !ok || td.Err != nil || int32(len(td.Partitions)) != specs[n].Partitions {
					ready = false
					break
				}
				for _, p := range td.Partitions {
					if p.Err != nil || p.Leader < 0 {
						ready = false
					}
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for created topics %v to have leaders: %w", names, ctx.Err())
		case <-time.After(backoff):
		}
		if backoff < 500*time.Millisecond {
			backoff *= 2
		}
	}
}

// ListTopics describes every topic whose name starts with prefix (all topics for ""), sorted by
// name, with partition count, cleanup policy, retention and per-partition start and end offsets.
func (a *Admin) ListTopics(ctx context.Context, prefix string) ([]TopicInfo, error) {
	infos, err := a.listTopics(ctx, prefix)
	return infos, a.cfg.hint(err)
}

func (a *Admin) listTopics(ctx context.Context, prefix string) ([]TopicInfo, error) {
	tds, err := a.adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var names []string
	for name, td := range tds {
		if td.Err == nil && strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, nil
	}
	rcs, err := a.adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics: describe configs: %w", err)
	}
	starts, err := a.adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics: start offsets: %w", err)
	}
	ends, err := a.adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics: end offsets: %w", err)
	}
	infos := make([]TopicInfo, 0, len(names))
	for _, name := range names {
		td := tds[name]
		n := int32(len(td.Partitions))
		info := TopicInfo{
			Name:          name,
			Partitions:    n,
			CleanupPolicy: "delete",
			RetentionMs:   -1,
			StartOffsets:  make([]int64, n),
			EndOffsets:    make([]int64, n),
		}
		for _, p := range td.Partitions {
			info.ReplicationFactor = len(p.Replicas)
			break
		}
		if rc, err := rcs.On(name, nil); err == nil && rc.Err == nil {
			info.CleanupPolicy = configValue(rc, "cleanup.policy", "delete")
			if ms, err := strconv.ParseInt(configValue(rc, "retention.ms", "-1"), 10, 64); err == nil {
				info.RetentionMs = ms
			}
		}
		for p := int32(0); p < n; p++ {
			if o, ok := starts.Lookup(name, p); ok && o.Err == nil {
				info.StartOffsets[p] = o.Offset
			}
			if o, ok := ends.Lookup(name, p); ok && o.Err == nil {
				info.EndOffsets[p] = o.Offset
			}
		}
		infos = append(infos, info)
	}
	return infos, nil
}

func configValue(rc kadm.ResourceConfig, key, def string) string {
	for _, c := range rc.Configs {
		if c.Key == key && c.Value != nil {
			return *c.Value
		}
	}
	return def
}

// normPolicy puts a cleanup.policy list in a canonical order ("compact,delete").
func normPolicy(p string) string {
	parts := strings.Split(strings.ReplaceAll(p, " ", ""), ",")
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TopicMeta is what the runtime needs to know of an existing topic before it trusts a stored
// image of one of its partitions, or sizes a record for it.
type TopicMeta struct {
	// ID is the topic's incarnation: a topic deleted and created again has a new id.
	ID [16]byte
	// Compacted reports a cleanup.policy that includes compact.
	Compacted bool
	// DeleteRetention is delete.retention.ms: how long compaction keeps a tombstone.
	DeleteRetention time.Duration
	// MaxMessageBytes is max.message.bytes: the largest record batch the topic accepts.
	MaxMessageBytes int
}

// TopicMetas describes the named topics; a topic that does not exist is an error.
func (a *Admin) TopicMetas(ctx context.Context, names []string) (map[string]TopicMeta, error) {
	tds, err := a.adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, a.cfg.hint(fmt.Errorf("describe topics: %w", err))
	}
	rcs, err := a.adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return nil, a.cfg.hint(fmt.Errorf("describe topic configs: %w", err))
	}
	out := make(map[string]TopicMeta, len(names))
	for _, name := range names {
		td, ok := tds[name]
		if !ok || td.Err != nil {
			return nil, fmt.Errorf("describe topic %s: %v", name, td.Err)
		}
		m := TopicMeta{ID: td.ID, DeleteRetention: 24 * time.Hour, MaxMessageBytes: 1048588}
		rc, err := rcs.On(name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			// Fail safe: a topic whose configs cannot be read counts as compacted with tombstones
			// kept for no time, so a stored image of it is never continued.
			m.Compacted, m.DeleteRetention = true, 0
			a.log.Warn("cannot read topic configs; assuming compaction with delete.retention.ms=0", "topic", name, "error", err)
		} else {
			m.Compacted = strings.Contains(configValue(rc, "cleanup.policy", "delete"), "compact")
			if ms, err := strconv.ParseInt(configValue(rc, "delete.retention.ms", "86400000"), 10, 64); err == nil && ms >= 0 {
				m.DeleteRetention = time.Duration(ms) * time.Millisecond
			}
			if b, err := strconv.Atoi(configValue(rc, "max.message.bytes", "1048588")); err == nil && b > 0 {
				m.MaxMessageBytes = b
			}
		}
		out[name] = m
	}
	return out, nil
}

// GroupNodes returns the instance ids (JoinGroup's instanceID: kstate's node ids) of the app
// group's current members. A member stays until it leaves or its session times out, so a node
// that died drops out within the session timeout.
func (a *Admin) GroupNodes(ctx context.Context) ([]string, error) {
	cfg := a.cfg.withDefaults()
	groups, err := a.adm.DescribeGroups(ctx, cfg.GroupID())
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", cfg.GroupID(), err)
	}
	g, ok := groups[cfg.GroupID()]
	if !ok {
		return nil, nil
	}
	if g.Err != nil {
		return nil, fmt.Errorf("describe group %s: %w", cfg.GroupID(), g.Err)
	}
	prefix := cfg.ClientID + "-"
	var out []string
	for _, m := range g.Members {
		if id, ok := strings.CutPrefix(m.ClientID, prefix); ok {
			out = append(out, id)
		}
	}
	return out, nil
}
