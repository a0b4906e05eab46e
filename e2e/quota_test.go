package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Quotas through the real binaries and the HTTP API: every upload is owned
// (phase 2), so each user's uploads count against their own quota. 32
// uploads of one user race for the last bytes of a 100,000-byte quota:
// each is answered 202 and ends ready or rejected (quota_exceeded), or is
// refused up front with a 507 problem naming the quota. At the end the
// user's usage equals the sum of their ready documents and never exceeds
// the limit; another user's quota is untouched, and deleting a document
// frees its bytes once.
func TestQuotasThroughTheAPI(t *testing.T) {
	t.Parallel()
	const limit, size = 100_000, 9_000
	st := startStackWith(t, "QUOTA_DEFAULT_BYTES", fmt.Sprint(limit), "QUOTA_DEFAULT_DOCUMENTS", "1000", "UPLOAD_CONCURRENCY_PER_CLIENT", "64")
	bob := signIn(t, st.base) // not the first account: no administrator
	client := bob.client()

	var mu sync.Mutex
	var accepted []string
	refused := 0
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := make([]byte, size)
			copy(content, fmt.Sprintf("bob's document %d", i))
			resp, body := upload(t, client, st.base, fmt.Sprintf("q%d.bin", i), content, nil, nil)
			mu.Lock()
			defer mu.Unlock()
			switch resp.StatusCode {
			case http.StatusAccepted:
				var doc document
				if err := json.Unmarshal(body, &doc); err != nil {
					t.Errorf("upload %d: %v", i, err)
					return
				}
				accepted = append(accepted, doc.ID)
			case http.StatusInsufficientStorage:
				var p struct {
					Type  string `json:"type"`
					Quota string `json:"quota"`
					Limit int64  `json:"limit"`
				}
				if err := json.Unmarshal(body, &p); err != nil || p.Quota != "bytes" || p.Limit != limit ||
					resp.Header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("upload %d refused: %s %s", i, resp.Header.Get("Content-Type"), body)
				}
				refused++
			default:
				t.Errorf("upload %d: %d %s", i, resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()

	// Every accepted upload ends; the ready ones fit the quota.
	ready, readyBytes := 0, int64(0)
	for _, id := range accepted {
		var doc document
		eventually(t, 30*time.Second, "document "+id+" to end", func() bool {
			getJSON(t, client, st.base+"/api/v1/documents/"+id, &doc)
			return doc.Status == "ready" || doc.Status == "rejected"
		})
		if doc.Status == "ready" {
			ready++
			readyBytes += doc.SizeBytes
		}
	}
	used := func(user string) (bytes, docs int64) {
		t.Helper()
		err := st.db.QueryRow(t.Context(), `select coalesce((select used_bytes from quotas where user_id = $1), 0),
			coalesce((select used_documents from quotas where user_id = $1), 0)`, user).Scan(&bytes, &docs)
		if err != nil {
			t.Fatal(err)
		}
		return bytes, docs
	}
	b, d := used(bob.ID)
	if ready == 0 || readyBytes > limit || b != readyBytes || d != int64(ready) {
		t.Fatalf("bob: %d ready (%d bytes), usage %d bytes / %d documents, limit %d", ready, readyBytes, b, d, limit)
	}
	if ready != limit/size {
		t.Errorf("%d ready; want the %d that fit", ready, limit/size)
	}
	// Now that the quota is known to be full, a further upload is refused
	// up front, and leaves nothing behind.
	before := len(accepted)
	resp, body := upload(t, client, st.base, "one-more.bin", make([]byte, size), nil, nil)
	var p struct {
		Type  string `json:"type"`
		Quota string `json:"quota"`
		Limit int64  `json:"limit"`
		Used  int64  `json:"used"`
	}
	if err := json.Unmarshal(body, &p); resp.StatusCode != http.StatusInsufficientStorage || err != nil || p.Quota != "bytes" ||
		p.Limit != limit || p.Used != readyBytes || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("upload over the quota: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var n int
	if err := st.db.QueryRow(t.Context(), `select count(*) from documents where user_id = $1`, bob.ID).Scan(&n); err != nil || n != before {
		t.Errorf("%d documents of bob's after a refused upload; want %d (%v)", n, before, err)
	}
	t.Logf("32 racing uploads: %d refused up front, %d accepted, %d ready", refused, before, ready)
	if b, d := used(st.user.ID); b != 0 || d != 0 {
		t.Errorf("the other user's usage moved: %d bytes, %d documents", b, d)
	}
	// The other user still has their whole quota.
	resp, body = upload(t, st.client, st.base, "mine.bin", make([]byte, size), nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("other user's upload: %d %s", resp.StatusCode, body)
	}

	// Deleting one of bob's documents frees its bytes once, even when the
	// delete is sent twice.
	var victim string
	for _, id := range accepted {
		var doc document
		getJSON(t, client, st.base+"/api/v1/documents/"+id, &doc)
		if doc.Status == "ready" {
			victim = id
			break
		}
	}
	for range 2 {
		req, _ := http.NewRequest(http.MethodDelete, st.base+"/api/v1/documents/"+victim, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if b2, d2 := used(bob.ID); b2 != b-size || d2 != d-1 {
		t.Errorf("after deleting one: %d bytes / %d documents; want %d / %d", b2, d2, b-size, d-1)
	}
}
