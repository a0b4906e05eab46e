package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
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

const (
	cloudSecretKey = "test-secret-key-0123456789abcdef0123456789"
	// cloudCanary is the WebDAV password of the tests: no response, log,
	// event or audit row may contain it.
	cloudCanary = "canary-pw-9c4e77a1"
)

type cloudEnv struct {
	srv     *httptest.Server // acts for other
	userSrv *httptest.Server // acts for user
	user    uuid.UUID
	other   uuid.UUID
	admin   *pgxpool.Pool
	logs    *testenv.SyncBuffer
	remote  config.S3 // a second bucket, for S3 connections
	remoteS *blob.Store
	dav     *testenv.WebDAV
}

func newCloudEnv(t *testing.T) *cloudEnv {
	t.Helper()
	db := testenv.NewDB(t)
	own, err := blob.New(testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	remote := testenv.S3(t)
	remoteS, err := blob.New(remote)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := cloudsync.NewSealer(cloudSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := redis.ParseURL(testenv.RedisURL())
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	logs := &testenv.SyncBuffer{}
	h := httpapi.NewActing(httpapi.Deps{
		Config: httpapi.Config{UploadMaxBytes: 1 << 20, DuplicatePolicy: "allow"},
		Log:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		DB:     testenv.Pool(t, db.AppURL), Redis: rdb, Blobs: own, Metrics: http.NotFoundHandler(),
		Cloud: cloudsync.NewConnector(sealer),
	})
	e := &cloudEnv{admin: testenv.Pool(t, db.AdminDSN()), logs: logs, remote: remote, remoteS: remoteS,
		dav: testenv.StartWebDAV(t, "alice", cloudCanary)}
	e.user = testenv.User(t, e.admin, "bob@example.com")
	e.other = testenv.User(t, e.admin, "carol@example.com")
	e.srv = actingServer(t, actAs(h, e.other))
	e.userSrv = actingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(httpapi.WithOwner(r.Context(), e.user)))
	}))
	return e
}

// do sends a request and returns the status, the decoded body and the raw
// body; error answers must be problem+json.
func (e *cloudEnv) do(t *testing.T, method, url, body string) (int, map[string]any, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s %s answered %d with Content-Type %q: %s", method, url, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	if strings.Contains(string(raw), cloudCanary) || strings.Contains(string(raw), e.remote.SecretKey) {
		t.Errorf("%s %s: a credential is in the response: %s", method, url, raw)
	}
	return resp.StatusCode, out, string(raw)
}

func (e *cloudEnv) s3Body(name string) string {
	return `{"provider":"s3","name":"` + name + `","settings":{"endpoint":"` + e.remote.Endpoint.HostPort + `","bucket":"` +
		e.remote.Bucket + `","prefix":"docuvault","use_ssl":false,"region":"us-east-1"},"credentials":{"access_key_id":"` +
		e.remote.AccessKey + `","secret_access_key":"` + e.remote.SecretKey + `"}}`
}

func (e *cloudEnv) webdavBody(name, url, password string) string {
	return `{"provider":"webdav","name":"` + name + `","settings":{"url":"` + url + `","prefix":"DocuVault/"},` +
		`"credentials":{"username":"alice","password":"` + password + `"}}`
}

func (e *cloudEnv) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.admin.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// assertNoSecretsStored fails if a credential is in the logs, the audit
// log, the outbox or a readable column.
func (e *cloudEnv) assertNoSecretsStored(t *testing.T) {
	t.Helper()
	for _, secret := range []string{cloudCanary, e.remote.SecretKey} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("a credential is in the logs:\n%s", e.logs.String())
		}
		n := e.count(t, `select
			(select count(*) from audit_log where details::text like '%' || $1 || '%') +
			(select count(*) from outbox where payload::text like '%' || $1 || '%') +
			(select count(*) from cloud_connections where settings::text like '%' || $1 || '%'
				or coalesce(last_error, '') like '%' || $1 || '%'
				or position(convert_to($1, 'UTF8') in credentials) > 0)`, secret)
		if n != 0 {
			t.Errorf("a credential is in %d stored rows", n)
		}
	}
}

