package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// BenchmarkPipeline measures, in one run (`make bench`):
//
//  1. upload->ready latency (client request start to finalized_at) at a
//     steady 50 uploads/s with relay and consumer running, split by stage;
//  2. uploads/s through the HTTP API at concurrency 16 for 16 KiB and 1 MiB
//     files, next to a raw baseline measured in the same run: minio-go
//     PutObject followed by the same three inserts (document, audit row,
//     outbox event) in one transaction, same concurrency;
//  3. the API's peak RSS while 16 clients each upload 256 MiB at once.
//
// Each phase has a fresh database, bucket and Redis database. It runs once
// whatever b.N is; the figures are printed, not asserted.
func BenchmarkPipeline(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	// Each phase gets a fresh database, bucket and Redis database, so one
	// phase's backlog does not slow the next.
	fresh := func() (testenv.Env, *pgxpool.Pool, *blob.Store) {
		db := testenv.NewDB(b)
		s3 := testenv.S3(b)
		// One client sends up to 16 uploads at once here.
		env := testenv.ServiceEnv(b, db, s3).With("UPLOAD_MAX_BYTES", strconv.Itoa(300<<20), "UPLOAD_CONCURRENCY_PER_CLIENT", "64")
		blobs, err := blob.New(s3)
		if err != nil {
			b.Fatal(err)
		}
		// The baseline gets as many connections as the API has.
		sep := "?"
		if strings.Contains(db.AppURL, "?") {
			sep = "&"
		}
		return env, testenv.Pool(b, db.AppURL+sep+"pool_max_conns=20"), blobs
	}
	out := &strings.Builder{}
	report := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		fmt.Fprintln(out, line)
		fmt.Fprintln(os.Stdout, line)
	}
	report("DocuVault pipeline benchmark (%s)", time.Now().UTC().Format(time.RFC3339))

	transport := &http.Transport{MaxIdleConnsPerHost: 32}
	// signIn registers an account on the API at base; the client sends its
	// token.
	signedIn := func(base string) *http.Client {
		return &http.Client{Transport: withToken(signIn(b, base).Access, transport)}
	}
	// 1. Latency at a steady 50 uploads/s with the whole pipeline running.
	// It goes first: the throughput phase leaves the disk busy for a while
	// (checkpoint, MinIO background work), which is not the steady state.
	env, appPool, _ := fresh()
	api := start(b, "api", env)
	base := "http://" + api.addr("api")
	client := signedIn(base)
	relayProc := start(b, "relay", env)
	consumer := start(b, "consumer", env)
	relayProc.addr("metrics")
	consumer.addr("metrics")
	small := make([]byte, 16<<10)
	// Warm up (connections, consumer group, prepared statements) at the
	// same rate; only the steady state is measured.
	steadyLatency(b, client, base, appPool, small, 50, time.Second)
	if _, err := appPool.Exec(context.Background(), `delete from documents`); err != nil {
		b.Fatal(err)
	}
	lat := steadyLatency(b, client, base, appPool, small, 50, 10*time.Second)
	report("upload->ready latency at 50 uploads/s (%d uploads, 16 KiB): p50 %v  p99 %v  max %v (target p99 < 100ms)",
		len(lat), pct(lat, 0.50), pct(lat, 0.99), lat[len(lat)-1])
	relayLag, consumerLag := stageLatencies(b, appPool, testenv.RedisClient(b, env["REDIS_URL"]))
	report("  of which commit->stream (relay, ms resolution) p50 %v p99 %v; stream->ready (consumer) p50 %v p99 %v",
		pct(relayLag, 0.5), pct(relayLag, 0.99), pct(consumerLag, 0.5), pct(consumerLag, 0.99))
	relayProc.stop()
	consumer.stop()
	api.stop()

	// 2. Throughput: the API alone (relay and consumer stopped, as the
	// baseline has none), interleaved with the baseline to share noise.
	env, appPool, blobs := fresh()
	api = start(b, "api", env)
	base = "http://" + api.addr("api")
	client = signedIn(base)
	rawOwner := testenv.User(b, appPool, "") // the baseline's documents have an owner too
	for _, c := range []struct {
		name  string
		size  int
		count int
	}{{"16 KiB", 16 << 10, 1500}, {"1 MiB", 1 << 20, 300}} {
		content := make([]byte, c.size)
		fill(content, uint64(c.size))
		// One prebuilt body; each upload stamps its own number into a copy,
		// so every document is distinct (as real ones are) at little cost to
		// the client. The baseline stamps its content the same way.
		body, ct := multipartOf("bench.bin", content)
		at := bytes.Index(body.Bytes(), content[:64])
		var seq atomic.Uint64
		stamp := func(b []byte, off int) []byte {
			out := bytes.Clone(b)
			binary.LittleEndian.PutUint64(out[off:], seq.Add(1))
			return out
		}
		var raw, viaAPI []float64
		for range 3 {
			raw = append(raw, rate(c.count, 16, func(i int) error { return rawUpload(appPool, blobs, rawOwner, stamp(content, 0)) }))
			viaAPI = append(viaAPI, rate(c.count, 16, func(i int) error {
				return apiUpload(client, base, ct, stamp(body.Bytes(), at))
			}))
		}
		r, a := median(raw), median(viaAPI)
		report("throughput %-6s c=16: api %7.1f uploads/s   raw baseline %7.1f uploads/s   ratio %.2f (target >= 0.85; rounds api %v raw %v)",
			c.name, a, r, a/r, round1(viaAPI), round1(raw))
	}

	// 3. Peak RSS of the API while 16 clients upload 256 MiB each.
	api.stop()
	env, _, _ = fresh()
	api = start(b, "api", env)
	base = "http://" + api.addr("api")
	client = signedIn(base)
	before := rss(b, api, "VmRSS")
	var wg sync.WaitGroup
	var failed atomic.Int32
	t0 := time.Now()
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := streamUpload(client, base, fmt.Sprintf("big-%d.bin", i), 256<<20, uint64(i)); err != nil {
				failed.Add(1)
				b.Logf("big upload %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	peak := rss(b, api, "VmHWM")
	report("API peak RSS with 16 concurrent 256 MiB uploads: %d MiB (idle before: %d MiB; %d failed; 4 GiB in %v = %.0f MiB/s) (target < 256 MiB)",
		peak>>10, before>>10, failed.Load(), elapsed.Round(time.Millisecond), 4096/elapsed.Seconds())
	api.stop()

	writeBenchOut(out.String())
}

// writeBenchOut appends a benchmark's report to the file DOCUVAULT_BENCH_OUT
// names, if any (make bench runs several benchmarks into one file).
func writeBenchOut(report string) {
	path := os.Getenv("DOCUVAULT_BENCH_OUT")
	if path == "" {
		return
	}
	if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		_, _ = f.WriteString(report)
		_ = f.Close()
	}
}

