package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

const (
	fbDocs         = 1500     // documents per measured round, per contender
	fbWarmup       = 100      // documents (and copies) before the first round, not measured
	fbRounds       = 5        // rounds (one per measurement, so each goes first once); the medians are reported
	fbSize         = 16 << 10 // bytes per document
	fbWorkers      = 8        // the raw baseline's lower concurrency
	fbSeeders      = 8        // concurrency of the untimed seeding
	fbPoll         = 20 * time.Millisecond
	fbRemoveBatch  = 500                   // most keys per removal request, as the consumer's remover
	fbRemoveWait   = 20 * time.Millisecond // how long it collects keys after the first
	fbRoundTimeout = 60 * time.Second      // longest one round of either contender may take
	fbSeedTimeout  = 60 * time.Second      // longest seeding one round's documents may take
)

// consumerFinalizeWorkers is the consumer's finalizeWorkers
// (cmd/consumer/router.go): how many messages it handles at once, and the
// raw baseline's higher concurrency.
const consumerFinalizeWorkers = 32

// BenchmarkFinalize measures, in one run (`make bench`), how fast the real
// consumer binary finalises 16 KiB uploads, next to the raw MinIO
// server-side copy rate:
//
//   - finalisation: fbDocs pending documents are seeded as the API leaves
//     them (object at staging/{id}, distinct random bytes; document row,
//     audit row and outbox event committed together by store.InsertUpload),
//     untimed. Their outbox rows are taken as the relay takes them and held;
//     the clock starts when they are published to the stream (pipelined
//     XADDs, as the relay sends them, a few milliseconds) and stops when
//     every one of the documents has left pending, polled every 20 ms. The
//     consumer runs throughout with its finalize workers, already warmed
//     up; no relay runs, so its own events stay in the outbox.
//   - raw baseline: a fresh set of fbDocs staged objects of the same size,
//     each copied server-side (minio-go CopyObject, as blob.Store.Copy) from
//     staging/{id} to users/{owner}/documents/{id}, and nothing else; once
//     by fbWorkers goroutines and once by as many as the consumer handles
//     messages at once (consumerFinalizeWorkers). The faster of the two
//     (by median) is the baseline.
//   - reference (reported, not the target's baseline): the raw copies, each
//     staged object then removed as the consumer's remover does (batched
//     multi-object deletes, concurrently with the copies), at the same two
//     concurrencies; the faster is the reference.
//     That is the object store's share of a finalisation as DESIGN.md §4
//     has it (staging/{id} to its final key), so the consumer's rate over
//     it shows what everything else costs.
//
// Every document has one owner, a users row inserted first (its quota is
// the default, far above what the rounds store).

