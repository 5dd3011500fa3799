package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of the CPU times in /proc/<pid>/stat. It is 100 on
// every architecture Go supports on Linux (it is fixed by the kernel ABI, not by HZ).
const clockTicks = 100

// ErrNoProc is returned where /proc is not available (not Linux).
var ErrNoProc = errors.New("bench: /proc is not available")

// ProcSample is a process's resource use at one moment.
type ProcSample struct {
	// CPU is user plus system CPU time since the process started (/proc/<pid>/stat).
	CPU time.Duration
	// RSS is the resident set size in bytes (VmRSS in /proc/<pid>/status).
	RSS int64
}

// ReadProc samples process pid from /proc.
func ReadProc(pid int) (ProcSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat("/proc/self/stat"); serr != nil {
				return ProcSample{}, ErrNoProc
			}
		}
		return ProcSample{}, fmt.Errorf("bench: process %d: %w", pid, err)
	}
	cpu, err := parseStat(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("bench: process %d: %w", pid, err)
	}
	rss, err := parseRSS(st)
	if err != nil {
		return ProcSample{}, fmt.Errorf("bench: /proc/%d/status: %w", pid, err)
	}
	return ProcSample{CPU: cpu, RSS: rss}, nil
}

// parseStat returns utime+stime from the contents of /proc/<pid>/stat. The command name (field
// 2) is in parentheses and may hold spaces, so fields are counted from the last ')'.
func parseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseRSS returns VmRSS in bytes from the contents of /proc/<pid>/status.
func parseRSS(b []byte) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want \"<n> kB\"", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS %q: %w", f[0], err)
		}
		return n << 10, nil
	}
	return 0, errors.New("no VmRSS line (a zombie or kernel thread?)")
}

// LoadAverage returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func LoadAverage() ([3]float64, error) {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out, ErrNoProc
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return out, fmt.Errorf("bench: /proc/loadavg: %q", b)
	}
	for i := range out {
		if out[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return out, fmt.Errorf("bench: /proc/loadavg: %w", err)
		}
	}
	return out, nil
}

// Procs samples several processes and adds their CPU times and RSS. A pid of 0 is skipped.
func Procs(pids ...int) (ProcSample, error) {
	var sum ProcSample
	for _, pid := range pids {
		if pid == 0 {
			continue
		}
		s, err := ReadProc(pid)
		if err != nil {
			return sum, err
		}
		sum.CPU += s.CPU
		sum.RSS += s.RSS
	}
	return sum, nil
}
