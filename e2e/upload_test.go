package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/testenv"
)

type document struct {
	ID           string  `json:"id"`
	Title        string  `json:"title"`
	Filename     string  `json:"filename"`
	ContentType  string  `json:"content_type"`
	SizeBytes    int64   `json:"size_bytes"`
	SHA256       string  `json:"sha256"`
	Status       string  `json:"status"`
	RejectReason *string `json:"reject_reason"`
}

// upload posts content as the file part, with extra text fields, with
// client (st.client sends the stack's token).
func upload(t testing.TB, client *http.Client, base, filename string, content []byte, fields map[string]string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	fw, err := mw.CreateFormFile("file", filename)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(content)
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/documents", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func getJSON(t testing.TB, client *http.Client, url string, v any) int {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// stack is the three binaries running against one fresh environment.
type stack struct {
	env      testenv.Env
	db       *pgxpool.Pool
	s3       *minio.Client
	bucket   string
	base     string
	api      *proc
	relay    *proc
	consumer *proc
	user     account      // signed in on the first API: owns what the test uploads
	client   *http.Client // sends user's token
}

func startStack(t testing.TB) *stack {
	t.Helper()
	return startStackWith(t)
}

// startStackWith is startStack with settings (key, value, ...) added to the
// binaries' environment.
func startStackWith(t testing.TB, settings ...string) *stack {
	t.Helper()
	db := testenv.NewDB(t)
	s3 := testenv.S3(t)
	env := testenv.ServiceEnv(t, db, s3).With(settings...)
	store, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{env: env, db: testenv.Pool(t, db.AdminDSN()), s3: store.Client(), bucket: s3.Bucket}
	st.api = start(t, "api", env)
	st.relay = start(t, "relay", env)
	st.consumer = start(t, "consumer", env)
	st.base = "http://" + st.api.addr("api")
	st.relay.addr("metrics")
	st.consumer.addr("metrics")
	st.user = signIn(t, st.base)
	st.client = st.user.client()
	return st
}

// flow is a schemaFlow on st acting for st.user.
func (st *stack) flow(t *testing.T) *schemaFlow {
	return &schemaFlow{t: t, base: st.base, db: st.db, client: st.client}
}

// finalKey is where a ready document of st.user lives.
func (st *stack) finalKey(id string) string {
	return "users/" + st.user.ID + "/documents/" + id
}

func (st *stack) waitStatus(t testing.TB, id, want string) document {
	t.Helper()
	return st.waitStatusWithin(t, id, want, 30*time.Second)
}

func (st *stack) waitStatusWithin(t testing.TB, id, want string, timeout time.Duration) document {
	t.Helper()
	var doc document
	eventually(t, timeout, "document "+id+" to be "+want, func() bool {
		getJSON(t, st.client, st.base+"/api/v1/documents/"+id, &doc)
		return doc.Status == want
	})
	return doc
}

func (st *stack) objectExists(t testing.TB, key string) bool {
	t.Helper()
	_, err := st.s3.StatObject(context.Background(), st.bucket, key, minio.StatObjectOptions{})
	if err == nil {
		return true
	}
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return false
	}
	t.Fatalf("stat %s: %v", key, err)
	return false
}

