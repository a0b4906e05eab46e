package httpapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// uploadAs posts content as user's upload and returns the status and body.
func (e *env) uploadAs(t *testing.T, user uuid.UUID, content []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/documents",
		bytes.NewReader(multipartBody(boundary, part{header: fileHeader("q.pdf"), body: content})))
	req.Header.Set("Content-Type", mpType)
	req.Header.Set("X-Test-Owner", user.String())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("error answered with Content-Type %q: %s", resp.Header.Get("Content-Type"), raw)
	}
	return resp.StatusCode, out
}

func (e *env) newUser(t *testing.T) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	if _, err := e.admin.Exec(context.Background(), `insert into users (id, email) values ($1, $2)`, id, id.String()+"@example.org"); err != nil {
		t.Fatal(err)
	}
	return id
}

// An upload its owner's quota cannot take is refused up front with a 507
// naming the quota, and leaves nothing behind; the configured default
// applies to owners without limits of their own.
func TestUploadOverQuotaIsRefusedUpFront(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{Quota: store.QuotaLimits{Bytes: 1000, Documents: 5}})
	ctx := context.Background()

	byDefault := e.newUser(t)
	code, body := e.uploadAs(t, byDefault, bytes.Repeat([]byte("a"), 1001))
	if code != http.StatusInsufficientStorage || body["type"] != "https://docuvault.dev/problems/quota-exceeded" {
		t.Errorf("over the default byte quota: %d %v; want 507 quota-exceeded", code, body)
	}
	if body["quota"] != "bytes" || body["limit"] != float64(1000) || body["used"] != float64(0) {
		t.Errorf("problem members %v; want quota bytes, limit 1000, used 0", body)
	}
	e.assertNothingStored(t)

	ownLimit := e.newUser(t)
	if _, err := e.admin.Exec(ctx, `insert into quotas (user_id, max_bytes, max_documents, used_documents) values ($1, null, 3, 3)`, ownLimit); err != nil {
		t.Fatal(err)
	}
	code, body = e.uploadAs(t, ownLimit, []byte("small"))
	if code != http.StatusInsufficientStorage || body["quota"] != "documents" || body["limit"] != float64(3) {
		t.Errorf("over its own document quota: %d %v; want 507 naming the documents quota of 3", code, body)
	}
	e.assertNothingStored(t)

	if code, body := e.uploadAs(t, byDefault, bytes.Repeat([]byte("b"), 1000)); code != http.StatusAccepted {
		t.Errorf("an upload that fits: %d %v; want 202", code, body)
	}
}

// 32 uploads of one owner race through the API for a quota that holds 10
// of them: all pass the up-front check (nothing is ready yet), and the
// charge when each becomes ready decides: exactly 10 end ready, 22 end
// rejected as quota_exceeded with no object left, and usage equals the sum
// of the ready documents, never over the limit.
func TestQuotaRaceThroughTheAPI(t *testing.T) {
	t.Parallel()
	const size, fits, uploads = 8 << 10, 10, 32
	limits := store.QuotaLimits{Bytes: size * fits, Documents: 1000}
	e := newEnv(t, httpapi.Config{Quota: limits, UploadConcurrencyPerClient: uploads}) // all at once, from one address
	ctx := context.Background()
	owner := e.newUser(t)

	var wg sync.WaitGroup
	codes := make([]int, uploads)
	for i := range uploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := make([]byte, size)
			_, _ = rand.Read(content)
			codes[i], _ = e.uploadAs(t, owner, content)
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusAccepted {
			t.Fatalf("upload %d: %d; want 202 (the up-front check sees nothing ready yet)", i, c)
		}
	}

	// Finalise them all at once, as the consumer's workers would.
	fin := finalize.New(testenv.Logger(t), e.app, e.blobs, nil, limits)
	rows, err := e.admin.Query(ctx, `select payload::text from outbox where event_type = $1`, events.DocumentUploaded)
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Envelope
	for rows.Next() {
		var payload string
		var ev events.Envelope
		if err := rows.Scan(&payload); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(payload), &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	rows.Close()
	for _, ev := range evs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fin.Finalize(ctx, ev); err != nil {
				t.Errorf("finalize: %v", err)
			}
		}()
	}
	wg.Wait()

	var ready, over, readyBytes, usedBytes int64
	if err := e.admin.QueryRow(ctx, `select count(*) filter (where status = 'ready'),
			count(*) filter (where status = 'rejected' and reject_reason = 'quota_exceeded'),
			coalesce(sum(size_bytes) filter (where status = 'ready'), 0)
		from documents where user_id = $1`, owner).Scan(&ready, &over, &readyBytes); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.QueryRow(ctx, `select used_bytes from quotas where user_id = $1`, owner).Scan(&usedBytes); err != nil {
		t.Fatal(err)
	}
	if ready != fits || over != uploads-fits || usedBytes != readyBytes || usedBytes > limits.Bytes {
		t.Errorf("%d ready, %d over quota, usage %d for %d ready bytes (limit %d); want %d ready, %d over, usage = ready bytes",
			ready, over, usedBytes, readyBytes, limits.Bytes, fits, uploads-fits)
	}
	// No object outlives a rejection: only the ready documents' remain.
	var objects int64
	for obj := range e.blobs.Client().ListObjects(ctx, e.s3.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err == nil {
			objects++
		}
	}
	if objects != fits {
		t.Errorf("%d objects in the bucket; want the %d ready documents'", objects, fits)
	}
}
