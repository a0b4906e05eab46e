package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/testenv"
)

// The topic and folder FuzzUpload's database holds, so that uploads naming
// them can succeed.
const (
	fuzzTopicID  = "0190a5c8-0000-7000-8000-00000000000a"
	fuzzFolderID = "0190a5c8-0000-7000-8000-00000000000b"
)

// fuzzUploadMaxBytes is small so that the 413 path is within reach of
// fuzzed bodies.
const fuzzUploadMaxBytes = 1024

// uploadProblems are the problems an upload may answer without an owner:
// the client's fault, never the server's.
var uploadProblems = map[string]int{
	"unsupported-media-type":  http.StatusUnsupportedMediaType,
	"invalid-idempotency-key": http.StatusBadRequest,
	"invalid-multipart":       http.StatusBadRequest,
	"invalid-field":           http.StatusBadRequest,
	"unknown-field":           http.StatusBadRequest,
	"missing-file":            http.StatusBadRequest,
	"empty-file":              http.StatusBadRequest,
	"too-large":               http.StatusRequestEntityTooLarge,
	"unknown-topic":           http.StatusUnprocessableEntity,
	"unknown-folder":          http.StatusUnprocessableEntity,
}

// FuzzUpload sends POST /api/v1/documents, with any Content-Type, body and
// Idempotency-Key, to the real handler on a real PostgreSQL and MinIO. It
// is answered either 202 with a pending document whose filename is safe,
// whose object was staged and whose document.uploaded event matches its
// schema and the answer, or a 4xx problem from uploadProblems that left no
// row and no object behind; never 5xx.
//
// Each iteration starts from an empty database and bucket: a 202's rows and
// object are removed after its checks.
func FuzzUpload(f *testing.F) {
	// More seeds, most of them hostile, are in testdata/fuzz/FuzzUpload.
	mp := "multipart/form-data; boundary=" + fuzzBoundary
	pdf := "%PDF-1.4\nhello"
	f.Add(mp, []byte(seedFile("report.pdf", pdf)+seedEnd), "")
	f.Add(mp, []byte(seedField("title", "Quarterly")+seedField("topic_id", fuzzTopicID)+
		seedField("folder_id", fuzzFolderID)+seedFile("a.pdf", pdf)+seedEnd), "upload-1")
	f.Add(mp, []byte(seedFile("a.pdf", pdf)), "")
	f.Add("application/json", []byte(`{"file":"x"}`), "")
	db := testenv.NewDB(f)
	s3 := testenv.S3(f)
	blobs, err := blob.New(s3)
	if err != nil {
		f.Fatal(err)
	}
	admin := testenv.Pool(f, db.AdminDSN())
	ctx := context.Background()
	// The uploads act for owner, as an authenticated request does.
	owner := testenv.User(f, admin, "")
	if _, err := admin.Exec(ctx, `insert into topics (id, user_id, name) values ('`+fuzzTopicID+`', $1, 'fuzz')`, owner); err != nil {
		f.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `insert into folders (id, user_id, name) values ('`+fuzzFolderID+`', $1, 'fuzz')`, owner); err != nil {
		f.Fatal(err)
	}
	h := NewActing(Deps{
		Config: Config{UploadMaxBytes: fuzzUploadMaxBytes, DuplicatePolicy: "allow"},
		Log:    testenv.Logger(f), DB: testenv.Pool(f, db.AppURL), Blobs: blobs, Metrics: http.NotFoundHandler(),
	})

	f.Fuzz(func(t *testing.T, contentType string, body []byte, idemKey string) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/documents", bytes.NewReader(body))
		r = r.WithContext(WithOwner(r.Context(), owner))
		r.Header.Set("Content-Type", contentType)
		if idemKey != "" {
			r.Header.Set("Idempotency-Key", idemKey)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		if w.Code != http.StatusAccepted {
			assertUploadProblem(t, w)
			assertNothingStored(t, admin, blobs, s3.Bucket)
			return
		}
		var doc documentJSON
		if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatalf("202 with a body that is not a document: %v\n%s", err, w.Body)
		}
		t.Cleanup(func() { removeUpload(t, admin, blobs, doc) })
		switch {
		case doc.Status != "pending" || doc.SizeBytes < 1 || doc.SizeBytes > fuzzUploadMaxBytes:
			t.Errorf("202 with status %s, %d bytes", doc.Status, doc.SizeBytes)
		case doc.UserID == nil || *doc.UserID != owner:
			t.Errorf("202 with owner %v; want the request's, %s", doc.UserID, owner)
		case w.Header().Get("Location") != documentPath(doc.ID):
			t.Errorf("Location %q for document %s", w.Header().Get("Location"), doc.ID)
		}
		if why := safeFilename(doc.Filename); why != "" {
			t.Errorf("stored filename %q %s", doc.Filename, why)
		}
		info, err := blobs.Stat(ctx, blob.StagingKey(doc.ID))
		if err != nil || info.Size != doc.SizeBytes {
			t.Errorf("staged object of %s: %+v, %v; want %d bytes", doc.ID, info, err, doc.SizeBytes)
		}
		rows, _ := admin.Query(ctx, `select payload::text from outbox`)
		payloads, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(payloads) != 1 {
			t.Fatalf("outbox after one upload: %d events, %v", len(payloads), err)
		}
		if err := events.Validate([]byte(payloads[0])); err != nil {
			t.Errorf("document.uploaded does not match its schema: %v\n%s", err, payloads[0])
		}
		var ev struct {
			Type string
			Data events.Document
		}
		if err := json.Unmarshal([]byte(payloads[0]), &ev); err != nil {
			t.Fatal(err)
		}
		d := ev.Data
		if ev.Type != events.DocumentUploaded || d.ID != doc.ID || d.Filename != doc.Filename || d.Title != doc.Title ||
			d.ContentType != doc.ContentType || d.SizeBytes != doc.SizeBytes || d.SHA256 != doc.SHA256 {
			t.Errorf("event %s %+v does not match the answer %+v", ev.Type, d, doc)
		}
	})
}

