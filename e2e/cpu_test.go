package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cpuTicksPerSecond is USER_HZ, the unit of /proc/PID/stat's times (100 on
// every Linux this runs on).
const cpuTicksPerSecond = 100

// cpuUse is CPU seconds spent, by kind of process.
type cpuUse map[string]float64

// cpuNow sums the user and system CPU time of every process on the
// machine by kind: minio, postgres, redis-server, the DocuVault binaries,
// kernel threads, the benchmark itself, and the rest. Processes that ended
// since the last sample are missing, so take samples around work done by
// long-lived processes.
func cpuNow() cpuUse {
	use := cpuUse{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // ended meanwhile
		}
		s := string(b)
		l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if l < 0 || r < 0 || r+2 > len(s) {
			continue
		}
		f := strings.Fields(s[r+2:]) // from field 3 (state) on
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		kind := cpuKind(s[l+1 : r])
		if kind == "postgres" {
			kind = postgresKind(filepath.Dir(path))
		}
		use[kind] += (utime + stime) / cpuTicksPerSecond
	}
	return use
}

func cpuKind(comm string) string {
	switch {
	case comm == "minio", comm == "postgres", comm == "redis-server", comm == "api", comm == "relay", comm == "consumer":
		return comm
	case strings.HasPrefix(comm, "kworker"), strings.HasPrefix(comm, "ksoftirqd"), strings.HasPrefix(comm, "jbd2"), strings.HasPrefix(comm, "kswapd"):
		return "kernel"
	case strings.HasSuffix(comm, ".test"):
		return "benchmark"
	}
	return "other"
}

// postgresKind tells a PostgreSQL server's client backends ("postgres",
// the postmaster included) from its background processes (checkpointer,
// background writer, WAL writer, autovacuum, replication launchers), by
// the title each sets (/proc/PID/cmdline, "postgres: 15/main: walwriter").
// Like every process here, an autovacuum worker that starts and ends
// between two samples is missed.
func postgresKind(proc string) string {
	b, _ := os.ReadFile(filepath.Join(proc, "cmdline"))
	title := string(b)
	for _, bg := range []string{"checkpointer", "background writer", "walwriter", "autovacuum", "replication launcher"} {
		if strings.Contains(title, bg) {
			return "postgres background"
		}
	}
	return "postgres"
}

// since is the CPU spent from before to u.
func (u cpuUse) since(before cpuUse) cpuUse {
	d := cpuUse{}
	for k, v := range u {
		if v > before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// add adds d to u.
func (u cpuUse) add(d cpuUse) {
	for k, v := range d {
		u[k] += v
	}
}

// perItem formats u divided by n as microseconds per item, largest first:
// "total 3520 µs: minio 1300, postgres 750, ...".
func (u cpuUse) perItem(n int) string {
	kinds := make([]string, 0, len(u))
	total := 0.0
	for k, v := range u {
		total += v
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int {
		switch {
		case u[a] > u[b]:
			return -1
		case u[a] < u[b]:
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		if us := u[k] / float64(n) * 1e6; us >= 10 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, us))
		}
	}
	return fmt.Sprintf("total %.0f µs: %s", total/float64(n)*1e6, strings.Join(parts, ", "))
}
