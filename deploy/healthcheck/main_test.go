package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	mux.HandleFunc("GET /down", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not reachable: redis", http.StatusServiceUnavailable)
	})
	srv := httptest.NewServer(mux)
	closed := httptest.NewServer(mux)
	closed.Close()
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name   string
		args   []string
		want   int
		stderr string
	}{
		{"ready", []string{srv.URL + "/readyz"}, 0, ""},
		{"unavailable", []string{srv.URL + "/down"}, 1, "503 Service Unavailable not reachable: redis"},
		{"not found", []string{srv.URL + "/nope"}, 1, "404"},
		// Nothing listens there (unless something took the port since): any failure will do.
		{"refused", []string{closed.URL + "/readyz"}, 1, "healthcheck:"},
		{"no url", nil, 1, "usage"},
		{"bad url", []string{"::"}, 1, "missing protocol scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := run(tc.args, &stderr); got != tc.want {
				t.Errorf("exit %d, want %d (stderr %q)", got, tc.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) || (tc.stderr == "" && stderr.Len() > 0) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.stderr)
			}
		})
	}
}