// assertUploadProblem fails unless w is one of uploadProblems, as an RFC
// 9457 problem.
func assertUploadProblem(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	var prob struct {
		Type   string
		Status int
		Detail string
	}
	_ = json.Unmarshal(w.Body.Bytes(), &prob)
	typ, _ := strings.CutPrefix(prob.Type, "https://docuvault.dev/problems/")
	if status, ok := uploadProblems[typ]; !ok || status != w.Code || prob.Status != w.Code || prob.Detail == "" ||
		w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("answered %d %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}

// assertNothingStored fails unless the database holds no document, audit
// row or event, and the bucket no object.
func assertNothingStored(t *testing.T, admin *pgxpool.Pool, blobs *blob.Store, bucket string) {
	t.Helper()
	ctx := context.Background()
	var n int
	err := admin.QueryRow(ctx, `select (select count(*) from documents) + (select count(*) from audit_log) +
		(select count(*) from outbox)`).Scan(&n)
	if err != nil || n != 0 {
		t.Errorf("after a refused upload: %d rows left (%v)", n, err)
	}
	for obj := range blobs.Client().ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true, MaxKeys: 1}) {
		t.Errorf("after a refused upload: object %s left (%v)", obj.Key, obj.Err)
		break
	}
}

// removeUpload removes what an accepted upload stored, so that the next
// iteration starts empty.
func removeUpload(t *testing.T, admin *pgxpool.Pool, blobs *blob.Store, doc documentJSON) {
	ctx := context.Background()
	if _, err := admin.Exec(ctx, `delete from outbox; delete from audit_log; delete from documents`); err != nil {
		t.Fatal(err)
	}
	if err := blobs.Remove(ctx, blob.StagingKey(doc.ID)); err != nil {
		t.Fatal(err)
	}
}

// fuzzBoundary is the boundary of the seeds' multipart bodies.
const fuzzBoundary = "fuzzB"

// Builders of the seeds' multipart bodies, which may be broken on purpose.
func seedPart(header, body string) string {
	return "--" + fuzzBoundary + "\r\n" + header + "\r\n\r\n" + body + "\r\n"
}

func seedFile(filename, body string) string {
	return seedPart(fmt.Sprintf("Content-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\nContent-Type: application/pdf", filename), body)
}

func seedField(name, value string) string {
	return seedPart(fmt.Sprintf("Content-Disposition: form-data; name=%q", name), value)
}

const seedEnd = "--" + fuzzBoundary + "--\r\n"