func TestCloudConnectionLifecycle(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t)
	base := e.srv.URL + "/api/v1/cloud-connections"

	status, s3, raw := e.do(t, "POST", base, e.s3Body("offsite"))
	if status != 201 || s3["credentials_set"] != true || strings.Contains(raw, `"credentials"`) {
		t.Fatalf("create s3: %d %s", status, raw)
	}
	settings := s3["settings"].(map[string]any)
	if settings["prefix"] != "docuvault/" || settings["bucket"] != e.remote.Bucket || s3["status"] != "active" || s3["delete_remote"] != true {
		t.Errorf("s3 connection %s", raw)
	}
	status, dav, raw := e.do(t, "POST", base, e.webdavBody("nextcloud", e.dav.URL, cloudCanary))
	if status != 201 {
		t.Fatalf("create webdav: %d %s", status, raw)
	}
	s3ID, davID := s3["id"].(string), dav["id"].(string)

	if status, list, _ := e.do(t, "GET", base, ""); status != 200 || len(list["items"].([]any)) != 2 {
		t.Errorf("list: %d %v", status, list)
	}
	if status, got, _ := e.do(t, "GET", base+"/"+davID, ""); status != 200 || got["name"] != "nextcloud" || got["credentials_set"] != true {
		t.Errorf("get: %d %v", status, got)
	}

	// Both remotes are reachable and writable; the probes are gone after.
	for _, id := range []string{s3ID, davID} {
		if status, res, raw := e.do(t, "POST", base+"/"+id+"/test", ""); status != 200 || res["ok"] != true {
			t.Errorf("test %s: %d %s", id, status, raw)
		}
	}
	for obj := range e.remoteS.Client().ListObjects(context.Background(), e.remote.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		t.Errorf("probe left in the bucket: %s", obj.Key)
	}
	if f, err := e.dav.FS.OpenFile(context.Background(), "/DocuVault", os.O_RDONLY, 0); err == nil {
		names, _ := f.Readdir(-1)
		f.Close()
		if len(names) != 0 {
			t.Errorf("probe left on WebDAV: %v", names[0].Name())
		}
	}

	// PATCH: name, status, delete_remote; then credentials.
	status, got, raw := e.do(t, "PATCH", base+"/"+davID, `{"name":"nc","status":"paused","delete_remote":false}`)
	if status != 200 || got["name"] != "nc" || got["status"] != "paused" || got["delete_remote"] != false {
		t.Errorf("patch: %d %s", status, raw)
	}
	if status, _, _ := e.do(t, "PATCH", base+"/"+davID, `{"status":"failing"}`); status != 422 {
		t.Errorf("patch status failing: %d; want 422", status)
	}
	if status, _, _ := e.do(t, "PATCH", base+"/"+davID, `{}`); status != 400 {
		t.Errorf("empty patch: %d; want 400", status)
	}
	if status, _, _ := e.do(t, "PATCH", base+"/"+davID, `{"credentials":{"username":"alice","password":"wrong-`+cloudCanary+`"}}`); status != 200 {
		t.Errorf("patch credentials: %d", status)
	}
	if _, res, _ := e.do(t, "POST", base+"/"+davID+"/test", ""); res["ok"] != false || res["failure"] != "auth_refused" {
		t.Errorf("test with the wrong password: %v; want auth_refused", res)
	}
	if status, _, _ := e.do(t, "PATCH", base+"/"+s3ID, `{"name":"NC"}`); status != 409 {
		t.Errorf("rename onto another connection's name: %d; want 409", status)
	}

	// The stored credentials are sealed: no plaintext, and they open only
	// with the right key for the right row.
	var sealed []byte
	var keyVersion int
	if err := e.admin.QueryRow(context.Background(), `select credentials, key_version from cloud_connections where id = $1`, s3ID).Scan(&sealed, &keyVersion); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(e.remote.SecretKey)) || keyVersion != cloudsync.KeyVersion {
		t.Error("credentials stored in clear or without key version")
	}
	right, _ := cloudsync.NewSealer(cloudSecretKey)
	if plain, err := right.Open(uuid.MustParse(s3ID), sealed); err != nil || !strings.Contains(string(plain), e.remote.SecretKey) {
		t.Errorf("credentials do not open with SECRET_KEY: %v", err)
	}
	wrong, _ := cloudsync.NewSealer(cloudSecretKey + "x")
	if _, err := wrong.Open(uuid.MustParse(s3ID), sealed); err == nil {
		t.Error("credentials open with another key")
	}
	if _, err := right.Open(uuid.MustParse(davID), sealed); err == nil {
		t.Error("credentials open as another connection's")
	}

	if status, _, _ := e.do(t, "DELETE", base+"/"+davID, ""); status != 204 {
		t.Errorf("delete: %d", status)
	}
	for _, c := range []struct{ method, path string }{{"GET", davID}, {"DELETE", davID}, {"PATCH", davID}, {"POST", davID + "/test"},
		{"GET", uuid.Must(uuid.NewV7()).String()}, {"GET", "not-a-uuid"}} {
		body := ""
		if c.method == "PATCH" {
			body = `{"name":"x"}`
		}
		if status, prob, _ := e.do(t, c.method, base+"/"+c.path, body); status != 404 || prob["type"] != "https://docuvault.dev/problems/not-found" {
			t.Errorf("%s %s: %d %v; want 404 not-found", c.method, c.path, status, prob)
		}
	}

	rows, err := e.admin.Query(context.Background(), `select a.action, o.stream from audit_log a join outbox o on o.event_id = a.event_id order by a.id`)
	if err != nil {
		t.Fatal(err)
	}
	var got2 []string
	for rows.Next() {
		var action, stream string
		_ = rows.Scan(&action, &stream)
		if stream != "docuvault.cloud_connections" {
			t.Errorf("%s went to stream %s", action, stream)
		}
		got2 = append(got2, action)
	}
	want := "cloud_connection.created cloud_connection.created cloud_connection.updated cloud_connection.updated cloud_connection.deleted"
	if strings.Join(got2, " ") != want {
		t.Errorf("audited %v; want %s", got2, want)
	}
	e.assertNoSecretsStored(t)
}

