package cloudsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/studio-b12/gowebdav"
)

// WebDAV is a folder on a WebDAV server (Nextcloud, ownCloud, Apache
// mod_dav, …), through github.com/studio-b12/gowebdav. That library has no
// context support and swallows some transport errors, so each operation
// gets a client whose transport carries the operation's context and
// remembers the last transport error; authentication is preemptive basic
// auth, which also keeps the library from buffering a body for a retry.
type WebDAV struct {
	root      string // collection URL, unescaped, with a trailing slash
	prefix    string
	auth      basicAuth
	transport http.RoundTripper
}

func newWebDAV(s WebDAVSettings, c WebDAVCredentials, transport http.RoundTripper) *WebDAV {
	return &WebDAV{root: s.URL, prefix: s.Prefix, auth: basicAuth{user: c.Username, password: c.Password}, transport: transport}
}

// client returns a gowebdav client whose requests run under ctx.
func (p *WebDAV) client(ctx context.Context) (*gowebdav.Client, *ctxTransport) {
	t := &ctxTransport{ctx: ctx, base: p.transport}
	c := gowebdav.NewAuthClient(p.root, gowebdav.NewPreemptiveAuth(p.auth))
	c.SetTransport(t)
	return c, t
}

// Put creates the parent collections (MKCOL) and PUTs r with its length.
// The ETag comes from a PROPFIND of the new file ("" if the server gives
// none).
func (p *WebDAV) Put(ctx context.Context, key string, r io.Reader, size int64, _ string) (string, error) {
	c, t := p.client(ctx)
	if err := c.WriteStreamWithLength(key, r, size, 0o644); err != nil {
		return "", t.explain(err)
	}
	fi, err := c.Stat(key)
	if err != nil {
		return "", nil // stored; the ETag is a nicety
	}
	if f, ok := fi.(*gowebdav.File); ok {
		return f.ETag(), nil
	}
	return "", nil
}

// Delete removes key (404 counts as removed) and then its folder (the
// document's own, {prefix}{document_id}/) if that is left empty.
func (p *WebDAV) Delete(ctx context.Context, key string) error {
	c, t := p.client(ctx)
	if err := c.Remove(key); err != nil {
		return t.explain(err)
	}
	dir := path.Dir("/" + key)
	if dir == "/" || dir+"/" == "/"+p.prefix {
		return nil
	}
	// Best effort: a folder that cannot be listed or removed stays.
	if files, err := c.ReadDir(dir); err == nil && len(files) == 0 {
		_ = c.Remove(dir + "/")
	}
	return nil
}

// Size returns the size of the file at key (PROPFIND).
func (p *WebDAV) Size(ctx context.Context, key string) (int64, error) {
	c, t := p.client(ctx)
	fi, err := c.Stat(key)
	if err != nil {
		if gowebdav.IsErrNotFound(err) {
			return 0, ErrRemoteMissing
		}
		return 0, t.explain(err)
	}
	return fi.Size(), nil
}

// Test reads the collection (PROPFIND), then writes and deletes a probe
// file under the prefix.
func (p *WebDAV) Test(ctx context.Context) error {
	c, t := p.client(ctx)
	if _, err := c.Stat("/"); err != nil {
		err = t.explain(err)
		return &TestError{Kind: webdavKind(err, FailAuthRefused), Err: err}
	}
	key := probeKey(p.prefix)
	if err := c.WriteStreamWithLength(key, bytes.NewReader(probeBody), int64(len(probeBody)), 0o644); err != nil {
		err = t.explain(err)
		return &TestError{Kind: webdavKind(err, FailNoWritePermission), Err: err}
	}
	if err := c.Remove(key); err != nil {
		err = t.explain(err)
		return &TestError{Kind: webdavKind(err, FailNoDeletePermission), Err: err}
	}
	return nil
}

// webdavKind classifies a WebDAV error; denied is the kind of a 403 (or a
// refused write) at this step.
func webdavKind(err error, denied string) string {
	var se gowebdav.StatusError
	if errors.As(err, &se) {
		switch code := se.Status; {
		case code == http.StatusUnauthorized:
			return FailAuthRefused
		case code == http.StatusForbidden:
			return denied
		case code == http.StatusNotFound:
			if denied == FailAuthRefused {
				return FailNotFound
			}
			return denied
		case code == http.StatusMethodNotAllowed || code == http.StatusConflict || code == http.StatusInsufficientStorage:
			if denied != FailAuthRefused {
				return denied
			}
		case code >= 500:
			return FailUnreachable
		}
		return FailOther
	}
	if isNetError(err) || errors.Is(err, context.DeadlineExceeded) {
		return FailUnreachable
	}
	return FailOther
}

// basicAuth is a gowebdav.Authenticator sending HTTP basic credentials with
// every request (the library has no exported constructor for that).
type basicAuth struct {
	user, password string
}

func (b basicAuth) Authorize(_ *http.Client, rq *http.Request, _ string) error {
	rq.SetBasicAuth(b.user, b.password)
	return nil
}

func (b basicAuth) Verify(_ *http.Client, rs *http.Response, p string) (bool, error) {
	if rs.StatusCode == http.StatusUnauthorized {
		return false, gowebdav.NewPathError("Authorize", p, rs.StatusCode)
	}
	return false, nil
}

func (b basicAuth) Clone() gowebdav.Authenticator { return b }
func (b basicAuth) Close() error                  { return nil }
func (b basicAuth) String() string                { return "basicAuth{redacted}" }

// ctxTransport runs every request under ctx and remembers the last
// transport error, which gowebdav reports for some operations as a bare
// status 400.
type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper

	mu      sync.Mutex
	lastErr error
}

func (t *ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r.WithContext(t.ctx))
	if err != nil {
		t.mu.Lock()
		t.lastErr = err
		t.mu.Unlock()
	}
	return resp, err
}

// explain replaces an error gowebdav made up for a transport failure by
// that failure.
func (t *ctxTransport) explain(err error) error {
	t.mu.Lock()
	last := t.lastErr
	t.mu.Unlock()
	var pe *os.PathError
	if last != nil && errors.As(err, &pe) && gowebdav.IsErrCode(err, http.StatusBadRequest) {
		return fmt.Errorf("%s %s: %w", strings.ToLower(pe.Op), pe.Path, last)
	}
	if ctxErr := t.ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w (%v)", ctxErr, err)
	}
	return err
}
