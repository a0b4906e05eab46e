package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
	"github.com/docuvault/docuvault/migrations"
)

// runAPI runs `bin/api args...` with env to completion, stdin as its
// input, and returns its output.
func runAPI(t *testing.T, env testenv.Env, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "api"), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Upgrading a phase 1 installation, with the real binaries: documents
// stored without an owner (one ready under users/_unowned/, one still
// pending with its event in the outbox) and a topic. `api migrate` refuses
// with one line saying what to do; `api users create` makes the owner;
// `api migrate --unowned-owner` gives them everything and requires owners.
// Then the pipeline moves the ready document's object under the owner's
// prefix and finalises the pending one there, and the owner reads both
// through the API, bytes intact.
func TestUpgradeFromPhase1GivesDocumentsToAnOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.EmptyDB(t)
	s3 := testenv.S3(t)
	env := testenv.ServiceEnv(t, db, s3)
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}

	// The schema as phase 1 left it.
	phase1 := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() < "013" {
			b, _ := fs.ReadFile(migrations.FS, e.Name())
			phase1[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	mig := testenv.Pool(t, db.MigrateURL)
	conn, err := mig.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Migrate(ctx, conn.Conn(), phase1, nil)
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}

	// Phase 1 data: a ready document, a pending one, a topic.
	app := testenv.Pool(t, db.AppURL)
	admin := testenv.Pool(t, db.AdminDSN())
	readyID, pendingID := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	readyBytes, pendingBytes := bytes.Repeat([]byte("phase one, ready. "), 500), bytes.Repeat([]byte("phase one, pending. "), 700)
	oldKey := blob.FinalKey(nil, readyID)
	if _, err := blobs.Put(ctx, oldKey, bytes.NewReader(readyBytes), 1<<20, "text/plain"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(readyBytes)
	if _, err := admin.Exec(ctx, `insert into documents (id, filename, content_type, size_bytes, sha256, status, storage_key, finalized_at)
		values ($1, 'old.txt', 'text/plain', $2, $3, 'ready', $4, now())`, readyID, len(readyBytes), sum[:], oldKey); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `insert into topics (id, name) values ($1, 'Phase one')`, uuid.Must(uuid.NewV7())); err != nil {
		t.Fatal(err)
	}
	put, err := blobs.Put(ctx, blob.StagingKey(pendingID), bytes.NewReader(pendingBytes), 1<<20, "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	pending := store.Document{ID: pendingID, Filename: "pending.txt", ContentType: "text/plain", SizeBytes: put.Size,
		SHA256: put.SHA256, StorageKey: blob.StagingKey(pendingID), StagingETag: &put.ETag}
	ev, err := events.New(events.DocumentUploaded, "document", pendingID, events.Anonymous, uuid.Must(uuid.NewV7()), nil, pending.EventData())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.InsertUpload(ctx, app, pending, ev, store.Origin{}); err != nil {
		t.Fatal(err)
	}

	// Refused, with what to do, and nothing changed.
	out, err := runAPI(t, env, "", "migrate")
	if err == nil || !strings.Contains(out, "have no owner") || !strings.Contains(out, "--unowned-owner EMAIL") {
		t.Fatalf("migrate on phase 1 data: %v\n%s", err, out)
	}
	// An owner, then the upgrade.
	email, password := newCredentials()
	if out, err := runAPI(t, env, password+"\n", "users", "create", "--email", email, "--admin"); err != nil {
		t.Fatalf("users create: %v\n%s", err, out)
	}
	if out, err := runAPI(t, env, "", "migrate", "--unowned-owner", email); err != nil {
		t.Fatalf("migrate --unowned-owner: %v\n%s", err, out)
	}
	var owner uuid.UUID
	if err := admin.QueryRow(ctx, `select id from users where email = $1`, email).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	var unowned int
	if err := admin.QueryRow(ctx, `select (select count(*) from documents where user_id is null) + (select count(*) from topics where user_id is null)`).
		Scan(&unowned); err != nil || unowned != 0 {
		t.Fatalf("%d rows still unowned (%v)", unowned, err)
	}

	// The pipeline moves the ready object and finalises the pending one
	// under the owner's prefix.
	relay := start(t, "relay", env)
	consumer := start(t, "consumer", env)
	api := start(t, "api", env)
	relay.addr("metrics")
	consumer.addr("metrics")
	base := "http://" + api.addr("api")
	pair := login(t, base, email, password)
	client := &http.Client{Transport: withToken(pair.AccessToken, nil)}
	for id, content := range map[uuid.UUID][]byte{readyID: readyBytes, pendingID: pendingBytes} {
		want := blob.FinalKey(&owner, id)
		var doc struct {
			Status     string `json:"status"`
			StorageKey string `json:"storage_key"`
		}
		eventually(t, 30*time.Second, "document "+id.String()+" ready under its owner", func() bool {
			var key string
			_ = admin.QueryRow(ctx, `select storage_key from documents where id = $1 and status = 'ready'`, id).Scan(&key)
			return key == want
		})
		if code := getJSON(t, client, base+"/api/v1/documents/"+id.String(), &doc); code != http.StatusOK || doc.Status != "ready" {
			t.Fatalf("GET %s as the owner: %d %+v", id, code, doc)
		}
		resp, err := client.Get(base + "/api/v1/documents/" + id.String() + "/content")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, content) {
			t.Fatalf("content of %s: %d, %d bytes; want %d", id, resp.StatusCode, len(got), len(content))
		}
	}
	eventually(t, 30*time.Second, "the old object to go", func() bool {
		_, err := blobs.Stat(ctx, oldKey)
		return err != nil
	})
}