// Bad input gets a problem (400 for a wrong shape, 422 for an unacceptable
// value) naming what is wrong, never echoing a credential, and stores
// nothing.
func TestCloudConnectionBadInputStoresNothing(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t)
	base := e.srv.URL + "/api/v1/cloud-connections"
	s3 := func(settings, creds string) string {
		return `{"provider":"s3","name":"x","settings":` + settings + `,"credentials":` + creds + `}`
	}
	goodS3 := `{"endpoint":"127.0.0.1:9000","bucket":"backup","prefix":"docuvault/"}`
	goodCreds := `{"access_key_id":"AKID","secret_access_key":"` + cloudCanary + `"}`
	dav := func(url, creds string) string {
		return `{"provider":"webdav","name":"x","settings":{"url":"` + url + `"},"credentials":` + creds + `}`
	}
	davCreds := `{"username":"alice","password":"` + cloudCanary + `"}`
	cases := []struct {
		name   string
		body   string
		status int
		typ    string
	}{
		{"not JSON", `provider=s3`, 400, "invalid-json"},
		{"empty body", ``, 400, "invalid-json"},
		{"unknown top-level field", strings.TrimSuffix(s3(goodS3, goodCreds), "}") + `,"owner":"root"}`, 400, "invalid-json"},
		{"no provider", `{"name":"x","settings":` + goodS3 + `,"credentials":` + goodCreds + `}`, 400, "invalid-field"},
		{"unknown provider", `{"provider":"ftp","name":"x","settings":` + goodS3 + `,"credentials":` + goodCreds + `}`, 422, "invalid-setting"},
		{"no name", `{"provider":"s3","settings":` + goodS3 + `,"credentials":` + goodCreds + `}`, 400, "invalid-field"},
		{"name too long", `{"provider":"s3","name":"` + strings.Repeat("n", 201) + `","settings":` + goodS3 + `,"credentials":` + goodCreds + `}`, 400, "invalid-field"},
		{"no settings", `{"provider":"s3","name":"x","credentials":` + goodCreds + `}`, 400, "invalid-field"},
		{"settings not an object", s3(`"s3://backup"`, goodCreds), 400, "invalid-field"},
		{"unknown setting", s3(`{"endpoint":"h:1","bucket":"backup","acl":"public"}`, goodCreds), 400, "invalid-field"},
		{"use_ssl not a bool", s3(`{"endpoint":"h:1","bucket":"backup","use_ssl":"yes"}`, goodCreds), 400, "invalid-field"},
		{"no endpoint", s3(`{"bucket":"backup"}`, goodCreds), 400, "invalid-field"},
		{"endpoint with scheme", s3(`{"endpoint":"https://s3.example.com","bucket":"backup"}`, goodCreds), 422, "invalid-setting"},
		{"endpoint bad port", s3(`{"endpoint":"s3.example.com:99999","bucket":"backup"}`, goodCreds), 422, "invalid-setting"},
		{"bad bucket", s3(`{"endpoint":"h:1","bucket":"Not_A_Bucket"}`, goodCreds), 422, "invalid-setting"},
		{"bad region", s3(`{"endpoint":"h:1","bucket":"backup","region":"US East"}`, goodCreds), 422, "invalid-setting"},
		{"prefix escapes", s3(`{"endpoint":"h:1","bucket":"backup","prefix":"a/../../b"}`, goodCreds), 422, "invalid-setting"},
		{"no credentials", `{"provider":"s3","name":"x","settings":` + goodS3 + `}`, 400, "invalid-field"},
		{"credentials not an object", s3(goodS3, `"`+cloudCanary+`"`), 400, "invalid-field"},
		{"no secret", s3(goodS3, `{"access_key_id":"AKID"}`), 400, "invalid-field"},
		{"webdav credentials for s3", s3(goodS3, davCreds), 400, "invalid-field"},
		{"secret not a string", s3(goodS3, `{"access_key_id":"AKID","secret_access_key":12345}`), 400, "invalid-field"},
		{"webdav url not http", dav("ftp://files.example.com/", davCreds), 422, "invalid-setting"},
		{"webdav url with password", dav("https://alice:"+cloudCanary+"@cloud.example.com/dav/", davCreds), 422, "invalid-setting"},
		{"webdav url relative", dav("/remote.php/dav/", davCreds), 422, "invalid-setting"},
		{"webdav no password", dav("https://cloud.example.com/dav/", `{"username":"alice"}`), 400, "invalid-field"},
		{"webdav password with control characters", dav("https://cloud.example.com/dav/", `{"username":"alice","password":"a\nb"}`), 422, "invalid-setting"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, prob, raw := e.do(t, "POST", base, c.body)
			if status != c.status || prob["type"] != "https://docuvault.dev/problems/"+c.typ {
				t.Errorf("got %d %s; want %d %s", status, raw, c.status, c.typ)
			}
			if d, _ := prob["detail"].(string); d == "" {
				t.Errorf("problem without detail: %s", raw)
			}
			for _, table := range []string{"cloud_connections", "audit_log", "outbox"} {
				if n := e.count(t, "select count(*) from "+table); n != 0 {
					t.Errorf("%d rows left in %s", n, table)
				}
			}
		})
	}
	req, _ := http.NewRequest("POST", base, strings.NewReader(e.s3Body("x")))
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 415 {
		t.Errorf("text/plain body: %v %v; want 415", resp, err)
	} else {
		resp.Body.Close()
	}

	// A second connection of the same name (any case) is a conflict.
	if status, _, _ := e.do(t, "POST", base, e.s3Body("Offsite")); status != 201 {
		t.Fatalf("create: %d", status)
	}
	if status, prob, _ := e.do(t, "POST", base, e.s3Body("offsite")); status != 409 || prob["type"] != "https://docuvault.dev/problems/conflict" {
		t.Errorf("same name: %d %v; want 409 conflict", status, prob)
	}
	if n := e.count(t, `select count(*) from cloud_connections`); n != 1 {
		t.Errorf("%d connections; want 1", n)
	}
	e.assertNoSecretsStored(t)
}

