package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/docuvault/docuvault/internal/testenv"
)

func TestRunServesHealthAndStopsOnCancel(t *testing.T) {
	t.Parallel()
	p := testenv.Start(t, run, nil, testenv.ServiceEnv(t, testenv.NewDB(t), testenv.S3(t)))
	base := "http://" + p.Addr("metrics")
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v after cancellation; want nil", err)
	}
}

func TestRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	good := testenv.ServiceEnv(t, testenv.DB{AppURL: "postgres://u:p@127.0.0.1:5432/docuvault"}, testenv.S3Settings())
	for key, bad := range map[string]string{
		"DATABASE_URL":   "",
		"REDIS_URL":      "tcp://127.0.0.1:6379",
		"METRICS_ADDR":   "localhost",
		"LOG_LEVEL":      "chatty",
		"MINIO_ENDPOINT": "no-port",
		"MINIO_BUCKET":   "UPPER",
	} {
		t.Run(key, func(t *testing.T) {
			err := run(context.Background(), nil, good.With(key, bad).Getenv, io.Discard)
			if err == nil || !strings.HasPrefix(err.Error(), key+":") {
				t.Fatalf("error %v; want one starting with %s:", err, key)
			}
		})
	}
	if err := run(context.Background(), []string{"extra"}, good.Getenv, io.Discard); err == nil {
		t.Error("an unexpected argument was accepted")
	}
}
