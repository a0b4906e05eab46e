package httpapi_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/httpserver"
	"github.com/docuvault/docuvault/internal/problem"
	"github.com/docuvault/docuvault/internal/testenv"
)

// hardEnv is the API behind the production HTTP server (httpserver.New:
// its header limits) with short timeouts, on its own database, bucket and
// Redis database.
type hardEnv struct {
	base   string // http://addr
	addr   string
	admin  *pgxpool.Pool
	blobs  *blob.Store
	bucket string
	redis  *redis.Client
	logs   *testenv.SyncBuffer

	topicID, folderID string
	readyID           string // a ready document of readyContent
}

// Timeouts of the corpus: short, so that slow clients are cut within a
// second or two.
const (
	corpusTimeout       = time.Second
	corpusUploadMax     = 6 << 20 // above blob.PartSize: a multipart upload can start
	corpusHeaderTimeout = time.Second
)

var readyContent = []byte("%PDF-1.4\n" + strings.Repeat("0123456789", 100))

func newHardEnv(t *testing.T, cfg httpapi.Config) *hardEnv {
	t.Helper()
	db := testenv.NewDB(t)
	s3 := testenv.S3(t)
	blobs, err := blob.New(s3)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := cloudsync.NewSealer(cloudSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	rdb := testenv.RedisClient(t, testenv.Redis(t))
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	cfg.DuplicatePolicy = "allow"
	h := httpapi.NewActing(httpapi.Deps{
		Config: cfg, Log: log, DB: testenv.Pool(t, db.AppURL), Redis: rdb, Blobs: blobs,
		Metrics: http.NotFoundHandler(), Cloud: cloudsync.NewConnector(sealer),
	})
	admin := testenv.Pool(t, db.AdminDSN())
	srv := httpserver.New(context.Background(), log, actAs(h, testenv.User(t, admin, "default-user@example.org")))
	srv.ReadHeaderTimeout = corpusHeaderTimeout
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	actAsHost(t, ln.Addr().String())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	})
	e := &hardEnv{base: "http://" + ln.Addr().String(), addr: ln.Addr().String(),
		admin: admin, blobs: blobs, bucket: s3.Bucket, redis: rdb, logs: logs}
	return e
}

// setUp creates what the corpus refers to: a topic, a folder and a ready
// document.
func (e *hardEnv) setUp(t *testing.T) {
	t.Helper()
	for _, x := range []struct {
		path string
		id   *string
	}{{"/api/v1/topics", &e.topicID}, {"/api/v1/folders", &e.folderID}} {
		status, out := post(t, e.base+x.path, "application/json", []byte(`{"name":"setup"}`))
		if status != http.StatusCreated {
			t.Fatalf("POST %s: %d %v", x.path, status, out)
		}
		*x.id = out["id"].(string)
	}
	status, doc := post(t, e.base+"/api/v1/documents", mpType,
		multipartBody(boundary, part{header: fileHeader("ready.pdf"), body: readyContent}))
	if status != http.StatusAccepted {
		t.Fatalf("upload: %d %v", status, doc)
	}
	e.readyID = doc["id"].(string)
	// The consumer does not run here: finalise by hand (the object stays
	// at its staging key, which the row names).
	if _, err := e.admin.Exec(context.Background(),
		`update documents set status = 'ready', finalized_at = now() where id = $1`, e.readyID); err != nil {
		t.Fatal(err)
	}
}

// snapshot counts what requests may leave behind: rows, objects (staged
// ones included), unfinished multipart uploads and Redis keys.
func (e *hardEnv) snapshot(t *testing.T) map[string]int {
	t.Helper()
	ctx := context.Background()
	out := map[string]int{}
	for _, table := range []string{"documents", "topics", "folders", "cloud_connections", "audit_log", "outbox"} {
		var n int
		if err := e.admin.QueryRow(ctx, "select count(*) from "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	for obj := range e.blobs.Client().ListObjects(ctx, e.bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		out["objects"]++
		if strings.HasPrefix(obj.Key, "staging/") {
			out["staged"]++
		}
	}
	for up := range e.blobs.Client().ListIncompleteUploads(ctx, e.bucket, "", true) {
		if up.Err != nil {
			t.Fatal(up.Err)
		}
		out["unfinished_uploads"]++
	}
	keys, err := e.redis.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	out["redis_keys"] = int(keys)
	return out
}

// reply is an answer, from the HTTP client or read off a raw connection.
type reply struct {
	status int
	header http.Header
	body   []byte
	closed bool // the server closes the connection after it
}

func (r *reply) String() string {
	if r == nil {
		return "no answer"
	}
	return fmt.Sprintf("%d %s %s", r.status, r.header.Get("Content-Type"), bytes.TrimSpace(r.body))
}

func (r *reply) json(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %s", err, r)
	}
	return out
}

// send makes a request with the HTTP client (its exchange is validated
// against api/openapi.yaml); headers are name, value pairs.
func send(t *testing.T, method, url, contentType string, body []byte, headers ...string) *reply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: raw}
}