// Each round rotates which measurement goes first, so all share the
// machine's noise; the medians of the rounds are reported. It runs once whatever b.N
// is; the figures are printed, not asserted (failures are, though).
func BenchmarkFinalize(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	ctx := context.Background()
	db := testenv.NewDB(b)
	s3 := testenv.S3(b)
	env := testenv.ServiceEnv(b, db, s3)
	blobs, err := blob.New(s3)
	if err != nil {
		b.Fatal(err)
	}
	pool := testenv.Pool(b, db.AppURL+fbParam(db.AppURL)+"pool_max_conns="+fmt.Sprint(2*fbSeeders))
	rdb := testenv.RedisClient(b, env["REDIS_URL"])
	owner := testenv.User(b, pool, "")

	out := &strings.Builder{}
	report := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		fmt.Fprintln(out, line)
		fmt.Fprintln(os.Stdout, line)
	}
	report("DocuVault finalisation benchmark (%s): %d x %d KiB documents per round, %d rounds; consumer concurrency %d, raw %d and %d; load average %s",
		time.Now().UTC().Format(time.RFC3339), fbDocs, fbSize>>10, fbRounds, consumerFinalizeWorkers, fbWorkers, consumerFinalizeWorkers, rbLoadAvg())

	consumer := start(b, "consumer", env)
	metricsAddr := consumer.addr("metrics")

	var seed atomic.Uint64
	finished := 0 // documents the consumer finished so far (all rounds)
	// CPU time of every process during the measured windows, to show
	// where each document's time goes (the machine's cores are shared by
	// MinIO, PostgreSQL, Redis and the consumer).
	finCPU, rawCPU := cpuUse{}, cpuUse{}
	finalizeRound := func(n int, cpu cpuUse) (float64, time.Duration) {
		b.Helper()
		rows := fbSeedUploads(b, pool, blobs, owner, &seed, n)
		before := cpuNow()
		rate, elapsed := fbFinalize(b, pool, rdb, rows)
		cpu.add(cpuNow().since(before))
		finished += n
		return rate, elapsed
	}
	// copyRound times the raw copies of n fresh staged objects; with
	// remove, also the batched removal of the staged objects, as the
	// consumer does (otherwise that is done untimed, after).
	copyRound := func(n int, cpu cpuUse, concurrency int, remove bool) float64 {
		b.Helper()
		ids := fbSeedObjects(b, blobs, &seed, n)
		before := cpuNow()
		rate := fbCopy(b, blobs, owner, ids, concurrency, remove)
		cpu.add(cpuNow().since(before))
		if !remove {
			fbRemoveStaged(b, blobs, ids)
		}
		return rate
	}

	// Warm up: connections, the consumer group, prepared statements.
	finalizeRound(fbWarmup, cpuUse{})
	copyRound(fbWarmup, cpuUse{}, fbWorkers, false)

	var fin, raw, rawWide, moves, movesWide []float64
	var windows []time.Duration
	rawWideCPU, movesCPU, movesWideCPU := cpuUse{}, cpuUse{}, cpuUse{}
	for round := range fbRounds {
		// Rotate which goes first: the one that follows another's seeding
		// finds MinIO and PostgreSQL still flushing.
		measure := []func(){
			func() { raw = append(raw, copyRound(fbDocs, rawCPU, fbWorkers, false)) },
			func() { rawWide = append(rawWide, copyRound(fbDocs, rawWideCPU, consumerFinalizeWorkers, false)) },
			func() { moves = append(moves, copyRound(fbDocs, movesCPU, fbWorkers, true)) },
			func() { movesWide = append(movesWide, copyRound(fbDocs, movesWideCPU, consumerFinalizeWorkers, true)) },
			func() {
				f, w := finalizeRound(fbDocs, finCPU)
				fin, windows = append(fin, f), append(windows, w)
			},
		}
		for i := range measure {
			measure[(round+i)%len(measure)]()
		}
	}

	// Every document must have been finalised ready.
	var ready, other int
	var others []string
	rows, err := pool.Query(ctx, `select status, coalesce(reject_reason, ''), count(*) from documents group by 1, 2 order by 1, 2`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var status, reason string
		var n int
		if err := rows.Scan(&status, &reason, &n); err != nil {
			b.Fatal(err)
		}
		if status == store.StatusReady {
			ready += n
			continue
		}
		other += n
		others = append(others, fmt.Sprintf("%s %s: %d", status, reason, n))
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	if other > 0 {
		b.Errorf("%d documents not ready: %v", other, others)
	}

	f, r8, r32, mv8, mv32 := median(fin), median(raw), median(rawWide), median(moves), median(movesWide)
	r, rc, baseCPU := r8, fbWorkers, rawCPU
	if r32 > r8 {
		r, rc, baseCPU = r32, consumerFinalizeWorkers, rawWideCPU
	}
	mv, mvc, mvCPU := mv8, fbWorkers, movesCPU
	if mv32 > mv8 {
		mv, mvc, mvCPU = mv32, consumerFinalizeWorkers, movesWideCPU
	}
	report("finalisation 16 KiB: consumer %7.1f events/s   raw server-side copy %7.1f copies/s (c=%d, the faster)   ratio %.2f (target >= 0.7)",
		f, r, rc, f/r)
	report("  reference: raw copy + batched removal of the staged object (the object store's work a finalisation needs) %7.1f moves/s (c=%d, the faster); consumer / that %.2f",
		mv, mvc, f/mv)
	report("  rounds: consumer %v events/s (%v for %d each), raw c=%d %v copies/s, raw c=%d %v copies/s, copy + removal c=%d %v and c=%d %v moves/s; %d of %d documents ready (with warm-up), %d failed %v",
		round1(fin), windows, fbDocs, fbWorkers, round1(raw), consumerFinalizeWorkers, round1(rawWide), fbWorkers, round1(moves), consumerFinalizeWorkers, round1(movesWide),
		ready, finished, other, others)
	report("  consumer: from publishing %d document.uploaded events (pipelined XADD) until all %d documents left pending;", fbDocs, fbDocs)
	report("    uploads handled at about the same time are finalised as a group: one round trip (begin, the documents' locks,")
	report("    processed checks and rows), CopyObject of each only if its staged object still has the upload's ETag (concurrently),")
	report("    one round trip (one statement for the group: ready, quota charges, processed marks, audit rows, outbox events; commit);")
	report("    the staged objects queued for batched multi-object deletes; through Watermill, %d finalize workers", consumerFinalizeWorkers)
	report("  raw: minio-go CopyObject staging/{id} -> users/{owner}/documents/{id} of fresh %d KiB objects, %d or %d goroutines, nothing else",
		fbSize>>10, fbWorkers, consumerFinalizeWorkers)
	report("  CPU per document in the measured windows (all processes, %d rounds): consumer's %s", fbRounds, finCPU.perItem(fbRounds*fbDocs))
	report("                                                        raw copy's (c=%d) %s", rc, baseCPU.perItem(fbRounds*fbDocs))
	report("                                              copy + removal's (c=%d) %s", mvc, mvCPU.perItem(fbRounds*fbDocs))
	var groupSum, groupCount float64
	for _, l := range strings.Split(metric(b, metricsAddr, "docuvault_finalize_group_documents_"), "\n") {
		if v, ok := strings.CutPrefix(l, "docuvault_finalize_group_documents_sum "); ok {
			groupSum, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(l, "docuvault_finalize_group_documents_count "); ok {
			groupCount, _ = strconv.ParseFloat(v, 64)
		}
	}
	if groupCount > 0 {
		report("  finalisation groups: %.0f, %.1f uploads each on average (all rounds, warm-up included)", groupCount, groupSum/groupCount)
	}
	report("  load average at the end: %s", rbLoadAvg())
	b.ReportMetric(f, "finalize-events/s")
	b.ReportMetric(r, "raw-copies/s")
	b.ReportMetric(f/r, "ratio")
	b.ReportMetric(mv, "raw-moves/s")

	consumer.stop()
	writeBenchOut(out.String())
}

// fbParam is the separator to append a parameter to dsn.
func fbParam(dsn string) string {
	if strings.Contains(dsn, "?") {
		return "&"
	}
	return "?"
}

// fbContent fills p with pseudo-random bytes that differ for every seed.
func fbContent(p []byte, seed uint64) {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "docuvault-finalize-bench")
	_, _ = rand.NewChaCha8(s).Read(p)
}

