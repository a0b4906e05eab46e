package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/docuvault/docuvault/internal/health"
	"github.com/docuvault/docuvault/internal/problem"
	"github.com/docuvault/docuvault/internal/tracing"
)

// routes lists every route the API serves.
func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	// Every response, 404s and problems included, names its request id
	// and span (X-Request-ID, traceparent).
	r.Use(tracing.Middleware)
	r.Use(s.instrument) // outside recoverer: a panic's 500 is counted
	r.Use(s.recoverer)
	r.Use(s.deadlines) // bodies and responses bounded in time (limits.go)

	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusNotFound, "not-found", "Not found", "no such resource"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
			r.Method+" is not allowed on this resource"))
	})

	r.Get("/healthz", health.Live)
	r.Get("/readyz", health.Ready(s.Log, readinessTimeout,
		health.Check{Name: "postgres", Probe: s.pingDB},
		health.Check{Name: "redis", Probe: s.pingRedis},
		health.Check{Name: "object_storage", Probe: s.pingBlobs},
	))
	r.Method(http.MethodGet, "/metrics", s.Metrics)

	r.Route("/api/v1", func(r chi.Router) {
		r.Use(s.authenticate) // bearer tokens (auth.go)

		r.Post("/auth/register", s.register)
		r.Post("/auth/login", s.login)
		r.Post("/auth/refresh", s.refresh)
		r.Post("/auth/logout", s.logout)
		r.Get("/me", s.me)
		r.Post("/me/password", s.changePassword)

		r.Post("/documents", s.uploadDocument)
		r.Get("/documents", s.listDocuments)
		r.Get("/documents/{id}", s.getDocument)
		r.Delete("/documents/{id}", s.deleteDocument)
		r.Get("/documents/{id}/content", s.getContent)

		r.Post("/topics", s.createTopic)
		r.Get("/topics", s.listTopics)
		r.Get("/topics/{id}", s.getTopic)
		r.Patch("/topics/{id}", s.renameTopic)
		r.Delete("/topics/{id}", s.deleteTopic)

		r.Post("/folders", s.createFolder)
		r.Get("/folders", s.listFolders)
		r.Get("/folders/{id}", s.getFolder)
		r.Patch("/folders/{id}", s.updateFolder)
		r.Delete("/folders/{id}", s.deleteFolder)

		r.Post("/cloud-connections", s.createCloudConnection)
		r.Get("/cloud-connections", s.listCloudConnections)
		r.Get("/cloud-connections/{id}", s.getCloudConnection)
		r.Patch("/cloud-connections/{id}", s.updateCloudConnection)
		r.Delete("/cloud-connections/{id}", s.deleteCloudConnection)
		r.Post("/cloud-connections/{id}/test", s.testCloudConnection)

		r.Get("/audit", s.listAudit)

		r.Get("/openapi.yaml", serveOpenAPI) // api/openapi.yaml: every route here, described
	})
	return r
}

// recoverer turns a panic into a logged 500 problem without internal text.
func (s *server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log(r).Error("handler panic", "panic", v, "path", r.URL.Path)
				problem.Write(w, r, problem.New(http.StatusInternalServerError, "internal", "Internal error", ""))
			}
		}()
		next.ServeHTTP(w, r)
	})
}
