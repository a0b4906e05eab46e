package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// requestMetrics measure the API's requests by route pattern, never by raw
// path, so that the number of series stays bounded whatever clients send.
type requestMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// unmatchedRoute is the route label of requests no route matched (404s and
// 405s from the router itself).
const unmatchedRoute = "unmatched"

// newRequestMetrics registers the API's request metrics on reg; with a nil
// reg they are measured but not exposed.
func newRequestMetrics(reg prometheus.Registerer) *requestMetrics {
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docuvault_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern (\"unmatched\" when no route matched) and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "docuvault_http_request_duration_seconds",
			Help: "Time from a request's arrival to its handler's return (for an upload: the whole body streamed and stored), by method and route pattern.",
			// From a metadata read (milliseconds) to a large upload over a
			// slow link (minutes).
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"method", "route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "docuvault_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inFlight)
	}
	return m
}

// instrument measures each request. It must run inside the router (r.Use),
// where chi's route context is set: the pattern is only known once the
// handler returns. The wrapped writer keeps http.Flusher and Unwrap (so
// http.ResponseController deadlines still reach the connection), and the
// body is not touched: uploads stream as before.
func (s *server) instrument(next http.Handler) http.Handler {
	m := s.requests
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)

		method := methodLabel(r.Method)
		route := routeLabel(chi.RouteContext(r.Context()))
		m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(method, route, statusLabel(ww.Status(), r)).Inc()
	})
}

// routeLabel is the pattern of the route that served the request, or
// unmatchedRoute. A sub-router's mount that matched nothing inside it
// leaves its "/*" as the whole pattern; the API has no wildcard routes of
// its own, so such a pattern means no route matched.
func routeLabel(rctx *chi.Context) string {
	p := rctx.RoutePattern()
	if p == "" || strings.HasSuffix(p, "/*") {
		return unmatchedRoute
	}
	return p
}

// statusLabel is the status the client was sent. A handler that wrote
// nothing was answered 200 by net/http, unless the client had gone
// (context cancelled): then nobody was answered, and nginx's 499 ("client
// closed request") says so.
func statusLabel(status int, r *http.Request) string {
	if status == 0 {
		if r.Context().Err() != nil {
			return "499"
		}
		status = http.StatusOK
	}
	return strconv.Itoa(status)
}

// methodLabel bounds the method label: clients may send any token.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}
