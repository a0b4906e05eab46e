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
		"DATABASE_URL":     "",
		"REDIS_URL":        "tcp://127.0.0.1:6379",
		"METRICS_ADDR":     "localhost",
		"LOG_LEVEL":        "chatty",
		"STREAM_RETENTION": "a week",
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

// A database that cannot be reached stops start-up with an error naming
// it, and neither the error nor the log shows the password.
func TestConnectionErrorHidesThePassword(t *testing.T) {
	t.Parallel()
	const canary = "canary-pw-8d2e"
	env := testenv.ServiceEnv(t, testenv.DB{AppURL: "postgres://docuvault_app:" + canary + "@127.0.0.1:1/docuvault"}, testenv.S3Settings())
	var log strings.Builder
	err := run(context.Background(), nil, env.Getenv, &log)
	if err == nil {
		t.Fatal("started against a closed port")
	}
	if strings.Contains(err.Error()+log.String(), canary) {
		t.Errorf("password leaked: %v\n%s", err, log.String())
	}
	if !strings.HasPrefix(err.Error(), "DATABASE_URL:") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error %q does not name the setting and the server", err)
	}
}
