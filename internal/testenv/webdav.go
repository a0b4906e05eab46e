package testenv

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/webdav"
)

// WebDAV is a real WebDAV server (golang.org/x/net/webdav, in memory)
// served on loopback behind HTTP basic authentication, with switches to
// make it fail: stopped (connections refused), unavailable (503) or
// read-only (403 on writes).
type WebDAV struct {
	// URL is the collection cloud connections point at (ends with /).
	URL      string
	User     string
	Password string
	// FS holds what clients stored; paths are relative to URL, with a
	// leading slash.
	FS webdav.FileSystem

	t           testing.TB
	addr        string
	handler     http.Handler
	unavailable atomic.Bool
	readOnly    atomic.Bool
	puts        atomic.Int64

	mu  sync.Mutex
	srv *http.Server
}

// StartWebDAV starts a WebDAV server for the test, stopped when it ends.
func StartWebDAV(t testing.TB, user, password string) *WebDAV {
	t.Helper()
	d := &WebDAV{User: user, Password: password, FS: webdav.NewMemFS(), t: t}
	dav := &webdav.Handler{Prefix: "/dav", FileSystem: d.FS, LockSystem: webdav.NewMemLS()}
	d.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.unavailable.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		u, p, ok := r.BasicAuth()
		if !ok || u != d.User || p != d.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		switch r.Method {
		case http.MethodPut, "MKCOL", http.MethodDelete, "MOVE", "COPY", "PROPPATCH":
			if d.readOnly.Load() {
				http.Error(w, "read-only", http.StatusForbidden)
				return
			}
		}
		if r.Method == http.MethodPut {
			d.puts.Add(1)
		}
		dav.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.addr = ln.Addr().String()
	d.URL = "http://" + d.addr + "/dav/"
	d.serve(ln)
	t.Cleanup(d.Stop)
	return d
}

func (d *WebDAV) serve(ln net.Listener) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srv = &http.Server{Handler: d.handler}
	srv := d.srv
	go func() { _ = srv.Serve(ln) }()
}

// Stop closes the listener and every connection: clients get "connection
// refused" until Start.
func (d *WebDAV) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.srv != nil {
		_ = d.srv.Close()
		d.srv = nil
	}
}

// Start serves again on the same address.
func (d *WebDAV) Start() {
	d.t.Helper()
	ln, err := net.Listen("tcp", d.addr)
	if err != nil {
		d.t.Fatalf("listen again on %s: %v", d.addr, err)
	}
	d.serve(ln)
}

// SetUnavailable makes every request answer 503 (true) or not.
func (d *WebDAV) SetUnavailable(v bool) { d.unavailable.Store(v) }

// SetReadOnly makes every write answer 403 (true) or not.
func (d *WebDAV) SetReadOnly(v bool) { d.readOnly.Store(v) }

// Puts is how many PUT requests reached the file system.
func (d *WebDAV) Puts() int64 { return d.puts.Load() }

// ReadFile returns the file at name (relative to URL, leading slash), or
// false when there is none.
func (d *WebDAV) ReadFile(name string) ([]byte, bool) {
	d.t.Helper()
	f, err := d.FS.OpenFile(context.Background(), name, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		d.t.Fatal(err)
	}
	return b, true
}

// Exists reports whether name (file or folder) exists.
func (d *WebDAV) Exists(name string) bool {
	_, err := d.FS.Stat(context.Background(), name)
	return err == nil
}