// The test endpoint says what is wrong, without the credentials.
func TestCloudConnectionTestReportsFailures(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t)
	base := e.srv.URL + "/api/v1/cloud-connections"
	s3 := func(name, endpoint, bucket, secret string) string {
		return `{"provider":"s3","name":"` + name + `","settings":{"endpoint":"` + endpoint + `","bucket":"` + bucket +
			`","region":"us-east-1"},"credentials":{"access_key_id":"` + e.remote.AccessKey + `","secret_access_key":"` + secret + `"}}`
	}
	readOnly := testenv.StartWebDAV(t, "alice", cloudCanary)
	readOnly.SetReadOnly(true)
	unavailable := testenv.StartWebDAV(t, "alice", cloudCanary)
	unavailable.SetUnavailable(true)
	stopped := testenv.StartWebDAV(t, "alice", cloudCanary)
	stopped.Stop()
	cases := []struct {
		name, body, failure string
	}{
		{"s3 wrong secret", s3("a", e.remote.Endpoint.HostPort, e.remote.Bucket, cloudCanary), "auth_refused"},
		{"s3 no such bucket", s3("b", e.remote.Endpoint.HostPort, "no-such-bucket-"+uuid.NewString()[:8], e.remote.SecretKey), "not_found"},
		{"s3 unreachable", s3("c", "127.0.0.1:1", e.remote.Bucket, e.remote.SecretKey), "unreachable"},
		{"webdav wrong password", e.webdavBody("d", e.dav.URL, "not-the-password"), "auth_refused"},
		{"webdav no such folder", e.webdavBody("e", e.dav.URL+"nope/", cloudCanary), "not_found"},
		{"webdav read-only", e.webdavBody("f", readOnly.URL, cloudCanary), "no_write_permission"},
		{"webdav 503", e.webdavBody("g", unavailable.URL, cloudCanary), "unreachable"},
		{"webdav stopped", e.webdavBody("h", stopped.URL, cloudCanary), "unreachable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, conn, raw := e.do(t, "POST", base, c.body)
			if status != 201 {
				t.Fatalf("create: %d %s", status, raw)
			}
			status, res, raw := e.do(t, "POST", base+"/"+conn["id"].(string)+"/test", "")
			if status != 200 || res["ok"] != false || res["failure"] != c.failure || res["detail"] == "" {
				t.Errorf("test: %d %s; want ok=false failure=%s", status, raw, c.failure)
			}
		})
	}
	e.assertNoSecretsStored(t)
}

