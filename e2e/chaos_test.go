package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/check"
	"github.com/docuvault/docuvault/internal/testenv"
)

// chaosSystem is the real binaries (one API, two relays, two consumers)
// against PostgreSQL, a Redis of the test's own, MinIO behind a proxy
// that can cut it off, and a WebDAV target that can fail.
type chaosSystem struct {
	t     *testing.T
	env   testenv.Env
	redis *testenv.RedisServer
	minio *testenv.Proxy
	dav   *testenv.WebDAV

	mu        sync.Mutex
	api       *proc
	base      string
	relays    [2]*proc
	consumers [2]*proc
	redisAt   time.Time // when Redis last came back empty
}

func (s *chaosSystem) apiBase() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base
}

// restart SIGKILLs the process in *p and starts a new one.
func (s *chaosSystem) restart(p **proc) {
	s.mu.Lock()
	old := *p
	s.mu.Unlock()
	old.kill()
	np := start(s.t, old.name, s.env)
	server := "metrics"
	if old.name == "api" {
		server = "api"
	}
	addr := np.addr(server)
	s.mu.Lock()
	*p = np
	if old.name == "api" {
		s.base = "http://" + addr
	}
	s.mu.Unlock()
}

// chaosClient is one client of the load: it uploads (retrying with its
// Idempotency-Key until answered), deletes, and changes topics and
// folders.
type chaosClient struct {
	s      *chaosSystem
	rnd    *rand.Rand
	http   *http.Client
	acked  *sync.Map // document id -> size
	counts *sync.Map // what -> *atomic.Int64
}

func (c *chaosClient) count(what string) {
	v, _ := c.counts.LoadOrStore(what, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// do sends a request built by mk until it is answered (any status) or
// until gives up; it returns the status and body.
func (c *chaosClient) do(until time.Time, mk func(base string) (*http.Request, error)) (int, []byte, bool) {
	for time.Now().Before(until) {
		req, err := mk(c.s.apiBase())
		if err != nil {
			c.s.t.Errorf("build request: %v", err)
			return 0, nil, false
		}
		resp, err := c.http.Do(req)
		if err != nil {
			c.count("transport errors (retried)")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			c.count(fmt.Sprintf("%d answers (retried)", resp.StatusCode))
			time.Sleep(200 * time.Millisecond)
			continue
		}
		return resp.StatusCode, body, true
	}
	return 0, nil, false
}

func (c *chaosClient) upload(until time.Time) {
	size := 1<<10 + c.rnd.IntN(63<<10)
	if c.rnd.IntN(10) == 0 {
		size = 256<<10 + c.rnd.IntN(2<<20)
	}
	content := make([]byte, size)
	for i := range content {
		content[i] = byte(c.rnd.Uint32())
	}
	key := uuid.NewString()
	status, body, ok := c.do(until, func(base string) (*http.Request, error) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, err := mw.CreateFormFile("file", "chaos.bin")
		if err != nil {
			return nil, err
		}
		_, _ = fw.Write(content)
		_ = mw.Close()
		req, err := http.NewRequest(http.MethodPost, base+"/api/v1/documents", &buf)
		if err == nil {
			req.Header.Set("Content-Type", mw.FormDataContentType())
			req.Header.Set("Idempotency-Key", key)
		}
		return req, err
	})
	switch {
	case !ok:
		c.count("uploads never answered")
	case status != http.StatusAccepted:
		c.s.t.Errorf("upload answered %d: %s", status, body)
	default:
		var doc struct{ ID string }
		if err := json.Unmarshal(body, &doc); err != nil {
			c.s.t.Errorf("upload answer: %v", err)
			return
		}
		c.acked.Store(doc.ID, size)
		c.count("uploads acknowledged")
	}
}

func (c *chaosClient) deleteOne(until time.Time) {
	var id string
	c.acked.Range(func(k, _ any) bool {
		id = k.(string)
		return c.rnd.IntN(20) != 0 // a pseudo-random one
	})
	if id == "" {
		return
	}
	status, body, ok := c.do(until, func(base string) (*http.Request, error) {
		return http.NewRequest(http.MethodDelete, base+"/api/v1/documents/"+id, nil)
	})
	if ok && status != http.StatusNoContent && status != http.StatusNotFound && status != http.StatusConflict {
		c.s.t.Errorf("delete %s answered %d: %s", id, status, body)
	}
	if ok {
		c.count(fmt.Sprintf("deletes answered %d", status))
	}
}

func (c *chaosClient) topicsAndFolders(until time.Time) {
	kind := []string{"topics", "folders"}[c.rnd.IntN(2)]
	name := fmt.Sprintf("chaos %s %d", kind, c.rnd.Uint32())
	body, _ := json.Marshal(map[string]string{"name": name})
	status, resp, ok := c.do(until, func(base string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPost, base+"/api/v1/"+kind, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	})
	if !ok || status != http.StatusCreated {
		if ok && status != http.StatusConflict {
			c.s.t.Errorf("create %s answered %d: %s", kind, status, resp)
		}
		return
	}
	var created struct{ ID string }
	_ = json.Unmarshal(resp, &created)
	rename, _ := json.Marshal(map[string]string{"name": name + " renamed"})
	c.do(until, func(base string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPatch, base+"/api/v1/"+kind+"/"+created.ID, bytes.NewReader(rename))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	})
	if c.rnd.IntN(2) == 0 {
		c.do(until, func(base string) (*http.Request, error) {
			return http.NewRequest(http.MethodDelete, base+"/api/v1/"+kind+"/"+created.ID, nil)
		})
	}
	c.count(kind + " changed")
}

