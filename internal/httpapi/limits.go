package httpapi

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/problem"
)

// How long the API waits on clients, and how much it lets one client do
// at once. The HTTP server bounds the header (internal/httpserver); the
// body and the response are bounded here, per route, because an upload
// or a download over a slow link may rightly take hours while a small
// JSON body has no reason to take long.
const (
	DefaultUploadConcurrencyPerClient = 8
	DefaultBodyTimeout                = 30 * time.Second
	// DefaultResponseTimeout is above connectionTestTimeout: a connection
	// test may take that long before its answer is written.
	DefaultResponseTimeout = 60 * time.Second
	DefaultStallTimeout    = 60 * time.Second
	// DefaultUploadMinRate (4 KiB/s, 32 kbit/s) is far below any working
	// link, and cuts a body sent a few bytes at a time within minutes.
	DefaultUploadMinRate = 4 << 10
)

// uploadRetryAfter is the Retry-After, in seconds, of an upload refused
// because its client has too many in flight.
const uploadRetryAfter = 5

func (c Config) withDefaults() Config {
	c.UploadConcurrencyPerClient = cmp.Or(c.UploadConcurrencyPerClient, DefaultUploadConcurrencyPerClient)
	c.BodyTimeout = cmp.Or(c.BodyTimeout, DefaultBodyTimeout)
	c.ResponseTimeout = cmp.Or(c.ResponseTimeout, DefaultResponseTimeout)
	c.StallTimeout = cmp.Or(c.StallTimeout, DefaultStallTimeout)
	c.UploadMinRate = cmp.Or(c.UploadMinRate, DefaultUploadMinRate)
	// Every upload is charged (it has an owner): a zero limit is no
	// "nothing may be stored" but the default, as QUOTA_DEFAULT_* never
	// sets 0.
	c.Quota.Bytes = cmp.Or(c.Quota.Bytes, config.DefaultQuotaBytes)
	c.Quota.Documents = cmp.Or(c.Quota.Documents, config.DefaultQuotaDocuments)
	return c
}

// clientLimiter counts the requests each client has in flight: one map
// entry per client with at least one, so it stays as small as the traffic.
type clientLimiter struct {
	max      int
	mu       sync.Mutex
	inFlight map[netip.Addr]int
}

func newClientLimiter(max int) *clientLimiter {
	return &clientLimiter{max: max, inFlight: map[netip.Addr]int{}}
}

// acquire takes a slot for client, or reports false when it has max.
func (l *clientLimiter) acquire(client netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[client] >= l.max {
		return false
	}
	l.inFlight[client]++
	return true
}

// release gives back a slot acquire took.
func (l *clientLimiter) release(client netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[client] <= 1 {
		delete(l.inFlight, client)
		return
	}
	l.inFlight[client]--
}

// clientKey is who a client address counts against: the address, or for
// IPv6 the /64 it belongs to (one host usually holds a whole /64). The
// address is the request's client (clientAddr): its peer's, or behind
// trusted proxies the one they forwarded. The zero Addr (a peer that is
// not TCP) stays zero, shared by all such.
func clientKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// tooManyUploads is the 429 of an upload whose client already sends max.
func tooManyUploads(max int) error {
	return &apiError{status: http.StatusTooManyRequests, typ: "too-many-uploads", title: "Too many uploads",
		detail: fmt.Sprintf("this client already sends %d uploads at once; retry when one has finished", max)}
}

// errUploadTooSlow ends an upload whose average rate fell below
// Config.UploadMinRate.
var errUploadTooSlow = errors.New("upload slower than the minimum rate")

// timedOut reports whether err is a body read cut by a deadline (or by
// the minimum upload rate).
func timedOut(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, errUploadTooSlow)
}

func requestTimeout(detail string) error {
	return &apiError{status: http.StatusRequestTimeout, typ: "request-timeout", title: "Request timeout", detail: detail}
}

