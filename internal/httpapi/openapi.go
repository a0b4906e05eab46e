package httpapi

import (
	"net/http"

	"github.com/docuvault/docuvault/api"
)

// serveOpenAPI serves api/openapi.yaml, the description of every route.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", api.SpecContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(api.Spec)
}