// fill writes deterministic pseudo-random bytes.
func fill(p []byte, seed uint64) {
	var s [32]byte
	s[0] = byte(seed)
	_, _ = rand.NewChaCha8(s).Read(p)
}

// rate runs n calls of fn on c workers and returns calls per second.
func rate(n, c int, fn func(i int) error) float64 {
	elapsed, err := fbParallel(n, c, fn)
	if err != nil {
		panic(err)
	}
	return float64(n) / elapsed.Seconds()
}

// rawUpload is the baseline: what an upload must do at the least, with
// nothing of DocuVault's HTTP, multipart, hashing or detection.
func rawUpload(db store.Beginner, blobs *blob.Store, owner uuid.UUID, content []byte) error {
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	key := blob.StagingKey(id)
	if _, err := blobs.Client().PutObject(ctx, blobs.Bucket(), key, bytes.NewReader(content), int64(len(content)),
		minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		return err
	}
	sum := sha256.Sum256(content) // a stand-in checksum column value; see the note in BENCHMARKS
	return store.WithTx(ctx, db, func(tx pgx.Tx) error {
		doc, err := store.InsertDocument(ctx, tx, store.Document{ID: id, UserID: &owner, Filename: "raw.bin", ContentType: "application/octet-stream",
			SizeBytes: int64(len(content)), SHA256: sum[:], StorageKey: key})
		if err != nil {
			return err
		}
		ev, err := events.New(events.DocumentUploaded, "document", id, events.Actor{Type: "user", ID: &owner}, uuid.Must(uuid.NewV7()), nil, doc.EventData())
		if err != nil {
			return err
		}
		return store.Record(ctx, tx, ev, store.Origin{})
	})
}

