package httpapi

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// The measuring middleware leaves a handler what uploads and downloads
// rely on: http.ResponseController reaches the connection (read deadlines,
// flushes), and a flushed response reaches the client before the handler
// returns. A request whose client left before any answer counts as 499.
func TestInstrumentKeepsStreaming(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s := &server{requests: newRequestMetrics(reg)}
	release := make(chan struct{})
	handlerErr := make(chan error, 1)
	r := chi.NewRouter()
	r.Use(s.instrument)
	r.Get("/stream/{id}", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		err := rc.SetReadDeadline(time.Now().Add(time.Minute))
		_, _ = w.Write([]byte("first\n"))
		handlerErr <- errors.Join(err, rc.Flush())
		<-release
		_, _ = w.Write([]byte("second\n"))
	})
	r.Get("/gone", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers nothing, as fail does for a cancelled request
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/stream/42")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := <-handlerErr; err != nil {
		t.Errorf("ResponseController through the middleware: %v", err)
	}
	// The first line arrives while the handler still waits.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Errorf("first line %q, %v; want it before the handler returned", line, err)
	}
	close(release)
	if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "second\n" {
		t.Errorf("rest of the stream %q, %v; want the second line", rest, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/gone", nil)
	go func() {
		// Cancel once the request is being served (or after a while).
		for i := 0; i < 5000 && gathered(t, reg, "docuvault_http_requests_in_flight", nil) < 1; i++ {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned request: %v; want context.Canceled", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for gathered(t, reg, "docuvault_http_requests_total", map[string]string{"method": "GET", "route": "/gone", "status": "499"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned request was not counted as 499")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := gathered(t, reg, "docuvault_http_requests_total", map[string]string{"method": "GET", "route": "/stream/{id}", "status": "200"}); n != 1 {
		t.Errorf("streamed request counted %v times with status 200; want 1", n)
	}
}

// gathered is the value of the counter or gauge name with exactly labels
// in reg (0 when absent).
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Error(err)
		return 0
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