// Connections are the owner's: two users' do not see each other.
func TestCloudConnectionsAreOwnerScoped(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t)
	other, user := e.srv.URL+"/api/v1/cloud-connections", e.userSrv.URL+"/api/v1/cloud-connections"
	status, mine, raw := e.do(t, "POST", user, e.s3Body("offsite"))
	if status != 201 || mine["user_id"] != e.user.String() {
		t.Fatalf("create as user: %d %s", status, raw)
	}
	if status, theirs, raw := e.do(t, "POST", other, e.s3Body("offsite")); status != 201 || theirs["user_id"] != e.other.String() {
		t.Errorf("the same name for another owner: %d %s; want 201, the other owner's", status, raw)
	}
	id := mine["id"].(string)
	if status, _, _ := e.do(t, "GET", other+"/"+id, ""); status != 404 {
		t.Errorf("another owner's connection: %d; want 404", status)
	}
	if status, _, _ := e.do(t, "DELETE", other+"/"+id, ""); status != 404 {
		t.Errorf("delete another owner's connection: %d; want 404", status)
	}
	for _, u := range []string{other, user} {
		if _, list, _ := e.do(t, "GET", u, ""); len(list["items"].([]any)) != 1 {
			t.Errorf("%s lists %v; want its own one", u, list["items"])
		}
	}
}