// TestChaos is `make chaos`: a mixed load against the real binaries while
// processes are SIGKILLed and restarted, Redis restarts empty, MinIO is cut
// off and the WebDAV target fails, at random moments for CHAOS_DURATION
// (default 3m). Then, once every fault is healed and the system is quiet,
// the invariant checker (internal/check) must find nothing: every
// acknowledged upload ended, objects and rows agree, cloud copies exist,
// the audit chain holds, the outbox is empty, and every event recorded
// since Redis last came back is on its streams.
func TestChaos(t *testing.T) {
	if os.Getenv("DOCUVAULT_CHAOS") == "" {
		t.Skip("run by `make chaos` (DOCUVAULT_CHAOS=1)")
	}
	duration := 3 * time.Minute
	if raw := os.Getenv("CHAOS_DURATION"); raw != "" {
		var err error
		if duration, err = time.ParseDuration(raw); err != nil || duration <= 0 {
			t.Fatalf("CHAOS_DURATION %q is not a positive duration", raw)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if raw := os.Getenv("CHAOS_SEED"); raw != "" {
		var err error
		if seed, err = strconv.ParseUint(raw, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED %q is not a number", raw)
		}
	}
	t.Logf("chaos for %s, seed %d", duration, seed)
	rnd := rand.New(rand.NewPCG(seed, 1))

	db := testenv.NewDB(t)
	s3 := testenv.S3(t)
	remote := testenv.S3(t) // the cloud S3 target
	s := &chaosSystem{t: t, redis: testenv.StartRedis(t), minio: testenv.StartProxy(t, s3.Endpoint.HostPort),
		dav: testenv.StartWebDAV(t, "docuvault", "dav-password")}
	s.env = testenv.ServiceEnv(t, db, s3).With("MINIO_ENDPOINT", s.minio.Addr, "REDIS_URL", s.redis.URL(), "CLAIM_AFTER", "3s")
	s.api = start(t, "api", s.env)
	s.base = "http://" + s.api.addr("api")
	for i := range 2 {
		s.relays[i] = start(t, "relay", s.env)
		s.consumers[i] = start(t, "consumer", s.env)
	}
	for i := range 2 {
		s.relays[i].addr("metrics")
		s.consumers[i].addr("metrics")
	}
	// One account owns the load (signed in before any fault; its access
	// token outlives the run and is accepted by every API instance).
	user := signIn(t, s.base)
	client := &http.Client{Timeout: 30 * time.Second, Transport: withToken(user.Access, nil)}
	setup := &chaosClient{s: s, http: client}
	for _, conn := range []map[string]any{
		{"provider": "webdav", "name": "chaos dav",
			"settings":    map[string]any{"url": s.dav.URL, "prefix": "DocuVault"},
			"credentials": map[string]any{"username": s.dav.User, "password": s.dav.Password}},
		{"provider": "s3", "name": "chaos s3",
			"settings": map[string]any{"endpoint": remote.Endpoint.HostPort, "bucket": remote.Bucket, "prefix": "docuvault/",
				"use_ssl": false, "region": "us-east-1"},
			"credentials": map[string]any{"access_key_id": remote.AccessKey, "secret_access_key": remote.SecretKey}},
	} {
		body, _ := json.Marshal(conn)
		status, resp, _ := setup.do(time.Now().Add(30*time.Second), func(base string) (*http.Request, error) {
			req, err := http.NewRequest(http.MethodPost, base+"/api/v1/cloud-connections", bytes.NewReader(body))
			if err == nil {
				req.Header.Set("Content-Type", "application/json")
			}
			return req, err
		})
		if status != http.StatusCreated {
			t.Fatalf("create connection: %d %s", status, resp)
		}
	}

	// The load.
	end := time.Now().Add(duration)
	var acked, counts sync.Map
	var clients sync.WaitGroup
	for i := range 4 {
		c := &chaosClient{s: s, rnd: rand.New(rand.NewPCG(seed, uint64(i+2))), http: client,
			acked: &acked, counts: &counts}
		clients.Go(func() {
			for time.Now().Before(end) {
				// Requests started before the end may retry for a while
				// after it (the faults are healed then).
				until := end.Add(2 * time.Minute)
				switch n := c.rnd.IntN(100); {
				case n < 75:
					c.upload(until)
				case n < 88:
					c.deleteOne(until)
				default:
					c.topicsAndFolders(until)
				}
				time.Sleep(time.Duration(c.rnd.IntN(50)) * time.Millisecond)
			}
		})
	}

	// The faults, until 20 s before the end.
	var faults []string
	for time.Now().Before(end.Add(-20 * time.Second)) {
		time.Sleep(time.Duration(1000+rnd.IntN(2000)) * time.Millisecond)
		switch n := rnd.IntN(100); {
		case n < 20:
			i := rnd.IntN(2)
			s.restart(&s.relays[i])
			faults = append(faults, fmt.Sprintf("relay %d killed", i))
		case n < 40:
			i := rnd.IntN(2)
			s.restart(&s.consumers[i])
			faults = append(faults, fmt.Sprintf("consumer %d killed", i))
		case n < 55:
			s.restart(&s.api)
			faults = append(faults, "api killed")
		case n < 65:
			s.redis.Kill()
			time.Sleep(time.Duration(rnd.IntN(1000)) * time.Millisecond)
			s.redis.Start()
			s.mu.Lock()
			s.redisAt = time.Now()
			s.mu.Unlock()
			faults = append(faults, "redis restarted empty")
		case n < 85:
			d := time.Duration(1000+rnd.IntN(4000)) * time.Millisecond
			s.minio.SetDown(true)
			time.Sleep(d)
			s.minio.SetDown(false)
			faults = append(faults, fmt.Sprintf("minio cut off for %s", d))
		default:
			d := time.Duration(1000+rnd.IntN(4000)) * time.Millisecond
			s.dav.SetUnavailable(true)
			time.Sleep(d)
			s.dav.SetUnavailable(false)
			faults = append(faults, fmt.Sprintf("webdav failing for %s", d))
		}
	}
	clients.Wait()
	t.Logf("faults (%d): %s", len(faults), strings.Join(faults, ", "))
	counts.Range(func(k, v any) bool {
		t.Logf("  %s: %d", k, v.(*atomic.Int64).Load())
		return true
	})
	var ids []string
	acked.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	if len(ids) == 0 {
		t.Fatal("no upload was acknowledged")
	}

	// Quiet: wait for the pipeline to settle (a Redis restart loses
	// events: the sweep re-queues stuck uploads, and cloud sync catches up
	// on lost finalisations and deletions, after a few minutes).
	pool := testenv.Pool(t, db.AdminDSN())
	ctx := context.Background()
	quietBy := time.Now().Add(6 * time.Minute)
	for {
		var busy string
		err := pool.QueryRow(ctx, `select concat_ws(', ',
			(select count(*) || ' pending documents' from documents where status = 'pending' having count(*) > 0),
			(select count(*) || ' unpurged deletions' from documents where status = 'deleted' and purged_at is null having count(*) > 0),
			(select count(*) || ' cloud copies pending' from cloud_sync where status = 'pending' having count(*) > 0),
			(select count(*) || ' outbox rows' from outbox having count(*) > 0),
			(select count(*) || ' ready documents without their copies planned' from documents d
			  join cloud_connections cc on cc.user_id is not distinct from d.user_id
			  where d.status = 'ready' and cc.status = 'active' and cc.created_at < d.finalized_at
			    and not exists (select 1 from cloud_sync s where s.document_id = d.id and s.connection_id = cc.id)
			  having count(*) > 0),
			(select count(*) || ' deleted documents with copies kept' from cloud_sync s
			  join documents d on d.id = s.document_id join cloud_connections cc on cc.id = s.connection_id
			  where d.status = 'deleted' and cc.delete_remote and cc.status = 'active' and s.operation = 'copy' and s.status = 'synced'
			  having count(*) > 0),
			(select count(*) || ' unchained audit rows' from audit_log a
			  where not exists (select 1 from audit_chain c where c.audit_id = a.id) having count(*) > 0))`).Scan(&busy)
		if err != nil {
			t.Fatal(err)
		}
		if busy == "" {
			break
		}
		if time.Now().After(quietBy) {
			var stuck string
			_ = pool.QueryRow(ctx, `select coalesce(string_agg(format('%s %s attempts %s due %s: %s', operation, status, attempts,
				next_attempt_at - now(), coalesce(last_error, '')), '; '), '') from cloud_sync where status = 'pending'`).Scan(&stuck)
			t.Fatalf("not quiet 6 min after the chaos: %s\n  pending cloud copies: %s", busy, stuck)
		}
		time.Sleep(time.Second)
	}

	// Every acknowledged upload has its row.
	var rows int
	if err := pool.QueryRow(ctx, `select count(*) from documents where id = any($1::uuid[])`, ids).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	lost := len(ids) - rows
	if lost > 0 {
		t.Errorf("%d of %d acknowledged uploads have a row: %d lost", rows, len(ids), lost)
	}
	cfg := checkConfig(t, &stack{env: s.env.With("MINIO_ENDPOINT", s3.Endpoint.HostPort)})
	s.mu.Lock()
	cfg.EventsSince = s.redisAt
	s.mu.Unlock()
	cfg.Grace = time.Second
	cfg.StagingGrace = time.Hour // the sweep's: uploads cut off by a kill leave theirs until then
	rep, err := check.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checked %d documents %v, %d objects, %d audit links, %d events, %d duplicate deliveries",
		rep.Documents, rep.ByStatus, rep.Objects, rep.Links, rep.Events, rep.Duplicates)
	// The verdict: an acknowledged upload is lost when it has no row, never
	// ended, or is ready without its object; double-counted when its
	// outcome was recorded twice or a quota disagrees with the ready
	// documents.
	doubled, other := 0, 0
	for _, f := range rep.Findings {
		t.Errorf("%s", f)
		switch {
		case f.Invariant == "documents" && strings.Contains(f.Detail, "finalised"), f.Invariant == "quotas":
			doubled++
		case f.Invariant == "documents" && strings.Contains(f.Detail, "pending"),
			f.Invariant == "objects" && strings.Contains(f.Detail, "ready, but"):
			lost++
		default:
			other++
		}
	}
	fmt.Printf("chaos: %d uploads, %d lost, %d double-counted, %d duplicate deliveries absorbed, %d faults injected, %d other findings (seed %d, %s)\n",
		len(ids), lost, doubled, rep.Duplicates, len(faults), other, seed, duration)
}
