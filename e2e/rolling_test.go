package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/testenv"
)

// apis is the set of API base URLs clients spread uploads over, as a load
// balancer would; an instance is taken out before it is stopped. Clients
// send the token of one account (every instance accepts it).
type apis struct {
	client *http.Client
	mu     sync.Mutex
	bases  []string
	next   int
}

func (a *apis) pick() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next++
	return a.bases[a.next%len(a.bases)]
}

func (a *apis) set(i int, base string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bases[i] = base
}

// uploadRetrying uploads content with an Idempotency-Key, retrying on
// another instance when a request fails without an answer (the instance
// is stopping), as a client of a load-balanced API would. It returns the
// document id of the 202.
func uploadRetrying(t testing.TB, a *apis, content []byte) (string, error) {
	key := uuid.NewString()
	var last error
	for range 50 {
		id, status, err := tryUpload(a.client, a.pick(), key, content)
		switch {
		case err == nil && status == http.StatusAccepted:
			return id, nil
		case err == nil:
			return "", fmt.Errorf("upload answered %d", status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("upload failed 50 times, last: %w", last)
}

func tryUpload(client *http.Client, base, key string, content []byte) (string, int, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "rolling.bin")
	_, _ = fw.Write(content)
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/documents", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var doc document
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil && resp.StatusCode == http.StatusAccepted {
		return "", 0, err
	}
	return doc.ID, resp.StatusCode, nil
}

// slowUpload sends a size-byte file to base over about d, in chunks; it
// closes started once the request is under way. It sends token.
func slowUpload(base, token string, size int, d time.Duration, started chan<- struct{}) (string, int, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, err := mw.CreateFormFile("file", "slow.bin")
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		const chunks = 20
		chunk := make([]byte, size/chunks)
		for i := range chunks {
			_, _ = rand.Read(chunk)
			if _, err := fw.Write(chunk); err != nil {
				pw.CloseWithError(err)
				return
			}
			if i == 0 {
				close(started)
			}
			time.Sleep(d / chunks)
		}
		pw.CloseWithError(mw.Close())
	}()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/documents", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	// A connection of its own: a kept-alive one that the server sees idle
	// when it stops could be closed under the request before the server
	// reads it (clients retry those with their Idempotency-Key).
	client := &http.Client{Transport: withToken(token, &http.Transport{DisableKeepAlives: true})}
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	var doc document
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	return doc.ID, resp.StatusCode, nil
}

// A rolling restart of every process under load loses nothing. Two APIs,
// two relays and two consumers run; one at a time, each is stopped with
// SIGTERM and started again while clients keep uploading (retrying on the
// other API with their Idempotency-Key when an instance goes away). An
// upload in flight to an API being stopped finishes with 202. In the end
// every acknowledged upload is ready, exactly one document exists per
// acknowledged key, each was finalised once in effect, and every event of
// these documents reached its stream.
func TestRollingRestartLosesNothing(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	api := [2]*proc{st.api, start(t, "api", st.env)}
	relays := [2]*proc{st.relay, start(t, "relay", st.env)}
	consumers := [2]*proc{st.consumer, start(t, "consumer", st.env)}
	lb := &apis{client: st.client, bases: []string{st.base, "http://" + api[1].addr("api")}}
	relays[1].addr("metrics")
	consumers[1].addr("metrics")

	// Clients upload until told to stop.
	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for c := range 3 {
		clients.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				content := make([]byte, 8<<10+c*1000+i)
				_, _ = rand.Read(content)
				id, err := uploadRetrying(t, lb, content)
				if err != nil {
					t.Errorf("client %d upload %d: %v", c, i, err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	settle := func() { time.Sleep(700 * time.Millisecond) } // let load run against the new set

	// The APIs: out of the rotation, SIGTERM with a slow upload in flight,
	// which must still be answered 202; then a new instance.
	var slowIDs []string
	for i := range api {
		settle()
		base := lb.bases[i]
		lb.set(i, lb.bases[1-i])
		started := make(chan struct{})
		type result struct {
			id     string
			status int
			err    error
		}
		res := make(chan result, 1)
		go func() {
			id, status, err := slowUpload(base, st.user.Access, 1<<20, 1500*time.Millisecond, started)
			res <- result{id, status, err}
		}()
		<-started
		time.Sleep(200 * time.Millisecond) // the server is reading the body
		// stop returns when the process has exited: after the slow upload.
		api[i].stop()
		r := <-res
		if r.err != nil || r.status != http.StatusAccepted {
			t.Fatalf("upload in flight while api %d stopped: status %d, %v\n%s", i, r.status, r.err, api[i].Log())
		}
		slowIDs = append(slowIDs, r.id)
		api[i] = start(t, "api", st.env)
		lb.set(i, "http://"+api[i].addr("api"))
	}
	// The relays and the consumers, one at a time.
	for _, ps := range []*[2]*proc{&relays, &consumers} {
		for i := range ps {
			settle()
			name := ps[i].name
			ps[i].stop()
			ps[i] = start(t, name, st.env)
			ps[i].addr("metrics")
		}
	}
	settle()
	close(stop)
	clients.Wait()
	mu.Lock()
	ids := append(acked, slowIDs...)
	mu.Unlock()
	if len(acked) < 30 {
		t.Fatalf("only %d uploads acknowledged during the restarts", len(acked))
	}

	t.Logf("%d uploads acknowledged across the restarts", len(ids))
	st.base = lb.pick()
	for _, id := range ids {
		st.waitStatusWithin(t, id, "ready", 90*time.Second)
	}
	ctx := context.Background()
	var docs, finalized, finalizedDocs int
	if err := st.db.QueryRow(ctx, `select (select count(*) from documents),
			count(*), count(distinct aggregate_id) from audit_log where action = 'document.finalized'`).
		Scan(&docs, &finalized, &finalizedDocs); err != nil {
		t.Fatal(err)
	}
	if docs != len(ids) {
		t.Errorf("%d documents for %d acknowledged uploads: a retried upload was stored twice, or one was lost", docs, len(ids))
	}
	if finalized != len(ids) || finalizedDocs != len(ids) {
		t.Errorf("%d finalized events for %d documents; want exactly one each for %d", finalized, finalizedDocs, len(ids))
	}

	// Every event of these documents reached docuvault.documents.
	rdb := testenv.RedisClient(t, st.env["REDIS_URL"])
	var want []uuid.UUID
	rows, err := st.db.Query(ctx, `select event_id from audit_log where aggregate_type = 'document'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "every document event on its stream", func() bool {
		got := onStream(t, rdb)
		for _, id := range want {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	for _, p := range append(append(api[:], relays[:]...), consumers[:]...) {
		p.stop()
	}
}
