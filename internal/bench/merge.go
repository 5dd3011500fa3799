package bench

import (
	"encoding/json"
	"fmt"
	"os"
)

// ReadReports reads reports written as JSON (WriteJSON) and merges them into one: the machine of
// the first, the command lines and results of all, ratios and targets computed again (Finish).
func ReadReports(files ...string) (*Report, error) {
	var merged *Report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if merged == nil {
			merged = &r
			continue
		}
		merged.Args = append(append(merged.Args, "+"), r.Args...)
		merged.Results = append(merged.Results, r.Results...)
		merged.Memory = append(merged.Memory, r.Memory...)
		merged.Failover = append(merged.Failover, r.Failover...)
		merged.Restore = append(merged.Restore, r.Restore...)
	}
	merged.Finish()
	return merged, nil
}

// newBenchExecCmd is `kstate bench exec [--cpuprofile F] [--debug-addr A] -- ARGS...`: it runs