// fbParallel runs fn(i) for i in [0, n) on c goroutines and returns the
// elapsed time and the first error (the others stop taking work then).
func fbParallel(n, c int, fn func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	t0 := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t0), first
}

// fbSeedUploads commits n pending documents as the API does (staged
// object, then document + audit row + outbox event in one round trip),
// then takes their outbox rows as the relay would and returns them
// unpublished. Nothing of it is timed.
func fbSeedUploads(b *testing.B, pool *pgxpool.Pool, blobs *blob.Store, owner uuid.UUID, seed *atomic.Uint64, n int) []store.OutboxRow {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fbSeedTimeout)
	defer cancel()
	bufs := make(chan []byte, fbSeeders)
	for range fbSeeders {
		bufs <- make([]byte, fbSize)
	}
	_, err := fbParallel(n, fbSeeders, func(int) error {
		content := <-bufs
		defer func() { bufs <- content }()
		fbContent(content, seed.Add(1))
		id := uuid.Must(uuid.NewV7())
		key := blob.StagingKey(id)
		put, err := blobs.Put(ctx, key, bytes.NewReader(content), fbSize, "application/octet-stream")
		if err != nil {
			return err
		}
		doc := store.Document{ID: id, UserID: &owner, Filename: "bench.bin", ContentType: "application/octet-stream",
			SizeBytes: put.Size, SHA256: put.SHA256, StorageKey: key, StagingETag: &put.ETag}
		ev, err := events.New(events.DocumentUploaded, "document", id, events.Actor{Type: "user", ID: &owner}, uuid.Must(uuid.NewV7()), nil, doc.EventData())
		if err != nil {
			return err
		}
		_, err = store.InsertUpload(ctx, pool, doc, ev, store.Origin{})
		return err
	})
	if err != nil {
		b.Fatalf("seed uploads: %v", err)
	}
	// Take the whole outbox: these uploads' events, and the events the
	// consumer wrote in earlier rounds (nothing publishes those here).
	var rows []store.OutboxRow
	for {
		var taken []store.OutboxRow
		err := store.WithTx(ctx, pool, func(tx pgx.Tx) error {
			var err error
			taken, _, _, err = store.TakeOutbox(ctx, tx, 0, 1000)
			return err
		})
		if err != nil {
			b.Fatalf("take outbox: %v", err)
		}
		if len(taken) == 0 {
			break
		}
		for _, r := range taken {
			if r.EventType == events.DocumentUploaded {
				rows = append(rows, r)
			}
		}
	}
	if len(rows) != n {
		b.Fatalf("took %d document.uploaded events from the outbox, want %d", len(rows), n)
	}
	return rows
}