// rawRequest is an HTTP/1.1 request as bytes, for what no client library
// sends. Content-Length is the body's unless headers ("Name: value") set
// it or Transfer-Encoding; the server closes the connection after it.
func rawRequest(method, target string, headers []string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: docuvault.test\r\nConnection: close\r\n", method, target)
	framed := false
	for _, h := range headers {
		name, _, _ := strings.Cut(h, ":")
		if strings.EqualFold(name, "Content-Length") || strings.EqualFold(name, "Transfer-Encoding") {
			framed = true
		}
		b.WriteString(h + "\r\n")
	}
	if !framed && (body != nil || method == http.MethodPost) {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// exchange sends head on a new connection, then drip one byte every
// interval, while reading the answer. It returns the first response (nil
// when the connection closed without one) and how long it took. Nothing
// in it waits more than 20 s.
func exchange(t *testing.T, addr string, head, drip []byte, every time.Duration) (*reply, time.Duration) {
	t.Helper()
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(start.Add(20 * time.Second))
	got := make(chan *reply, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			got <- nil
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- &reply{status: resp.StatusCode, header: resp.Header, body: body, closed: resp.Close}
	}()
	// A write may fail once the server has answered and closed: the
	// answer is what counts.
	if _, err := conn.Write(head); err == nil {
	drip:
		for i := range drip {
			select {
			case r := <-got:
				return r, time.Since(start)
			case <-time.After(every):
			}
			if _, err := conn.Write(drip[i : i+1]); err != nil {
				break drip
			}
		}
	}
	r := <-got
	return r, time.Since(start)
}

// halfClose sends req, closes the connection's sending side (the server
// reads the end of the body there) and returns the answer.
func halfClose(t *testing.T, addr string, req []byte) *reply {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &reply{status: resp.StatusCode, header: resp.Header, body: body, closed: resp.Close}
}

func raw(t *testing.T, e *hardEnv, req []byte) *reply {
	t.Helper()
	r, _ := exchange(t, e.addr, req, nil, 0)
	return r
}

// uploadHead is the start of a raw upload: the request head and body
// start, with Content-Length declared.
func uploadHead(contentLength int, body []byte, headers ...string) []byte {
	headers = append([]string{"Content-Type: " + mpType, fmt.Sprintf("Content-Length: %d", contentLength)}, headers...)
	return rawRequest(http.MethodPost, "/api/v1/documents", headers, body)
}

func filePart(filename string, content []byte) part {
	return part{header: fileHeader(filename), body: content}
}

func field(name, value string) part { return part{header: fieldHeader(name), body: []byte(value)} }

var pdf = []byte("%PDF-1.4\n" + strings.Repeat("x", 1000))

// bomb is a small compressed stream of n zero bytes written by newWriter.
func bomb(t *testing.T, n int, newWriter func(io.Writer) io.WriteCloser) []byte {
	t.Helper()
	var b bytes.Buffer
	w := newWriter(&b)
	zeros := make([]byte, 1<<20)
	for range n >> 20 {
		if _, err := w.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zipBomb(t *testing.T) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, err := zw.Create("report.pdf")
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for range 64 { // 64 MiB when unpacked
		_, _ = w.Write(zeros)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// leaves is what an accepted request adds to the snapshot.
type leaves map[string]int

var (
	oneUpload = leaves{"documents": 1, "audit_log": 1, "outbox": 1, "objects": 1, "staged": 1}
	oneTopic  = leaves{"topics": 1, "audit_log": 1, "outbox": 1}
)

// hostile is one case of the corpus.
type hostile struct {
	name string
	send func(t *testing.T, e *hardEnv) *reply
	// status is the answer's; 0: the server closes without one.
	status int
	// typ is the problem type; "" when net/http itself answers (no
	// problem) or the request is accepted.
	typ    string
	leaves leaves // what an accepted request stores; nothing otherwise
	check  func(t *testing.T, e *hardEnv, r *reply)
}

// uploadOf posts a multipart body of parts with the HTTP client.
func uploadOf(parts ...part) func(t *testing.T, e *hardEnv) *reply {
	return func(t *testing.T, e *hardEnv) *reply {
		return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, multipartBody(boundary, parts...))
	}
}

// storedFile checks an accepted upload's document: its filename,
// content type and size, in the answer and in the database.
func storedFile(filename, contentType string, size int) func(t *testing.T, e *hardEnv, r *reply) {
	return func(t *testing.T, e *hardEnv, r *reply) {
		doc := r.json(t)
		var gotName, gotType string
		var gotSize int
		if err := e.admin.QueryRow(context.Background(), `select filename, content_type, size_bytes from documents where id = $1`,
			doc["id"]).Scan(&gotName, &gotType, &gotSize); err != nil {
			t.Fatal(err)
		}
		if gotName != filename || doc["filename"] != filename || !utf8.ValidString(gotName) {
			t.Errorf("stored filename %q (answered %q); want %q", gotName, doc["filename"], filename)
		}
		if gotType != contentType || gotSize != size {
			t.Errorf("stored %s, %d bytes; want %s, %d bytes", gotType, gotSize, contentType, size)
		}
	}
}

func corpus(t *testing.T) []hostile {
	const tooLong = 100 << 10
	mp := multipartBody(boundary, filePart("a.pdf", pdf))
	closing := []byte("--" + boundary + "--\r\n")
	withoutClose := bytes.TrimSuffix(mp, closing)                                // ends "\r\n" after the file's content
	afterDelimiter := append(bytes.Clone(withoutClose), "--"+boundary+"\r\n"...) // a part begins, then nothing
	cutInHeader := append(bytes.Clone(afterDelimiter), `Content-Disposition: form-data; name="topic_id"`...)
	fileThenStall := append(multipartHead(filePart("big.pdf", nil)), bytes.Repeat([]byte("x"), 11<<19)...) // 5.5 MiB
	zipped := zipBomb(t)
	pdfBomb := append([]byte("%PDF-1.7\n1 0 obj <</Length 99999999999 /Filter /FlateDecode>> stream\n"),
		bomb(t, 64<<20, func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })...)
	pdfBomb = append(pdfBomb, "\nendstream endobj\n%%EOF\n"...)
	gz := bomb(t, 64<<20, func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
	nested := []byte("--inner\r\nContent-Type: text/plain\r\n\r\nhello\r\n--inner--\r\n")
	sql := `Robert'); DROP TABLE documents; --`
	flood := make([]string, 3000)
	for i := range flood {
		flood[i] = fmt.Sprintf("X-Flood-%04d: %s", i, strings.Repeat("f", 20))
	}

	return []hostile{
		// --- Uploads: content type and multipart framing
		{name: "upload without a Content-Type", status: 415, typ: "unsupported-media-type",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", "", mp)
			}},
		{name: "multipart without a boundary", status: 415, typ: "unsupported-media-type",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", "multipart/form-data", mp)
			}},
		{name: "multipart with an empty boundary", status: 415, typ: "unsupported-media-type",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", `multipart/form-data; boundary=""`, mp)
			}},
		{name: "body framed by another boundary", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", "multipart/form-data; boundary=other", mp)
			}},
		{name: "garbage body", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, []byte("\x00\xff garbage \r\n--"))
			}},
		{name: "empty body", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, nil)
			}},
		{name: "only the closing boundary", status: 400, typ: "missing-file",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, closing)
			}},
		{name: "file part without a closing boundary", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, withoutClose)
			}},
		{name: "body ends right after a part delimiter", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, afterDelimiter)
			}},
		{name: "body ends inside a part's header", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, cutInHeader)
			}},
		{name: "two file parts", status: 400, typ: "invalid-multipart",
			send: uploadOf(filePart("a.pdf", pdf), filePart("b.pdf", pdf))},
		{name: "title twice", status: 400, typ: "invalid-multipart",
			send: uploadOf(field("title", "a"), field("title", "b"), filePart("a.pdf", pdf))},
		{name: "part without a name", status: 400, typ: "invalid-multipart",
			send: uploadOf(part{header: "Content-Disposition: form-data", body: []byte("x")}, filePart("a.pdf", pdf))},
		{name: "unknown part", status: 400, typ: "unknown-field",
			send: uploadOf(filePart("a.pdf", pdf), field("user_id", "0190a5c8-0000-7000-8000-000000000000"))},
		{name: "part header of 100 KiB", status: 400, typ: "invalid-multipart",
			send: uploadOf(filePart(strings.Repeat("n", tooLong)+".pdf", pdf))},
		{name: "part header of 5000 lines", status: 400, typ: "invalid-multipart",
			send: uploadOf(part{header: fileHeader("a.pdf") + strings.Repeat("\r\nX-Pad: 0123456789", 5000), body: pdf})},
		{name: "preamble of 1 MiB", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType,
					append(bytes.Repeat([]byte("preamble \r\n"), 100_000), mp...))
			}},
		{name: "empty file (staged, then removed)", status: 400, typ: "empty-file",
			send: uploadOf(filePart("a.pdf", nil))},
		{name: "file over UPLOAD_MAX_BYTES (multipart upload started, then aborted)", status: 413, typ: "too-large",
			send: uploadOf(filePart("big.pdf", bytes.Repeat([]byte("x"), corpusUploadMax+100<<10)))},
		{name: "Content-Length over the limit, body never sent", status: 413, typ: "too-large",
			send: func(t *testing.T, e *hardEnv) *reply { return raw(t, e, uploadHead(1<<30, nil)) }},
		{name: "Expect: 100-continue with a Content-Length over the limit", status: 413, typ: "too-large",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, uploadHead(1<<30, nil, "Expect: 100-continue"))
			}},
		{name: "Content-Length shorter than the body: cut inside the file", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply { return raw(t, e, uploadHead(len(mp)/2, mp)) }},
		{name: "Content-Length shorter than the body: cut inside a trailing part's header", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				full := multipartBody(boundary, filePart("a.pdf", pdf), field("title", "cut off"))
				return raw(t, e, uploadHead(bytes.Index(full, []byte(`; name="title"`)), full))
			}},
		{name: "Content-Length longer than the body (stalls)", status: 408, typ: "request-timeout",
			send: func(t *testing.T, e *hardEnv) *reply { return raw(t, e, uploadHead(len(mp)+1000, mp)) }},
		{name: "slow loris: a byte every 100 ms", status: 408, typ: "request-timeout",
			send: func(t *testing.T, e *hardEnv) *reply {
				r, took := exchange(t, e.addr, uploadHead(len(mp), nil), mp, 100*time.Millisecond)
				if took > 10*time.Second {
					t.Errorf("cut after %s", took)
				}
				return r
			}},
		{name: "client half-closes inside the file (truncated body)", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return halfClose(t, e.addr, uploadHead(len(mp), mp[:len(mp)-100]))
			}},
		{name: "client half-closes inside a large file (multipart upload started)", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return halfClose(t, e.addr, uploadHead(len(fileThenStall)+1000, fileThenStall))
			}},
		{name: "stalls after 5.5 MiB (multipart upload started, then aborted)", status: 408, typ: "request-timeout",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, uploadHead(len(fileThenStall)+1000, fileThenStall))
			}},
		{name: "malformed chunked encoding", status: 400, typ: "invalid-multipart",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodPost, "/api/v1/documents",
					[]string{"Content-Type: " + mpType, "Transfer-Encoding: chunked"}, []byte("10\r\n--"+boundary+"\r\nzz\r\n")))
			}},
		{name: "title not UTF-8", status: 400, typ: "invalid-field",
			send: uploadOf(field("title", "caf\xe9"), filePart("a.pdf", pdf))},
		{name: "title with NUL", status: 400, typ: "invalid-field",
			send: uploadOf(field("title", "a\x00b"), filePart("a.pdf", pdf))},
		{name: "title of 5000 bytes", status: 400, typ: "invalid-field",
			send: uploadOf(field("title", strings.Repeat("t", 5000)), filePart("a.pdf", pdf))},
		{name: "SQL in topic_id", status: 400, typ: "invalid-field",
			send: uploadOf(field("topic_id", "' OR 1=1 --"), filePart("a.pdf", pdf))},
		{name: "topic_id of no topic (staged, then removed)", status: 422, typ: "unknown-topic",
			send: uploadOf(filePart("a.pdf", pdf), field("topic_id", "0190a5c8-0000-7000-8000-000000000000"))},
		{name: "Idempotency-Key of 300 characters", status: 400, typ: "invalid-idempotency-key",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, mp, "Idempotency-Key", strings.Repeat("k", 300))
			}},
		{name: "two Idempotency-Key headers", status: 400, typ: "invalid-idempotency-key",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, mp, "Idempotency-Key", "a", "Idempotency-Key", "b")
			}},
		{name: "Idempotency-Key with non-ASCII bytes", status: 400, typ: "invalid-idempotency-key",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, uploadHead(len(mp), mp, "Idempotency-Key: k\xffey"))
			}},

		// --- Uploads that are odd but valid: stored, sanitised
		{name: "RTL-override filename", status: 202, leaves: oneUpload,
			send:  uploadOf(filePart("invoice\u202efdp.exe", pdf)),
			check: storedFile("invoicefdp.exe", "application/pdf", len(pdf))},
		{name: "filename not UTF-8", status: 202, leaves: oneUpload,
			send:  uploadOf(filePart("r\xe9sum\xe9.pdf", pdf)),
			check: storedFile("r_sum_.pdf", "application/pdf", len(pdf))},
		{name: "path traversal in the filename", status: 202, leaves: oneUpload,
			send:  uploadOf(filePart("../../../etc/passwd", pdf)),
			check: storedFile("passwd", "application/pdf", len(pdf))},
		{name: "Windows path traversal in the filename", status: 202, leaves: oneUpload,
			send:  uploadOf(filePart(`..\\..\\boot.ini`, pdf)),
			check: storedFile("boot.ini", "application/pdf", len(pdf))},
		{name: "SQL in the title and filename", status: 202, leaves: oneUpload,
			send: uploadOf(field("title", sql), filePart(sql+".pdf", pdf)),
			check: func(t *testing.T, e *hardEnv, r *reply) {
				storedFile(sql+".pdf", "application/pdf", len(pdf))(t, e, r)
				if title := r.json(t)["title"]; title != sql {
					t.Errorf("title %q; want it verbatim", title)
				}
			}},
		{name: "zip bomb named report.pdf (nothing unpacked)", status: 202, leaves: oneUpload,
			send:  uploadOf(filePart("report.pdf", zipped)),
			check: storedFile("report.pdf", "application/zip", len(zipped))},
		{name: "PDF with a deflate bomb stream", status: 202, leaves: oneUpload,
			send:  uploadOf(filePart("bomb.pdf", pdfBomb)),
			check: storedFile("bomb.pdf", "application/pdf", len(pdfBomb))},
		{name: "gzip bomb sent with Content-Encoding: gzip (stored as sent)", status: 202, leaves: oneUpload,
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType,
					multipartBody(boundary, filePart("notes.txt", gz)), "Content-Encoding", "gzip")
			},
			check: storedFile("notes.txt", "application/x-gzip", len(gz))},
		{name: "multipart nested in the file part (stored as bytes)", status: 202, leaves: oneUpload,
			send: uploadOf(part{header: "Content-Disposition: form-data; name=\"file\"; filename=\"n.txt\"\r\n" +
				"Content-Type: multipart/mixed; boundary=inner", body: nested}),
			check: storedFile("n.txt", "text/plain; charset=utf-8", len(nested))},

		// --- JSON bodies
		{name: "topic with an unknown field", status: 400, typ: "invalid-json",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json", []byte(`{"name":"a","user_id":null}`))
			}},
		{name: "topic name of the wrong type", status: 400, typ: "invalid-json",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json", []byte(`{"name":42}`))
			}},
		{name: "two JSON values", status: 400, typ: "invalid-json",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json", []byte(`{"name":"a"} {"name":"b"}`))
			}},
		{name: "JSON value followed by a stray brace", status: 400, typ: "invalid-json",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json", []byte(`{"name":"a"}}`))
			}},
		{name: "JSON nested 20000 deep", status: 400, typ: "invalid-json",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json",
					[]byte(`{"name":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`}`))
			}},
		{name: "JSON body of 100 KiB", status: 413, typ: "too-large",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json",
					[]byte(`{"name":"`+strings.Repeat("a", tooLong)+`"}`))
			}},
		{name: "JSON Content-Length of 10 GB, body never sent", status: 413, typ: "too-large",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodPost, "/api/v1/topics",
					[]string{"Content-Type: application/json", "Content-Length: 10000000000"}, nil))
			}},
		{name: "JSON body that stalls", status: 408, typ: "request-timeout",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodPost, "/api/v1/topics",
					[]string{"Content-Type: application/json", "Content-Length: 100"}, []byte(`{"name":`)))
			}},
		{name: "JSON body with broken chunked encoding", status: 400, typ: "unreadable-body",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodPost, "/api/v1/topics",
					[]string{"Content-Type: application/json", "Transfer-Encoding: chunked"}, []byte("4\r\n{\"na\r\nxyz\r\n")))
			}},
		{name: "topic sent as text/plain", status: 415, typ: "unsupported-media-type",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "text/plain", []byte(`{"name":"a"}`))
			}},
		{name: "topic name with NUL", status: 400, typ: "invalid-field",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json", []byte(`{"name":"a\u0000b"}`))
			}},
		{name: "SQL in a topic name (stored verbatim)", status: 201, leaves: oneTopic,
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/topics", "application/json", jsonBody(t, map[string]string{"name": sql}))
			},
			check: func(t *testing.T, e *hardEnv, r *reply) {
				var name string
				if err := e.admin.QueryRow(context.Background(), `select name from topics where id = $1`, r.json(t)["id"]).Scan(&name); err != nil || name != sql {
					t.Errorf("stored name %q (%v); want %q", name, err, sql)
				}
			}},
		{name: "User-Agent not UTF-8 (recorded sanitised)", status: 201, leaves: oneTopic,
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodPost, "/api/v1/topics",
					[]string{"Content-Type: application/json", "User-Agent: agent\xff\xfe"}, []byte(`{"name":"from a strange agent"}`)))
			},
			check: func(t *testing.T, e *hardEnv, r *reply) {
				var ua string
				if err := e.admin.QueryRow(context.Background(), `select user_agent from audit_log where aggregate_id = $1`,
					r.json(t)["id"]).Scan(&ua); err != nil || ua != "agent\ufffd" {
					t.Errorf("audit user_agent %q (%v); want %q", ua, err, "agent\ufffd")
				}
			}},
		{name: "topic rename with a name of the wrong type", status: 400, typ: "invalid-json",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPatch, e.base+"/api/v1/topics/"+e.topicID, "application/json", []byte(`{"name":["a"]}`))
			}},
		{name: "folder parent_id not a UUID", status: 400, typ: "invalid-json",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/folders", "application/json", []byte(`{"name":"a","parent_id":"../../"}`))
			}},
		{name: "folder parent_id of no folder", status: 422, typ: "unknown-folder",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/folders", "application/json",
					[]byte(`{"name":"a","parent_id":"0190a5c8-0000-7000-8000-000000000000"}`))
			}},
		{name: "folder moved under itself", status: 409, typ: "folder-cycle",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPatch, e.base+"/api/v1/folders/"+e.folderID, "application/json",
					[]byte(`{"parent_id":"`+e.folderID+`"}`))
			}},
		{name: "cloud connection settings of the wrong type", status: 400, typ: "invalid-field",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/cloud-connections", "application/json",
					[]byte(`{"provider":"webdav","name":"a","settings":"http://x/","credentials":{"username":"u","password":"p"}}`))
			}},
		{name: "cloud connection credentials with an unknown field", status: 400, typ: "invalid-field",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/cloud-connections", "application/json",
					[]byte(`{"provider":"webdav","name":"a","settings":{"url":"http://dav.test/"},"credentials":{"username":"u","password":"p","token":"t"}}`))
			}},
		{name: "cloud connection of an unknown provider", status: 422, typ: "invalid-setting",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/cloud-connections", "application/json",
					[]byte(`{"provider":"ftp","name":"a","settings":{},"credentials":{}}`))
			}},
		{name: "WebDAV URL with an encoded NUL", status: 422, typ: "invalid-setting",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/cloud-connections", "application/json",
					[]byte(`{"provider":"webdav","name":"a","settings":{"url":"http://dav.test/a%00b/"},"credentials":{"username":"u","password":"p"}}`))
			}},
		{name: "S3 endpoint with NUL", status: 422, typ: "invalid-setting",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/cloud-connections", "application/json",
					[]byte(`{"provider":"s3","name":"a","settings":{"endpoint":"s3.test\u0000:9000","bucket":"abc"},"credentials":{"access_key_id":"k","secret_access_key":"s"}}`))
			}},
		{name: "SQL in a cloud connection's name and prefix (stored verbatim)", status: 201,
			leaves: leaves{"cloud_connections": 1, "audit_log": 1, "outbox": 1},
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPost, e.base+"/api/v1/cloud-connections", "application/json", jsonBody(t, map[string]any{
					"provider": "webdav", "name": sql, "settings": map[string]string{"url": "http://dav.test/", "prefix": sql},
					"credentials": map[string]string{"username": "u", "password": "p"}}))
			},
			check: func(t *testing.T, e *hardEnv, r *reply) {
				if c := r.json(t); c["name"] != sql {
					t.Errorf("name %q; want it verbatim", c["name"])
				}
			}},

		// --- Query parameters and paths
		{name: "negative limit", status: 400, typ: "invalid-parameter",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents?limit=-1", "", nil)
			}},
		{name: "limit beyond int64", status: 400, typ: "invalid-parameter",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/topics?limit=99999999999999999999999", "", nil)
			}},
		{name: "cursor of 60 KiB", status: 400, typ: "invalid-cursor",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/folders?cursor="+strings.Repeat("A", 60<<10), "", nil)
			}},
		{name: "audit cursor of a negative sequence", status: 400, typ: "invalid-cursor",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/audit?cursor=_____________w", "", nil)
			}},
		{name: "SQL in the status filter", status: 400, typ: "invalid-parameter",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents?status=%27%20OR%201%3D1%20--", "", nil)
			}},
		{name: "SQL in the topic_id filter", status: 400, typ: "invalid-parameter",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents?topic_id=1%27%3B%20DROP%20TABLE%20topics%3B", "", nil)
			}},
		{name: "SQL in the audit type filter (matches nothing)", status: 200,
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/audit?type=%27%20OR%20%271%27%3D%271", "", nil)
			},
			check: func(t *testing.T, e *hardEnv, r *reply) {
				if items := r.json(t)["items"].([]any); len(items) != 0 {
					t.Errorf("%d events; want none", len(items))
				}
			}},
		{name: "audit type filter not UTF-8", status: 400, typ: "invalid-parameter",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/audit?type=%FF%FE", "", nil)
			}},
		{name: "audit type filter with NUL", status: 400, typ: "invalid-parameter",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/audit?type=a%00b", "", nil)
			}},
		{name: "audit since not a time", status: 400, typ: "invalid-parameter",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/audit?since=yesterday", "", nil)
			}},
		{name: "encoded path traversal in an id", status: 404, typ: "not-found",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents/..%2F..%2Fetc%2Fpasswd", "", nil)
			}},
		{name: "raw path traversal", status: 404, typ: "not-found",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodGet, "/api/v1/documents/../../../etc/passwd", nil, nil))
			}},
		{name: "SQL in an id", status: 404, typ: "not-found",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodDelete, e.base+"/api/v1/folders/%27%20OR%201%3D1%20--", "", nil)
			}},

		// --- Methods
		{name: "PUT on the documents", status: 405, typ: "method-not-allowed",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodPut, e.base+"/api/v1/documents", mpType, mp)
			}},
		{name: "TRACE on the topics", status: 405, typ: "method-not-allowed",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodTrace, e.base+"/api/v1/topics", "", nil)
			}},
		{name: "made-up method", status: 405, typ: "method-not-allowed",
			send: func(t *testing.T, e *hardEnv) *reply { return send(t, "BREW", e.base+"/api/v1/folders", "", nil) }},

		// --- Downloads
		{name: "range beyond the content", status: 416, typ: "range-not-satisfiable",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents/"+e.readyID+"/content", "", nil, "Range", "bytes=99999999999999-")
			}},
		{name: "range that ends before it starts", status: 416, typ: "range-not-satisfiable",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents/"+e.readyID+"/content", "", nil, "Range", "bytes=50-10")
			}},
		{name: "range in an unknown unit", status: 416, typ: "range-not-satisfiable",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents/"+e.readyID+"/content", "", nil, "Range", "pages=1-2")
			}},
		{name: "3000 overlapping ranges (the whole content instead)", status: 200,
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents/"+e.readyID+"/content", "", nil,
					"Range", "bytes="+strings.TrimSuffix(strings.Repeat("0-999,", 3000), ","))
			},
			check: func(t *testing.T, e *hardEnv, r *reply) {
				if !bytes.Equal(r.body, readyContent) {
					t.Errorf("%d bytes; want the whole content", len(r.body))
				}
			}},
		{name: "If-Match that does not match", status: 412, typ: "precondition-failed",
			send: func(t *testing.T, e *hardEnv) *reply {
				return send(t, http.MethodGet, e.base+"/api/v1/documents/"+e.readyID+"/content", "", nil, "If-Match", `"nope"`)
			}},

		// --- Headers and bodies net/http frames
		{name: "header flood (3000 headers)", status: 431,
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodGet, "/readyz", flood, nil))
			},
			check: func(t *testing.T, e *hardEnv, r *reply) {
				if !r.closed || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
					t.Errorf("431 from net/http: %s, closing the connection: %v; want plain text, closed", r, r.closed)
				}
			}},
		{name: "cookie of 100 KiB", status: 431,
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodGet, "/api/v1/documents", []string{"Cookie: c=" + strings.Repeat("c", tooLong)}, nil))
			}},
		{name: "slow loris in the header (closed without an answer)", status: 0,
			send: func(t *testing.T, e *hardEnv) *reply {
				r, took := exchange(t, e.addr, []byte("GET /readyz HTTP/1.1\r\nHost: x\r\n"),
					bytes.Repeat([]byte("X-Slow: 1\r\n"), 200), 50*time.Millisecond)
				if took > corpusHeaderTimeout+5*time.Second {
					t.Errorf("header cut after %s; want about %s", took, corpusHeaderTimeout)
				}
				return r
			}},
		{name: "GET with a body that stalls", status: 408, typ: "request-timeout",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodGet, "/api/v1/documents", []string{"Content-Length: 50"}, []byte("x")))
			}},
		{name: "GET with a body of 100 KiB", status: 413, typ: "too-large",
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodGet, "/api/v1/topics", nil, bytes.Repeat([]byte("b"), tooLong)))
			}},
		{name: "GET with a body of 1 KiB (read and dropped)", status: 200,
			send: func(t *testing.T, e *hardEnv) *reply {
				return raw(t, e, rawRequest(http.MethodGet, "/api/v1/topics", nil, bytes.Repeat([]byte("b"), 1<<10)))
			}},
	}
}

// multipartHead is a multipart body's start up to the first part's
// content.
func multipartHead(p part) []byte {
	return []byte(fmt.Sprintf("--%s\r\n%s\r\n\r\n", boundary, p.header))
}

// TestHostileRequests sends the corpus, one case at a time, to one server:
// each gets its answer (a problem of the right type, unless net/http
// answers first), the server stays ready, and a refused request leaves
// nothing behind: no row, no object (staged or not), no unfinished
// multipart upload, no Redis key. Accepted ones store exactly one thing.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	e := newHardEnv(t, httpapi.Config{UploadMaxBytes: corpusUploadMax, BodyTimeout: corpusTimeout,
		StallTimeout: corpusTimeout, UploadConcurrencyPerClient: 4})
	e.setUp(t)
	cases := corpus(t)
	if len(cases) < 40 {
		t.Fatalf("the corpus has %d cases; want at least 40", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.snapshot(t)
			logged := len(e.logs.String())
			r := c.send(t, e)
			switch {
			case c.status == 0 && r != nil:
				t.Errorf("answered %s; want the connection closed without an answer", r)
			case c.status == 0:
			case r == nil:
				t.Fatalf("no answer; want %d", c.status)
			case r.status != c.status:
				t.Errorf("answered %s; want %d %s", r, c.status, c.typ)
			case c.typ != "":
				var p problem.Details
				_ = json.Unmarshal(r.body, &p)
				if r.header.Get("Content-Type") != "application/problem+json" || p.Type != problem.TypeBase+c.typ ||
					p.Status != c.status || p.Detail == "" {
					t.Errorf("answered %s; want a %s problem", r, c.typ)
				}
			}
			if c.check != nil && r != nil && r.status == c.status {
				c.check(t, e, r)
			}
			if r := send(t, http.MethodGet, e.base+"/readyz", "", nil); r.status != http.StatusOK {
				t.Errorf("GET /readyz afterwards: %s", r)
			}
			after := e.snapshot(t)
			for k := range after {
				if after[k]-before[k] != c.leaves[k] {
					t.Errorf("%s: %d before, %d after; want %+d", k, before[k], after[k], c.leaves[k])
				}
			}
			if errs := errorLines(e.logs.String()[logged:]); len(errs) > 0 {
				t.Errorf("the server logged errors:\n%s", strings.Join(errs, "\n"))
			}
		})
	}
}

func errorLines(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=ERROR") {
			out = append(out, line)
		}
	}
	return out
}

func jsonBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