func multipartOf(filename string, content []byte) (*bytes.Buffer, string) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", filename)
	_, _ = fw.Write(content)
	_ = mw.Close()
	return &body, mw.FormDataContentType()
}

func apiUpload(client *http.Client, base, contentType string, body []byte) error {
	resp, err := client.Post(base+"/api/v1/documents", contentType, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("upload: %d", resp.StatusCode)
	}
	return nil
}

// streamUpload sends size pseudo-random bytes as the file part without
// holding them in memory.
func streamUpload(client *http.Client, base, filename string, size int64, seed uint64) error {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, err := mw.CreateFormFile("file", filename)
		if err == nil {
			var s [32]byte
			s[0], s[1] = byte(seed), 0xbe
			_, err = io.CopyN(fw, rand.NewChaCha8(s), size)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	resp, err := client.Post(base+"/api/v1/documents", mw.FormDataContentType(), pr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// steadyLatency uploads at perSecond for d and returns the sorted
// upload->ready latencies: from the client's request start to the
// document's finalized_at (one clock: the same machine).
func steadyLatency(b *testing.B, client *http.Client, base string, db store.DBTX, content []byte, perSecond int, d time.Duration) []time.Duration {
	type sent struct {
		id string
		t0 time.Time
	}
	var mu sync.Mutex
	var all []sent
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline); i++ {
		<-tick.C
		fill(content, uint64(i)+1000)
		body, ct := multipartOf(fmt.Sprintf("lat-%d.bin", i), content)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := client.Post(base+"/api/v1/documents", ct, body)
			if err != nil {
				b.Error(err)
				return
			}
			loc := resp.Header.Get("Location")
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			all = append(all, sent{id: loc[strings.LastIndexByte(loc, '/')+1:], t0: t0})
			mu.Unlock()
		}()
	}
	wg.Wait()
	var lat []time.Duration
	for _, s := range all {
		var finalized *time.Time
		eventually(b, 60*time.Second, "document "+s.id+" finalised", func() bool {
			_ = db.QueryRow(context.Background(), `select finalized_at from documents where id = $1`, s.id).Scan(&finalized)
			return finalized != nil
		})
		lat = append(lat, finalized.Sub(s.t0))
	}
	slices.Sort(lat)
	return lat
}

// stageLatencies splits upload->ready by stage: upload transaction to the
// stream entry's time (relay; Redis stamps entry ids in milliseconds), and
// stream entry to finalized (delivery and the consumer).
func stageLatencies(b *testing.B, db store.DBTX, rdb *redis.Client) (relay, consumer []time.Duration) {
	ctx := context.Background()
	entries, err := rdb.XRange(ctx, events.StreamDocuments, "-", "+").Result()
	if err != nil {
		b.Fatal(err)
	}
	entered := map[string]time.Time{}
	for _, e := range entries {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
		if err != nil || msg.Metadata.Get(events.MetaType) != events.DocumentUploaded {
			continue
		}
		ms, _, _ := strings.Cut(e.ID, "-")
		n, _ := strconv.ParseInt(ms, 10, 64)
		entered[msg.Metadata.Get(events.MetaAggregateID)] = time.UnixMilli(n)
	}
	rows, err := db.Query(ctx, `select id::text, created_at, finalized_at from documents where finalized_at is not null`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var created, finalized time.Time
		if err := rows.Scan(&id, &created, &finalized); err != nil {
			b.Fatal(err)
		}
		if at, ok := entered[id]; ok {
			relay, consumer = append(relay, at.Sub(created)), append(consumer, finalized.Sub(at))
		}
	}
	slices.Sort(relay)
	slices.Sort(consumer)
	return relay, consumer
}

func pct(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(float64(len(sorted)-1)*p)].Round(100 * time.Microsecond)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round1(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(int(x*10)) / 10
	}
	return out
}

// rss reads a memory figure (kB) of the process from /proc.
func rss(b *testing.B, p *proc, field string) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, field+":") {
			n, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return n
		}
	}
	b.Fatalf("no %s in /proc status", field)
	return 0
}