// fbFinalize publishes rows to the stream and waits until no document is
// pending (those of earlier rounds finished before this one began). It
// returns the documents per second from the first XADD to the poll that
// saw the last one finished, and that window.
func fbFinalize(b *testing.B, pool *pgxpool.Pool, rdb *redis.Client, rows []store.OutboxRow) (float64, time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fbRoundTimeout)
	defer cancel()
	pub := relay.StreamPublisher{Redis: rdb}
	t0 := time.Now()
	for i := 0; i < len(rows); i += 1000 {
		if err := pub.Publish(ctx, rows[i:min(i+1000, len(rows))]); err != nil {
			b.Fatalf("publish: %v", err)
		}
	}
	for {
		// Earlier rounds' documents are all finished: the pending ones are
		// this round's. The poll only asks whether one is left, which the
		// partial index answers from its first live entry, so it does not
		// burden the machine it measures (a count visits every pending row).
		var left bool
		if err := pool.QueryRow(ctx, `select exists (select 1 from documents where status = 'pending')`).Scan(&left); err != nil {
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			var pending int
			cerr := pool.QueryRow(cctx, `select count(*) from documents where status = 'pending'`).Scan(&pending)
			ccancel()
			if cerr != nil {
				b.Fatalf("documents still pending after %v (%v; counting them: %v)", fbRoundTimeout, err, cerr)
			}
			b.Fatalf("%d of %d documents finished within %v (%v)", len(rows)-pending, len(rows), fbRoundTimeout, err)
		}
		if !left {
			elapsed := time.Since(t0)
			return float64(len(rows)) / elapsed.Seconds(), elapsed.Round(time.Millisecond)
		}
		time.Sleep(fbPoll)
	}
}

// fbSeedObjects stages n fresh objects for the raw baseline (untimed) and
// returns their document ids.
func fbSeedObjects(b *testing.B, blobs *blob.Store, seed *atomic.Uint64, n int) []uuid.UUID {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fbSeedTimeout)
	defer cancel()
	ids := make([]uuid.UUID, n)
	bufs := make(chan []byte, fbSeeders)
	for range fbSeeders {
		bufs <- make([]byte, fbSize)
	}
	_, err := fbParallel(n, fbSeeders, func(i int) error {
		content := <-bufs
		defer func() { bufs <- content }()
		fbContent(content, seed.Add(1))
		ids[i] = uuid.Must(uuid.NewV7())
		_, err := blobs.Put(ctx, blob.StagingKey(ids[i]), bytes.NewReader(content), fbSize, "application/octet-stream")
		return err
	})
	if err != nil {
		b.Fatalf("seed objects: %v", err)
	}
	return ids
}

// fbCopy copies each staged object to its final key server-side on
// concurrency goroutines and returns copies per second. With remove, one
// more goroutine removes the copied staged objects meanwhile, as the
// consumer's remover does (what queues within fbRemoveWait of the first
// key, up to fbRemoveBatch keys a request, multi-object delete), and the
// clock stops when the last is removed.
func fbCopy(b *testing.B, blobs *blob.Store, owner uuid.UUID, ids []uuid.UUID, concurrency int, remove bool) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fbRoundTimeout)
	defer cancel()
	copied := make(chan string, len(ids))
	removed := make(chan error, 1)
	t0 := time.Now()
	if remove {
		go func() {
			var keys []string
			for k := range copied {
				keys = append(keys[:0], k)
				wait := time.After(fbRemoveWait)
			collect:
				for len(keys) < fbRemoveBatch {
					select {
					case k, ok := <-copied:
						if !ok {
							break collect
						}
						keys = append(keys, k)
					case <-wait:
						break collect
					}
				}
				if err := blobs.RemoveMany(ctx, keys); err != nil {
					removed <- err
					return
				}
			}
			removed <- nil
		}()
	}
	_, err := fbParallel(len(ids), concurrency, func(i int) error {
		if err := blobs.Copy(ctx, blob.StagingKey(ids[i]), blob.FinalKey(&owner, ids[i])); err != nil {
			return err
		}
		if remove {
			copied <- blob.StagingKey(ids[i])
		}
		return nil
	})
	close(copied)
	if err != nil {
		b.Fatalf("raw copy: %v", err)
	}
	if remove {
		if err := <-removed; err != nil {
			b.Fatalf("raw removal: %v", err)
		}
	}
	return float64(len(ids)) / time.Since(t0).Seconds()
}

// fbRemoveStaged removes the baseline's staged objects (multi-object
// delete, blob.Store.RemoveMany), so the bucket holds what the consumer
// leaves behind.
func fbRemoveStaged(b *testing.B, blobs *blob.Store, ids []uuid.UUID) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fbSeedTimeout)
	defer cancel()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = blob.StagingKey(id)
	}
	if err := blobs.RemoveMany(ctx, keys); err != nil {
		b.Fatal(err)
	}
}