// bodyReadError is the problem of a request body that could not be read:
// too large (413), too slow (408), or broken framing or a truncated body
// (400 unreadable-body).
func bodyReadError(err error) error {
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return err
	case timedOut(err):
		return requestTimeout("the request body did not arrive in time")
	}
	return badRequest("unreadable-body", "the request body is truncated or its framing (Content-Length, chunked encoding) is broken")
}

// deadlines bounds every request's body and response in time, since the
// server sets no deadline of its own for them: the body must arrive within
// BodyTimeout and the response be written within ResponseTimeout (after
// the body's deadline, when there is a body). The
// upload and download handlers replace these with their stall policies,
// and decodeJSON lifts the read deadline once the body is read (an expired
// deadline would otherwise cancel the request's context: net/http reads
// the connection in the background once the body is done).
//
// A body sent with a method that takes none is read (at most maxJSONBody)
// and dropped here, under the deadline: net/http would otherwise read it
// later without one.
func (s *server) deadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		if r.ContentLength == 0 {
			_ = rc.SetWriteDeadline(now.Add(s.Config.ResponseTimeout))
		} else { // declared, or chunked (-1)
			_ = rc.SetReadDeadline(now.Add(s.Config.BodyTimeout))
			_ = rc.SetWriteDeadline(now.Add(s.Config.BodyTimeout + s.Config.ResponseTimeout))
			switch r.Method {
			case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
				if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxJSONBody)); err != nil {
					s.fail(w, r, bodyReadError(err))
					return
				}
				_ = rc.SetReadDeadline(time.Time{})
				r.Body = http.NoBody
			}
		}
		next.ServeHTTP(w, r)
	})
}

// downloadWriter is the ResponseWriter of a download: each write may take
// up to its stall timeout, so a slow reader may take as long as it needs
// and a stalled one is cut; and the answers http.ServeContent writes
// without a problem body, 412 and its plain-text 416, become problems.
type downloadWriter struct {
	http.ResponseWriter
	r        *http.Request
	rc       *http.ResponseController
	stall    time.Duration
	deadline time.Time
	dropBody bool // a problem replaced the answer: drop ServeContent's text
}

func newDownloadWriter(w http.ResponseWriter, r *http.Request, stall time.Duration) *downloadWriter {
	return &downloadWriter{ResponseWriter: w, r: r, rc: http.NewResponseController(w), stall: stall}
}

func (d *downloadWriter) WriteHeader(code int) {
	var p problem.Details
	switch code {
	case http.StatusPreconditionFailed:
		p = problem.New(http.StatusPreconditionFailed, "precondition-failed", "Precondition failed",
			"If-Match or If-Unmodified-Since does not hold for the document's content")
	case http.StatusRequestedRangeNotSatisfiable:
		p = problem.New(http.StatusRequestedRangeNotSatisfiable, "range-not-satisfiable", "Range not satisfiable",
			"the Range header is malformed or names no byte of the content (Content-Range gives its size)")
	default:
		d.ResponseWriter.WriteHeader(code)
		return
	}
	d.dropBody = true
	h := d.Header()
	for _, k := range []string{"Content-Disposition", "Content-Length", "Cache-Control", "Content-Security-Policy"} {
		h.Del(k)
	}
	problem.Write(d.ResponseWriter, d.r, p)
}

func (d *downloadWriter) Write(b []byte) (int, error) {
	if d.dropBody {
		return len(b), nil
	}
	// Move the deadline at most once a second (or a quarter of a short
	// stall timeout): it is not free.
	if now := time.Now(); d.deadline.Sub(now) < d.stall-min(time.Second, d.stall/4) {
		d.deadline = now.Add(d.stall)
		_ = d.rc.SetWriteDeadline(d.deadline)
	}
	return d.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (d *downloadWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// retryAfter sets the Retry-After header, in seconds.
func retryAfter(w http.ResponseWriter, seconds int) {
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
}
