package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/httpapi"
)

// Most tests do not log in: the server they talk to sets each request's
// principal itself, as in-process code may (the authenticate middleware
// passes a principal already in the context through), and the test
// client sends a placeholder bearer token so that the exchange matches
// api/openapi.yaml (every operation but register, login and refresh
// requires bearerAuth). auth_test.go's servers are plain: their tests log
// in and send real tokens.

// inProcessBearer is the placeholder token sent to acting servers; the API
// never checks it (the principal is set before the middleware runs).
const inProcessBearer = "Bearer in-process-test-principal"

// actingHosts are the host:port of the servers whose handler sets the
// principal (actingServer).
var actingHosts sync.Map

// actAs lets a test request act for the user in its X-Test-Owner header
// (an administrator with X-Test-Admin: true), for user without one, and
// for no one with X-Test-Anonymous: true: such a request must be refused
// (401), as one without a token is.
func actAs(h http.Handler, user uuid.UUID) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Anonymous") != "true" {
			p := httpapi.Principal{UserID: user}
			if id, err := uuid.Parse(r.Header.Get("X-Test-Owner")); err == nil {
				p = httpapi.Principal{UserID: id, Admin: r.Header.Get("X-Test-Admin") == "true"}
			}
			r = r.WithContext(httpapi.WithPrincipal(r.Context(), p))
		}
		h.ServeHTTP(w, r)
	})
}

// actingServer serves h, a handler that sets the principal (actAs), to
// clients that use http.DefaultClient: they send it the placeholder token.
func actingServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	actAsHost(t, srv.Listener.Addr().String())
	t.Cleanup(srv.Close)
	return srv
}

// actAsHost makes http.DefaultClient send the placeholder token to addr
// (host:port) until the test ends.
func actAsHost(t *testing.T, addr string) {
	actingHosts.Store(addr, true)
	t.Cleanup(func() { actingHosts.Delete(addr) })
}

// placeholderBearer adds the placeholder token to a request for an acting
// server without an Authorization header, unless it is X-Test-Anonymous.
// It is http.DefaultClient's transport (TestMain), in front of the
// validating http.DefaultTransport.
type placeholderBearer struct{}

func (placeholderBearer) RoundTrip(req *http.Request) (*http.Response, error) {
	if _, ok := actingHosts.Load(req.URL.Host); ok && req.Header.Get("Authorization") == "" && req.Header.Get("X-Test-Anonymous") != "true" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", inProcessBearer)
	}
	return http.DefaultTransport.RoundTrip(req)
}
