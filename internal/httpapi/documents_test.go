package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/testenv"
)

type env struct {
	h     http.Handler // the API, as httpapi.New returns it
	srv   *httptest.Server
	app   *pgxpool.Pool // the runtime role's, as the API has it
	admin *pgxpool.Pool
	blobs *blob.Store
	s3    config.S3
	user  uuid.UUID // whom a request without X-Test-Owner acts for
}

func newEnv(t *testing.T, cfg httpapi.Config) *env {
	t.Helper()
	db := testenv.NewDB(t)
	s3 := testenv.S3(t)
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := redis.ParseURL(testenv.RedisURL())
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if cfg.UploadMaxBytes == 0 {
		cfg.UploadMaxBytes = 1 << 20
	}
	if cfg.DuplicatePolicy == "" {
		cfg.DuplicatePolicy = "allow"
	}
	app := testenv.Pool(t, db.AppURL)
	sealer, err := cloudsync.NewSealer(cloudSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.NewActing(httpapi.Deps{
		Config: cfg, Log: testenv.Logger(t), DB: app, Redis: rdb, Blobs: blobs,
		Metrics: http.NotFoundHandler(), Cloud: cloudsync.NewConnector(sealer),
	})
	admin := testenv.Pool(t, db.AdminDSN())
	user := testenv.User(t, admin, "default-user@example.org")
	srv := actingServer(t, actAs(h, user))
	return &env{h: h, srv: srv, app: app, admin: admin, blobs: blobs, s3: s3, user: user}
}

// assertNothingStored fails unless no document, audit row, outbox event or
// object exists.
func (e *env) assertNothingStored(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, table := range []string{"documents", "audit_log", "outbox"} {
		var n int
		if err := e.admin.QueryRow(ctx, "select count(*) from "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows left in %s", n, table)
		}
	}
	for obj := range e.blobs.Client().ListObjects(ctx, e.s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		t.Errorf("object left behind: %s (%v)", obj.Key, obj.Err)
	}
}

// part is one multipart part; raw headers allow malformed ones.
type part struct {
	header string // full header block, e.g. Content-Disposition: form-data; name="file"; filename="a.pdf"
	body   []byte
}

func fileHeader(filename string) string {
	return fmt.Sprintf("Content-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\nContent-Type: application/pdf", filename)
}

func fieldHeader(name string) string {
	return fmt.Sprintf("Content-Disposition: form-data; name=%q", name)
}

// multipartBody hand-builds a body so tests can send what a well-behaved
// client library would refuse to.
func multipartBody(boundary string, parts ...part) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		fmt.Fprintf(&b, "--%s\r\n%s\r\n\r\n", boundary, p.header)
		b.Write(p.body)
		b.WriteString("\r\n")
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes()
}

func post(t *testing.T, url, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("error answered with Content-Type %q: %s", resp.Header.Get("Content-Type"), raw)
	}
	return resp.StatusCode, out
}

const boundary = "XyZBoundary123"
const mpType = "multipart/form-data; boundary=" + boundary

func TestUploadRejectsBadInputAndLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{UploadMaxBytes: 64 << 10})
	pdf := []byte("%PDF-1.4\n" + strings.Repeat("x", 1000))
	big := make([]byte, 70<<10)
	_, _ = rand.Read(big)

	cases := []struct {
		name        string
		contentType string
		body        []byte
		status      int
		typ         string
	}{
		{"no file part", mpType, multipartBody(boundary, part{fieldHeader("title"), []byte("t")}), 400, "missing-file"},
		{"two file parts", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), pdf}, part{fileHeader("b.pdf"), pdf}), 400, "invalid-multipart"},
		{"empty file", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), nil}), 400, "empty-file"},
		{"too large", mpType, multipartBody(boundary, part{fileHeader("a.bin"), big}), 413, "too-large"},
		{"truncated multipart", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), pdf})[:600], 400, "invalid-multipart"},
		{"garbage body", mpType, []byte("this is not multipart at all"), 400, "invalid-multipart"},
		{"not multipart", "application/json", []byte(`{"file":"x"}`), 415, "unsupported-media-type"},
		{"no boundary", "multipart/form-data", multipartBody(boundary, part{fileHeader("a.pdf"), pdf}), 415, "unsupported-media-type"},
		{"unknown field", mpType, multipartBody(boundary, part{fieldHeader("owner"), []byte("root")}, part{fileHeader("a.pdf"), pdf}), 400, "unknown-field"},
		{"unknown field after file", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), pdf}, part{fieldHeader("owner"), []byte("root")}), 400, "unknown-field"},
		{"bad topic id", mpType, multipartBody(boundary, part{fieldHeader("topic_id"), []byte("1; drop table documents")}, part{fileHeader("a.pdf"), pdf}), 400, "invalid-field"},
		{"unknown topic", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), pdf}, part{fieldHeader("topic_id"), []byte("0190a5c8-0000-7000-8000-000000000000")}), 422, "unknown-topic"},
		{"unknown folder", mpType, multipartBody(boundary, part{fieldHeader("folder_id"), []byte("0190a5c8-0000-7000-8000-000000000001")}, part{fileHeader("a.pdf"), pdf}), 422, "unknown-folder"},
		{"title not UTF-8", mpType, multipartBody(boundary, part{fieldHeader("title"), []byte{0xff, 0xfe}}, part{fileHeader("a.pdf"), pdf}), 400, "invalid-field"},
		{"title too long", mpType, multipartBody(boundary, part{fieldHeader("title"), bytes.Repeat([]byte("a"), 5000)}, part{fileHeader("a.pdf"), pdf}), 400, "invalid-field"},
		{"duplicate title", mpType, multipartBody(boundary, part{fieldHeader("title"), []byte("a")}, part{fieldHeader("title"), []byte("b")}, part{fileHeader("a.pdf"), pdf}), 400, "invalid-multipart"},
		{"part without name", mpType, multipartBody(boundary, part{"Content-Disposition: form-data", []byte("x")}, part{fileHeader("a.pdf"), pdf}), 400, "invalid-multipart"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, prob := post(t, e.srv.URL+"/api/v1/documents", c.contentType, c.body)
			if status != c.status || prob["type"] != "https://docuvault.dev/problems/"+c.typ {
				t.Errorf("got %d %v; want %d %s", status, prob, c.status, c.typ)
			}
			if d, _ := prob["detail"].(string); d == "" {
				t.Errorf("problem without detail: %v", prob)
			}
			e.assertNothingStored(t)
		})
	}
}