func TestUploadBecomesReadyDownloadsAndDeletes(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	other := signIn(t, st.base).client() // another account: sees none of st.user's documents

	for _, size := range []int{300 << 10, 12 << 20} { // one PUT; multipart
		content := make([]byte, size)
		_, _ = rand.Read(content)
		sum := sha256.Sum256(content)

		resp, body := upload(t, st.client, st.base, "Report ü.pdf", content, map[string]string{"title": "Quarterly"}, nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
		var doc document
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Location") != "/api/v1/documents/"+doc.ID {
			t.Errorf("Location %q", resp.Header.Get("Location"))
		}
		if doc.Status != "pending" || doc.SizeBytes != int64(size) || doc.SHA256 != hex.EncodeToString(sum[:]) ||
			doc.Title != "Quarterly" || doc.Filename != "Report ü.pdf" {
			t.Errorf("upload answer: %+v", doc)
		}

		st.waitStatus(t, doc.ID, "ready")
		checkAccess(t, st.base, other, doc.ID)
		finalKey := st.finalKey(doc.ID)
		if !st.objectExists(t, finalKey) {
			t.Errorf("after ready: no final object")
		}
		// The staged object is removed right after the commit, in batches.
		eventually(t, 10*time.Second, "the staged object to be removed", func() bool {
			return !st.objectExists(t, "staging/"+doc.ID)
		})

		// Download: identical bytes, ETag, filename, ranges.
		resp, err := st.client.Get(st.base + "/api/v1/documents/" + doc.ID + "/content")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, content) {
			t.Fatalf("download: %d, %d bytes, identical=%v", resp.StatusCode, len(got), bytes.Equal(got, content))
		}
		if etag := resp.Header.Get("ETag"); etag != `"`+doc.SHA256+`"` {
			t.Errorf("ETag %q", etag)
		}
		if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="Report _.pdf"; filename*=UTF-8''Report%20%C3%BC.pdf` {
			t.Errorf("Content-Disposition %q", cd)
		}
		req, _ := http.NewRequest(http.MethodGet, st.base+"/api/v1/documents/"+doc.ID+"/content", nil)
		req.Header.Set("Range", "bytes=100-199")
		resp, err = st.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		part, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, content[100:200]) {
			t.Errorf("range request: %d, %d bytes", resp.StatusCode, len(part))
		}
		req.Header.Del("Range")
		req.Header.Set("If-None-Match", `"`+doc.SHA256+`"`)
		resp, err = st.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("If-None-Match with the ETag: %d; want 304", resp.StatusCode)
		}

		// Delete: gone from the API, then from the bucket.
		req, _ = http.NewRequest(http.MethodDelete, st.base+"/api/v1/documents/"+doc.ID, nil)
		resp, err = st.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("delete: %d", resp.StatusCode)
		}
		if code := getJSON(t, st.client, st.base+"/api/v1/documents/"+doc.ID, nil); code != 404 {
			t.Errorf("GET after delete: %d; want 404", code)
		}
		eventually(t, 30*time.Second, "the deleted document's object to be removed", func() bool {
			return !st.objectExists(t, finalKey)
		})
	}

	// Every event reached its stream in Watermill's format and the audit log
	// holds one row per change.
	ctx := context.Background()
	var unpublished, audit int
	if err := st.db.QueryRow(ctx, `select count(*) from outbox`).Scan(&unpublished); err != nil {
		t.Fatal(err)
	}
	if err := st.db.QueryRow(ctx, `select count(*) from audit_log where aggregate_type = 'document'`).Scan(&audit); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "every outbox row published (and removed)", func() bool {
		_ = st.db.QueryRow(ctx, `select count(*) from outbox`).Scan(&unpublished)
		return unpublished == 0
	})
	if audit != 6 { // uploaded, finalized, deleted, twice
		t.Errorf("%d audit rows; want 6", audit)
	}
	rdb := testenv.RedisClient(t, st.env["REDIS_URL"])
	entries, err := rdb.XRange(ctx, events.StreamDocuments, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, e := range entries {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
		if err != nil {
			t.Fatalf("stream entry is not a Watermill message: %v", err)
		}
		var env events.Envelope
		if err := json.Unmarshal(msg.Payload, &env); err != nil || env.ID.String() != msg.UUID || msg.Metadata.Get(events.MetaType) != env.Type {
			t.Errorf("entry %s: uuid %s, metadata %v, envelope %+v (%v)", e.ID, msg.UUID, msg.Metadata, env, err)
		}
		types[env.Type]++
	}
	for _, typ := range []string{events.DocumentUploaded, events.DocumentFinalized, events.DocumentDeleted} {
		if types[typ] < 2 {
			t.Errorf("stream has %d %s events; want 2", types[typ], typ)
		}
	}

	st.api.stop()
	st.relay.stop()
	st.consumer.stop()
}

// checkAccess checks that document id is the caller's alone: without a
// token its reads and changes are refused (401 with a Bearer challenge),
// and another account (other) finds it as unknown (404).
func checkAccess(t *testing.T, base string, other *http.Client, id string) {
	t.Helper()
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/documents"},
		{http.MethodGet, "/api/v1/documents/" + id},
		{http.MethodGet, "/api/v1/documents/" + id + "/content"},
		{http.MethodDelete, "/api/v1/documents/" + id},
	} {
		req, _ := http.NewRequest(r.method, base+r.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s without a token: %d, WWW-Authenticate %q; want 401 and a Bearer challenge",
				r.method, r.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if r.path == "/api/v1/documents" {
			continue
		}
		resp, err = other.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s as another account: %d; want 404", r.method, r.path, resp.StatusCode)
		}
	}
	resp, body := upload(t, http.DefaultClient, base, "anonymous.txt", []byte("no token"), nil, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("upload without a token: %d %s; want 401", resp.StatusCode, body)
	}
}
