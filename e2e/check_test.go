package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/check"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/testenv"
)

// The invariant checker finds nothing wrong with a quiet system that
// uploaded, synced and deleted documents through the real binaries, and
// names each invariant a superuser (or a lost write) then breaks; `api
// check` exits 0, then 1 with one line per finding.
func TestInvariantChecker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dav := testenv.StartWebDAV(t, "docuvault", "dav-password")
	st := startStack(t)
	f := st.flow(t)
	f.connectWebDAV(dav, "checked dav")

	var ids []string
	for i := range 4 {
		content := make([]byte, 10<<10+i)
		_, _ = rand.Read(content)
		resp, body := upload(t, st.client, st.base, "checked.bin", content, nil, nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
		var doc struct{ ID string }
		_ = json.Unmarshal(body, &doc)
		ids = append(ids, doc.ID)
	}
	for _, id := range ids {
		f.waitDocument(id, "ready and copied", func(d flowDocument) bool {
			return d.Status == "ready" && len(d.CloudSync) == 1 && d.CloudSync[0].Status == "synced"
		})
	}
	f.call(http.MethodDelete, "/api/v1/documents/"+ids[3], nil, http.StatusNoContent)
	// Quiet: purged, copies removed, staged objects gone, outbox drained,
	// every audit row chained.
	eventually(t, 60*time.Second, "the system to go quiet", func() bool {
		var busy bool
		err := st.db.QueryRow(ctx, `select
			exists (select 1 from documents where status = 'deleted' and purged_at is null)
			or exists (select 1 from cloud_sync where status = 'pending')
			or exists (select 1 from outbox)
			or exists (select 1 from audit_log a where not exists (select 1 from audit_chain c where c.audit_id = a.id))`).Scan(&busy)
		if err != nil {
			t.Fatal(err)
		}
		staged := 0
		for range st.s3.ListObjects(ctx, st.bucket, minio.ListObjectsOptions{Prefix: "staging/"}) {
			staged++
		}
		return !busy && staged == 0
	})

	cfg := checkConfig(t, st)
	rep, err := check.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) > 0 || rep.Documents != 4 || rep.Objects != 3 || rep.Links == 0 || rep.Events == 0 {
		t.Fatalf("quiet system: %d documents, %d objects, %d links, %d events, findings %v", rep.Documents, rep.Objects, rep.Links, rep.Events, rep.Findings)
	}
	out, err := runCheck(t, st.env)
	if err != nil || !strings.Contains(out, ": 0 findings") {
		t.Fatalf("api check on a quiet system: %v\n%s", err, out)
	}

	// Break one thing per invariant, with the pipeline stopped so that it
	// does not mend (publish the old outbox row) or add to (dead-letter the
	// stray entry) what is broken.
	st.relay.stop()
	st.consumer.stop()
	ready, other := ids[0], ids[1]
	rdb := testenv.RedisClient(t, st.env["REDIS_URL"])
	blobs := cfg.Blobs
	orphan := uuid.NewString()
	steps := []struct{ what, sql string }{
		{"pending", `update documents set status = 'pending', created_at = now() - interval '1 hour' where id = '` + other + `'`},
		{"quota", `insert into users (id, email) values ('` + orphan + `', 'q@example.org');
			insert into quotas (user_id, max_bytes, max_documents, used_bytes, used_documents) values ('` + orphan + `', 100, 1, 7, 1)`},
		{"cloud", `update cloud_sync set remote_key = 'DocuVault/gone.bin' where document_id = '` + ready + `'`},
		{"audit", `update audit_log set details = '{}' where id = (select audit_id from audit_chain where seq = 1)`},
		{"outbox", `insert into outbox (event_id, stream, event_type, aggregate_type, aggregate_id, payload, created_at)
			values (gen_random_uuid(), 'docuvault.documents', 'document.uploaded', 'document', gen_random_uuid(), '{}', now() - interval '1 hour')`},
	}
	dbCfg, err := pgx.ParseConfig(st.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	admin := testenv.AdminConn(t, dbCfg.Database)
	for _, s := range steps {
		if _, err := admin.Exec(ctx, s.sql); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
	}
	if err := blobs.Remove(ctx, st.finalKey(ready)); err != nil {
		t.Fatal(err)
	}
	if _, err := blobs.Put(ctx, st.finalKey(orphan), bytes.NewReader([]byte("x")), 1, "text/plain"); err != nil {
		t.Fatal(err)
	}
	if _, err := blobs.Put(ctx, blob.StagingKey(uuid.MustParse(ready)), bytes.NewReader([]byte("x")), 1, "text/plain"); err != nil {
		t.Fatal(err)
	}
	// A stream entry lost from the middle, one never recorded, one
	// delivered and never acknowledged, one dead letter.
	entries, err := rdb.XRange(ctx, events.StreamDocuments, "-", "+").Result()
	if err != nil || len(entries) < 3 {
		t.Fatalf("documents stream: %d entries, %v", len(entries), err)
	}
	last := entries[len(entries)-1] // written well after the first
	lost, _ := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(last.Values)
	if err := rdb.XDel(ctx, events.StreamDocuments, last.ID).Err(); err != nil {
		t.Fatal(err)
	}
	stray := uuid.NewString()
	for _, stream := range []string{events.StreamDocuments, "docuvault.dead_letter"} {
		values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(stream, message.NewMessage(stray, []byte(`{}`)))
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.XGroupCreateMkStream(ctx, events.StreamTopics, "checker-test", "0").Err(); err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		t.Fatal(err)
	}
	if _, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamTopics, Values: map[string]any{"x": "y"}}).Result(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "checker-test", Consumer: "c", Streams: []string{events.StreamTopics, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}

	cfg.Grace, cfg.OutboxAge = time.Millisecond, time.Minute
	time.Sleep(5 * time.Millisecond) // older than the grace
	rep, err = check.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, f := range rep.Findings {
		lines = append(lines, f.String())
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{
		"documents: " + other + ": still pending",
		"objects: " + ready + ": ready, but no object at " + st.finalKey(ready),
		"objects: " + st.finalKey(orphan) + ": object without a ready document",
		"objects: staging/" + ready + ": staged",
		"quotas: " + orphan + ": usage 7 bytes in 1 documents; ready documents hold 0 bytes in 0",
		"cloud_sync: " + ready + " on ",
		"audit_chain: link 1: audit chain broken at link 1",
		"outbox: outbox: 1 events older than 1m0s not published",
		"events: " + lost.UUID + ": recorded ",
		"events: " + stray + ": on docuvault.documents but never recorded",
		"events: docuvault.topics group checker-test: 1 entries delivered and not acknowledged",
		"events: docuvault.dead_letter: 1 messages were given up on",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no finding %q in:\n%s", want, got)
		}
	}
	out, err = runCheck(t, st.env)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "outbox: outbox: 1 events older than") {
		t.Errorf("api check on a broken system: %v\n%s", err, out)
	}
}

// checkConfig is the checker's configuration for st, as `api check` builds
// it from the environment.
func checkConfig(t *testing.T, st *stack) check.Config {
	t.Helper()
	_, _, src, err := config.Load("api", nil, st.env.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := config.ObjectStorage(src)
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := cloudsync.NewSealer(st.env["SECRET_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	return check.Config{DB: testenv.Pool(t, st.env["DATABASE_URL"]), Blobs: blobs, Redis: testenv.RedisClient(t, st.env["REDIS_URL"]),
		Connector: cloudsync.NewConnector(sealer), Deep: true}
}

// runCheck runs `bin/api check` with env and returns its output.
func runCheck(t *testing.T, env testenv.Env) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "api"), "check")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
