package httpapi

import "net/http"

// NewActing is New for tests that act for a user by putting a principal
// in the request's context (WithPrincipal) instead of sending a token.
// Only test builds have it.
func NewActing(deps Deps) http.Handler {
	s := newServer(deps)
	s.trustContext = true
	return s.routes()
}
