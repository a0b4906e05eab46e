package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/docuvault/docuvault/internal/httpapi"
)

// A client may send UploadConcurrencyPerClient uploads at once: one more
// is answered 429 with Retry-After, before its body is read, and stores
// nothing; once one finishes, the next is accepted.
func TestUploadsPerClientAreCapped(t *testing.T) {
	t.Parallel()
	e := newHardEnv(t, httpapi.Config{UploadMaxBytes: 1 << 20, UploadConcurrencyPerClient: 2, StallTimeout: 30 * time.Second})
	mp := multipartBody(boundary, filePart("a.pdf", pdf))

	// Two uploads in flight: their head and half their body sent, the rest
	// held back.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(uploadHead(len(mp), mp[:len(mp)/2])); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// Wait until both hold their slot: a body the server refuses anyway
	// (empty) is answered 400 until then, 429 from then on.
	eventuallyStatus(t, http.StatusTooManyRequests, func() *reply {
		return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, nil)
	})
	before := e.snapshot(t)
	r := send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, mp)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "5" || !bytes.Contains(r.body, []byte("too-many-uploads")) {
		t.Fatalf("third upload at once: %s, Retry-After %q; want a 429 too-many-uploads problem with Retry-After 5", r, r.header.Get("Retry-After"))
	}
	// Other requests of the client are not limited.
	if r := send(t, http.MethodGet, e.base+"/api/v1/documents", "", nil); r.status != http.StatusOK {
		t.Errorf("a list while uploads are in flight: %s", r)
	}
	if after := e.snapshot(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused upload stored something: %v, then %v", before, after)
	}

	// One held upload finishes: its slot frees.
	if _, err := held[0].Write(mp[len(mp)/2:]); err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, http.StatusAccepted, func() *reply {
		return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, mp)
	})
}

// eventuallyStatus repeats do until it is answered want (within 10 s).
func eventuallyStatus(t *testing.T, want int, do func() *reply) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := do()
		if r.status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still answered %s after 10 s; want %d", r, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A download whose client stops reading is cut once StallTimeout passes
// without progress, instead of holding its handler and object stream for
// ever; one that reads on gets everything.
func TestStalledDownloadIsCut(t *testing.T) {
	t.Parallel()
	const size = 24 << 20 // more than the socket buffers hold
	e := newHardEnv(t, httpapi.Config{UploadMaxBytes: size, StallTimeout: time.Second})
	content := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	r := send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, multipartBody(boundary, filePart("big.bin", content)))
	if r.status != http.StatusAccepted {
		t.Fatalf("upload: %s", r)
	}
	id := r.json(t)["id"].(string)
	if _, err := e.admin.Exec(context.Background(), `update documents set status = 'ready', finalized_at = now() where id = $1`, id); err != nil {
		t.Fatal(err)
	}

	// A small receive buffer, so that the server's writes block soon.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		_ = c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
		return err
	}}
	conn, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(rawRequest(http.MethodGet, "/api/v1/documents/"+id+"/content", nil, nil)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // reads nothing for three stall timeouts
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, _ := io.Copy(io.Discard, conn)
	if got >= size {
		t.Errorf("a stalled download got all its %d bytes; want it cut", got)
	}

	// The server stays ready, and a reading client gets the whole content.
	if r := send(t, http.MethodGet, e.base+"/readyz", "", nil); r.status != http.StatusOK {
		t.Errorf("GET /readyz: %s", r)
	}
	r = send(t, http.MethodGet, e.base+"/api/v1/documents/"+id+"/content", "", nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, content) {
		t.Errorf("download: %d, %d bytes; want 200 and %d bytes", r.status, len(r.body), size)
	}
}

// A request whose body takes longer than ResponseTimeout (but arrives
// within its own limits) still gets its answer, accepted or refused.
func TestSlowBodiesGetTheirAnswer(t *testing.T) {
	t.Parallel()
	e := newHardEnv(t, httpapi.Config{UploadMaxBytes: 1 << 20, ResponseTimeout: 300 * time.Millisecond,
		BodyTimeout: 5 * time.Second, StallTimeout: 5 * time.Second})
	mp := multipartBody(boundary, filePart("a.pdf", pdf))
	closing := []byte("--" + boundary + "--\r\n")
	for _, c := range []struct {
		name   string
		head   []byte
		body   []byte
		status int
	}{
		{"upload", uploadHead(len(mp), nil), mp, http.StatusAccepted},
		{"upload refused after its body", uploadHead(len(mp)-len(closing), nil), bytes.TrimSuffix(mp, closing), http.StatusBadRequest},
		{"JSON", rawRequest(http.MethodPost, "/api/v1/topics", []string{"Content-Type: application/json", "Content-Length: 15"}, nil),
			[]byte(`{"name":"slow"}`), http.StatusCreated},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The body in ten pieces over a second: three ResponseTimeouts.
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := conn.Write(c.head); err != nil {
				t.Fatal(err)
			}
			step := (len(c.body) + 9) / 10
			for rest := c.body; len(rest) > 0; rest = rest[min(step, len(rest)):] {
				time.Sleep(100 * time.Millisecond)
				if _, err := conn.Write(rest[:min(step, len(rest))]); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("answered %d; want %d", resp.StatusCode, c.status)
			}
		})
	}
}
