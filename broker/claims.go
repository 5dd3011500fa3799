package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrClaimed is wrapped by every *ClaimError.
var ErrClaimed = errors.New("persistence id is written by another app")

// ClaimError reports a persistence id that another app of the namespace writes. A partition's
// fence is its app's transactional id, so two apps writing one journal would not fence each
// other: kstate refuses to start instead.
type ClaimError struct {
	PersistenceID string
	// App is the app that claimed it first; Ours is the app that wanted it.
	App, Ours string
	// Offset is the offset of the first claim in the claims topic.
	Offset int64
	Topic  string
}

// Error names both apps and the ways out.
func (e *ClaimError) Error() string {
	return fmt.Sprintf("persistence id %q belongs to app %q (first claimed at offset %d of %s), not to this app %q: two apps writing one journal would not fence each other; give the entity another persistence_id, or run this node with --app %s",
		e.PersistenceID, e.App, e.Offset, e.Topic, e.Ours, e.App)
}

// Unwrap returns ErrClaimed.
func (e *ClaimError) Unwrap() error { return ErrClaimed }

// ClaimPersistenceIDs makes sure the persistence ids' topics are written by cfg's app alone: in
// the namespace's claims topic (Config.ClaimsTopic, which EnsureTopics creates with the app's
// topics) the first record keyed by a persistence id names its app. Ids nobody claimed yet are
// claimed for cfg's app; then the topic is read back, so two apps claiming one id at the same
// time agree on the winner (the lower offset). It returns a *ClaimError for the first id
// another app holds.
func ClaimPersistenceIDs(ctx context.Context, cfg Config, pids []string) error {
	cfg = cfg.withDefaults()
	owners, err := readClaims(ctx, cfg)
	if err != nil {
		return err
	}
	var missing []string
	for _, pid := range pids {
		if _, ok := owners[pid]; !ok {
			missing = append(missing, pid)
		}
	}
	if len(missing) > 0 {
		cl, err := cfg.newClientAs(roleClaims, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			return err
		}
		recs := make([]*kgo.Record, len(missing))
		for i, pid := range missing {
			recs[i] = &kgo.Record{Topic: cfg.ClaimsTopic(), Partition: 0, Key: []byte(pid), Value: []byte(cfg.app())}
		}
		err = cl.ProduceSync(ctx, recs...).FirstErr()
		cl.Close()
		if err != nil {
			return cfg.hint(fmt.Errorf("claim persistence ids %v in %s: %w", missing, cfg.ClaimsTopic(), err))
		}
		if owners, err = readClaims(ctx, cfg); err != nil {
			return err
		}
	}
	sorted := append([]string(nil), pids...)
	sort.Strings(sorted)
	for _, pid := range sorted {
		c, ok := owners[pid]
		if !ok {
			return fmt.Errorf("claim of persistence id %q not found in %s after producing it", pid, cfg.ClaimsTopic())
		}
		if c.app != cfg.app() {
			return &ClaimError{PersistenceID: pid, App: c.app, Ours: cfg.app(), Offset: c.offset, Topic: cfg.ClaimsTopic()}
		}
	}
	return nil
}

type claim struct {
	app    string
	offset int64
}

// readClaims reads the claims topic whole: the first claim of each persistence id.
func readClaims(ctx context.Context, cfg Config) (map[string]claim, error) {
	owners := make(map[string]claim)
	_, err := ReadToEnd(ctx, cfg, []TopicPartitionFrom{{Topic: cfg.ClaimsTopic(), Partition: 0}}, func(r Record) error {
		if len(r.Key) == 0 || len(r.Value) == 0 {
			return nil // not a claim: ignored
		}
		if _, seen := owners[string(r.Key)]; !seen {
			owners[string(r.Key)] = claim{app: string(r.Value), offset: r.Offset}
		}
		return nil
	})
	if err != nil {
		return nil, cfg.hint(fmt.Errorf("read %s: %w", cfg.ClaimsTopic(), err))
	}
	return owners, nil
}