func TestUploadStoresHostileFilenamesSafely(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	pdf := []byte("%PDF-1.4\nhello")
	long := strings.Repeat("a", 1200) + ".pdf"
	// Each case is the Content-Disposition filename parameter as sent; NUL
	// and line breaks can only travel RFC 5987-encoded (filename*).
	cases := map[string]string{
		`filename="../../etc/passwd"`:          "passwd",
		`filename="C:\Users\x\secret.pdf"`:     "secret.pdf",
		`filename=".."`:                        "document",
		`filename*=UTF-8''a%00b.pdf`:           "a_b.pdf",
		`filename*=UTF-8''line%0D%0Abreak.pdf`: "line__break.pdf",
		"filename=\"evil\u202Etxt.exe\"":       "eviltxt.exe",
		"filename=\"\xffa\"":                   "_a",
		`filename="` + long + `"`:              strings.Repeat("a", 251) + ".pdf",
	}
	for param, want := range cases {
		body := multipartBody(boundary, part{"Content-Disposition: form-data; name=\"file\"; " + param, pdf})
		status, doc := post(t, e.srv.URL+"/api/v1/documents", mpType, body)
		if status != http.StatusAccepted {
			t.Errorf("%q: %d %v", param, status, doc)
			continue
		}
		if doc["filename"] != want {
			t.Errorf("%q stored as %q; want %q", param, doc["filename"], want)
		}
	}
}

func TestUploadIdempotencyKeyStoresOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	body := multipartBody(boundary, part{fileHeader("a.pdf"), []byte("%PDF-1.4 idempotent")})
	send := func() (int, string, http.Header) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/documents", bytes.NewReader(body))
		req.Header.Set("Content-Type", mpType)
		req.Header.Set("Idempotency-Key", "upload-42")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		id, _ := doc["id"].(string)
		return resp.StatusCode, id, resp.Header
	}
	s1, id1, _ := send()
	s2, id2, h2 := send()
	if s1 != 202 || s2 != 202 || id1 == "" || id1 != id2 || h2.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %s, retry %d %s (replayed %q)", s1, id1, s2, id2, h2.Get("Idempotent-Replayed"))
	}
	ctx := context.Background()
	var docs, events, objects int
	_ = e.admin.QueryRow(ctx, "select count(*) from documents").Scan(&docs)
	_ = e.admin.QueryRow(ctx, "select count(*) from outbox").Scan(&events)
	for range e.blobs.Client().ListObjects(ctx, e.s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		objects++
	}
	if docs != 1 || events != 1 || objects != 1 {
		t.Errorf("after a retried upload: %d documents, %d events, %d objects; want 1 each", docs, events, objects)
	}
}

func TestDuplicatePolicy(t *testing.T) {
	t.Parallel()
	content := []byte("%PDF-1.4 same content")
	body := multipartBody(boundary, part{fileHeader("a.pdf"), content})
	for _, policy := range []string{"allow", "reject"} {
		t.Run(policy, func(t *testing.T) {
			e := newEnv(t, httpapi.Config{DuplicatePolicy: policy})
			s1, first := post(t, e.srv.URL+"/api/v1/documents", mpType, body)
			s2, second := post(t, e.srv.URL+"/api/v1/documents", mpType, body)
			if s1 != 202 {
				t.Fatalf("first upload: %d", s1)
			}
			switch policy {
			case "allow":
				if s2 != 202 || second["duplicate_of"] != first["id"] {
					t.Errorf("allow: %d, duplicate_of %v; want 202 naming %v", s2, second["duplicate_of"], first["id"])
				}
			case "reject":
				if s2 != 409 || second["duplicate_of"] != first["id"] {
					t.Errorf("reject: %d %v; want 409 naming %v", s2, second, first["id"])
				}
				var objects int
				for range e.blobs.Client().ListObjects(context.Background(), e.s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
					objects++
				}
				if objects != 1 {
					t.Errorf("%d objects after a rejected duplicate; want 1", objects)
				}
			}
		})
	}
}

func TestReadEndpointsRejectBadParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	for path, want := range map[string]int{
		"/api/v1/documents/not-a-uuid":                           404,
		"/api/v1/documents/not-a-uuid/content":                   404,
		"/api/v1/documents/0190a5c8-0000-7000-8000-000000000000": 404,
		"/api/v1/documents?limit=-1":                             400,
		"/api/v1/documents?limit=100000":                         400,
		"/api/v1/documents?cursor=%27%20or%201%3D1":              400,
		"/api/v1/documents?cursor=" + strings.Repeat("A", 5000):  400,
		"/api/v1/documents?status=lost":                          400,
		"/api/v1/documents?topic_id=x":                           400,
		"/api/v1/nothing":                                        404,
	} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("GET %s: %d %s; want %d problem", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/api/v1/documents", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT /api/v1/documents: %d; want 405", resp.StatusCode)
	}
}

// The API answers 503, and keeps nothing, when the object store is down.
func TestUploadWithObjectStorageDown(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	down, err := blob.New(testenv.S3Settings()) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.NewActing(httpapi.Deps{
		Config: httpapi.Config{UploadMaxBytes: 1 << 20, DuplicatePolicy: "allow"}, Log: testenv.Logger(t),
		DB: testenv.Pool(t, db.AppURL), Blobs: down, Metrics: http.NotFoundHandler(),
	})
	admin := testenv.Pool(t, db.AdminDSN())
	srv := actingServer(t, actAs(h, testenv.User(t, admin, "")))
	status, prob := post(t, srv.URL+"/api/v1/documents", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), []byte("%PDF-1.4")}))
	if status != 503 || !strings.Contains(fmt.Sprint(prob["detail"]), "object_storage") {
		t.Errorf("got %d %v; want 503 naming object_storage", status, prob)
	}
	var n int
	_ = admin.QueryRow(context.Background(), "select count(*) from documents").Scan(&n)
	if n != 0 {
		t.Errorf("%d documents stored with the object store down", n)
	}
}

// With PostgreSQL gone after the bytes were staged, the API answers 503 and
// removes the staged object.
func TestUploadWithDatabaseDownRemovesStagedBytes(t *testing.T) {
	t.Parallel()
	s3 := testenv.S3(t)
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	h := httpapi.NewActing(httpapi.Deps{
		Config: httpapi.Config{UploadMaxBytes: 1 << 20, DuplicatePolicy: "allow"}, Log: testenv.Logger(t),
		DB: pool, Blobs: blobs, Metrics: http.NotFoundHandler(),
	})
	srv := actingServer(t, actAs(h, uuid.Must(uuid.NewV7()))) // no database to hold a user
	status, prob := post(t, srv.URL+"/api/v1/documents", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), []byte("%PDF-1.4")}))
	if status != 503 || !strings.Contains(fmt.Sprint(prob["detail"]), "postgres") {
		t.Errorf("got %d %v; want 503 naming postgres", status, prob)
	}
	for obj := range blobs.Client().ListObjects(context.Background(), s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		t.Errorf("staged object left behind: %s", obj.Key)
	}
}

func TestListDocumentsPagesWithCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	var ids []string
	for i := range 5 {
		status, doc := post(t, e.srv.URL+"/api/v1/documents", mpType,
			multipartBody(boundary, part{fileHeader(fmt.Sprintf("d%d.pdf", i)), []byte(fmt.Sprintf("%%PDF-1.4 %d", i))}))
		if status != 202 {
			t.Fatalf("upload %d: %d %v", i, status, doc)
		}
		ids = append(ids, doc["id"].(string))
	}
	var got []string
	url := e.srv.URL + "/api/v1/documents?limit=2&status=pending"
	for pages := 0; url != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Items      []map[string]any `json:"items"`
			NextCursor *string          `json:"next_cursor"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if len(page.Items) > 2 {
			t.Fatalf("page of %d items with limit=2", len(page.Items))
		}
		for _, d := range page.Items {
			got = append(got, d["id"].(string))
		}
		url = ""
		if page.NextCursor != nil {
			url = e.srv.URL + "/api/v1/documents?limit=2&status=pending&cursor=" + *page.NextCursor
		}
	}
	// Newest first, each once.
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pages gave %v; want %v", got, want)
	}
	if status, _ := call(t, "GET", e.srv.URL+"/api/v1/documents?status=ready", ""); status != 200 {
		t.Errorf("status filter: %d", status)
	}
}
