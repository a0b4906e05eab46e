package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/httpapi"
)

// The handler that ships (New) authenticates every request, even one
// whose context some in-process wrapper filled with a principal: only
// test builds (NewActing) take a principal from the context.
func TestShippedHandlerIgnoresAContextPrincipal(t *testing.T) {
	h := httpapi.New(httpapi.Deps{Metrics: http.NotFoundHandler()})
	r := httptest.NewRequest(http.MethodGet, "/api/v1/documents", nil)
	r = r.WithContext(httpapi.WithPrincipal(r.Context(), httpapi.Principal{UserID: uuid.Must(uuid.NewV7()), Admin: true}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("a principal in the context got %d; want 401", w.Code)
	}
}
