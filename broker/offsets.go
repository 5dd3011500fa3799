package broker

import (
	"context"
	"fmt"
)

// EndOffsets returns the end offset (the offset the next record will get, the high watermark)
// of every partition of topics, by topic and partition. A topic the cluster does not know is
// missing from the answer; a partition whose offset could not be listed is an error. It is one
// ListOffsets round trip per broker, cheap enough for a console that refreshes every second or two.
func (a *Admin) EndOffsets(ctx context.Context, topics []string) (map[string]map[int32]int64, error) {
	lo, err := a.adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", a.cfg.hint(err))
	}
	out := make(map[string]map[int32]int64, len(lo))
	for topic, parts := range lo {
		m := make(map[int32]int64, len(parts))
		for p, o := range parts {
			m[p] = o.Offset
		}
		out[topic] = m
	}
	return out, nil
}
