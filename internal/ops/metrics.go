package ops

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names of a node's restore state (processor/internal/metrics).
const (
	metricRestoring = "kstate_partition_restoring"
	metricDone      = "kstate_partition_restore_progress_records"
	metricTotal     = "kstate_partition_restore_target_records"
)

// ScrapeRestores reads a node's /metrics on its admin listener (host:port) and returns the restore
// state of every partition it reports.
func ScrapeRestores(ctx context.Context, hc *http.Client, admin string) (map[int32]Restore, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain") // the text format
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	out := map[int32]Restore{}
	each := func(name string, set func(r *Restore, v float64)) {
		mf := mfs[name]
		if mf == nil {
			return
		}
		for _, m := range mf.GetMetric() {
			p, ok := partitionLabel(m)
			if !ok {
				continue
			}
			r := out[p]
			r.Admin = admin
			set(&r, m.GetGauge().GetValue())
			out[p] = r
		}
	}
	each(metricRestoring, func(r *Restore, v float64) { r.Restoring = v == 1 })
	each(metricDone, func(r *Restore, v float64) { r.Done = int64(v) })
	each(metricTotal, func(r *Restore, v float64) { r.Total = int64(v) })
	return out, nil
}

func partitionLabel(m *dto.Metric) (int32, bool) {
	for _, l := range m.GetLabel() {
		if l.GetName() == "partition" {
			p, err := strconv.ParseInt(l.GetValue(), 10, 32)
			return int32(p), err == nil
		}
	}
	return 0, false
}

// MergeRestores merges what several nodes report: a partition some node restores is restoring.
func MergeRestores(all ...map[int32]Restore) map[int32]Restore {
	out := map[int32]Restore{}
	for _, m := range all {
		for p, r := range m {
			if cur, ok := out[p]; !ok || (r.Restoring && !cur.Restoring) {
				out[p] = r
			}
		}
	}
	return out
}