// GET /documents/{id} shows the document's sync state on each connection.
func TestDocumentShowsCloudSyncState(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t)
	_, conn, _ := e.do(t, "POST", e.srv.URL+"/api/v1/cloud-connections", e.webdavBody("nc", e.dav.URL, cloudCanary))
	status, doc := post(t, e.srv.URL+"/api/v1/documents", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), []byte("%PDF-1.4 x")}))
	if status != 202 {
		t.Fatalf("upload: %d %v", status, doc)
	}
	docURL := e.srv.URL + "/api/v1/documents/" + doc["id"].(string)
	if _, got, raw := e.do(t, "GET", docURL, ""); got["cloud_sync"] == nil || len(got["cloud_sync"].([]any)) != 0 || got["filename"] != "a.pdf" {
		t.Errorf("document without sync state: %s", raw)
	}
	if _, err := e.admin.Exec(context.Background(), `insert into cloud_sync (document_id, connection_id, status, attempts, remote_key, etag, synced_at)
		values ($1, $2, 'synced', 2, 'DocuVault/x/a.pdf', '"abc"', now())`, doc["id"], conn["id"]); err != nil {
		t.Fatal(err)
	}
	_, got, raw := e.do(t, "GET", docURL, "")
	states, _ := got["cloud_sync"].([]any)
	if len(states) != 1 {
		t.Fatalf("cloud_sync %s", raw)
	}
	s := states[0].(map[string]any)
	if s["connection_id"] != conn["id"] || s["status"] != "synced" || s["operation"] != "copy" || s["attempts"] != 2.0 ||
		s["remote_key"] != "DocuVault/x/a.pdf" || s["etag"] != `"abc"` || s["synced_at"] == nil || s["next_attempt_at"] != nil {
		t.Errorf("cloud_sync entry %v", s)
	}
}

// Setting a failing connection active again retries what had failed.
func TestReactivatingAConnectionRequeuesFailedSyncs(t *testing.T) {
	t.Parallel()
	e := newCloudEnv(t)
	_, conn, _ := e.do(t, "POST", e.srv.URL+"/api/v1/cloud-connections", e.webdavBody("nc", e.dav.URL, cloudCanary))
	_, doc := post(t, e.srv.URL+"/api/v1/documents", mpType, multipartBody(boundary, part{fileHeader("a.pdf"), []byte("%PDF-1.4 y")}))
	ctx := context.Background()
	if _, err := e.admin.Exec(ctx, `update cloud_connections set status = 'failing', last_error = 'PUT: 507' where id = $1`, conn["id"]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Exec(ctx, `insert into cloud_sync (document_id, connection_id, status, attempts, last_error, remote_key)
		values ($1, $2, 'failed', 10, 'PUT: 507', 'DocuVault/x/a.pdf')`, doc["id"], conn["id"]); err != nil {
		t.Fatal(err)
	}
	status, got, raw := e.do(t, "PATCH", e.srv.URL+"/api/v1/cloud-connections/"+conn["id"].(string), `{"status":"active"}`)
	if status != 200 || got["status"] != "active" || got["last_error"] != nil {
		t.Errorf("patch: %d %s", status, raw)
	}
	if n := e.count(t, `select count(*) from cloud_sync where status = 'pending' and attempts = 0 and next_attempt_at <= now()`); n != 1 {
		t.Errorf("%d re-queued syncs; want 1", n)
	}
}
