package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/testenv"
)

// replayRows is how many audit rows BenchmarkReplay replays.
const replayRows = 1_000_000

// BenchmarkReplay measures `bin/relay replay` writing 1M events, rebuilt
// from audit rows, as JSON lines to stdout (counted, not kept).
func BenchmarkReplay(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	db := testenv.NewDB(b)
	pool := testenv.Pool(b, db.AppURL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The history: document.uploaded audit rows of realistic size, one
	// COPY per 100,000.
	t0 := time.Now()
	sample := testenv.SampleEvent(b)
	start := time.Now().Add(-time.Hour).UTC()
	for done := 0; done < replayRows; done += 100_000 {
		rows := make([][]any, 0, 100_000)
		for i := range 100_000 {
			id := uuid.Must(uuid.NewV7())
			rows = append(rows, []any{start.Add(time.Duration(done+i) * time.Microsecond), "anonymous", events.DocumentUploaded,
				"document", id, id, sample.CorrelationID, string(sample.Data), 1})
		}
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"audit_log"},
			[]string{"occurred_at", "actor_type", "action", "aggregate_type", "aggregate_id", "event_id", "correlation_id", "details", "version"},
			pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `analyze audit_log`); err != nil {
		b.Logf("analyze: %v", err) // the runtime role may not: the planner's estimates are then older
	}
	written := time.Since(t0)

	var lines, bytesOut atomic.Int64
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "relay"), "replay", "--since", "2h")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + db.AppURL, "LOG_FORMAT=json"}
	cmd.Stdout = countingWriter{lines: &lines, bytes: &bytesOut}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t1 := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	elapsed := time.Since(t1)
	line := fmt.Sprintf("replay of %d audit rows to stdout: %d events (%d MiB of JSON lines) in %v = %.0f events/s (target >= 100000); history written in %v",
		replayRows, lines.Load(), bytesOut.Load()>>20, elapsed.Round(time.Millisecond), float64(lines.Load())/elapsed.Seconds(),
		written.Round(time.Millisecond))
	fmt.Println("DocuVault replay benchmark (" + time.Now().UTC().Format(time.RFC3339) + ")")
	fmt.Println(line)
	if last := strings.TrimSpace(stderr.String()); last != "" {
		fmt.Println("  relay said: " + last[strings.LastIndexByte(last, '\n')+1:])
	}
	writeBenchOut("DocuVault replay benchmark\n" + line + "\n")
	if lines.Load() != replayRows {
		b.Errorf("%d events replayed; want %d", lines.Load(), replayRows)
	}
	b.ReportMetric(float64(lines.Load())/elapsed.Seconds(), "events/s")

	// The same history through the audit chain: how fast a relay chains
	// a backlog of 1M rows, and how fast `relay audit verify` checks them.
	chainCtx, stopChain := context.WithCancel(ctx)
	chainDone := make(chan error, 1)
	t2 := time.Now()
	go func() { chainDone <- relay.NewChainer(relay.ChainConfig{}, testenv.Logger(b), pool, nil).Run(chainCtx) }()
	for {
		var links int
		if err := pool.QueryRow(ctx, `select count(*) from audit_chain`).Scan(&links); err != nil {
			b.Fatal(err)
		}
		if links == replayRows {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	chainTime := time.Since(t2)
	stopChain()
	if err := <-chainDone; err != nil {
		b.Fatal(err)
	}
	verify := exec.CommandContext(ctx, filepath.Join(binDir, "relay"), "audit", "verify")
	verify.Env = cmd.Env
	t3 := time.Now()
	out, err := verify.Output()
	if err != nil {
		b.Fatalf("audit verify: %v\n%s", err, out)
	}
	verifyTime := time.Since(t3)
	line = fmt.Sprintf("audit chain of the same %d rows: chained in %v = %.0f links/s; `relay audit verify` in %v = %.0f links/s (%s)",
		replayRows, chainTime.Round(time.Millisecond), replayRows/chainTime.Seconds(),
		verifyTime.Round(time.Millisecond), replayRows/verifyTime.Seconds(), strings.TrimSpace(string(out)))
	fmt.Println(line)
	writeBenchOut(line + "\n")
}

// countingWriter counts lines and bytes.
type countingWriter struct{ lines, bytes *atomic.Int64 }

func (w countingWriter) Write(p []byte) (int, error) {
	w.lines.Add(int64(bytes.Count(p, []byte{'\n'})))
	w.bytes.Add(int64(len(p)))
	return len(p), nil
}

var _ io.Writer = countingWriter{}
