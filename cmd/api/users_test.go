package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/testenv"
)

// `api users create` makes accounts (the first an administrator) that log
// in through the API; each is recorded with actor system; bad input stops
// it with one line that never repeats the password.
func TestUsersCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	env := testenv.ServiceEnv(t, db, testenv.S3(t)).With("AUTH_REGISTRATION", "closed")
	dir := t.TempDir()
	pwFile := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	create := func(args ...string) (string, error) {
		var out testenv.SyncBuffer
		err := run(ctx, append([]string{"users", "create"}, args...), env.Getenv, &out)
		return out.String(), err
	}
	out, err := create("--email", "Root@Example.org", "--password-file", pwFile("root", "violet kettle humming 7\n"))
	if err != nil || !strings.HasPrefix(out, "created administrator Root@Example.org (") {
		t.Fatalf("first account: %q, %v", out, err)
	}
	out, err = create("--email", "bob@example.org", "--password-file", pwFile("bob", "quiet orange lanterns 12\r\n"))
	if err != nil || !strings.HasPrefix(out, "created user bob@example.org (") {
		t.Fatalf("second account: %q, %v", out, err)
	}
	if out, err := create("--email", "carol@example.org", "--admin", "--password-file", pwFile("carol", "amber meadow sings 42")); err != nil || !strings.HasPrefix(out, "created administrator") {
		t.Fatalf("--admin: %q, %v", out, err)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"no email":       {[]string{"--password-file", pwFile("x", "violet kettle humming 7")}, "--email is required"},
		"bad email":      {[]string{"--email", "bob", "--password-file", pwFile("x", "violet kettle humming 7")}, "not an address"},
		"taken":          {[]string{"--email", "BOB@example.org", "--password-file", pwFile("x", "violet kettle humming 7")}, "exists"},
		"weak password":  {[]string{"--email", "dave@example.org", "--password-file", pwFile("weak", "password1234\n")}, "too common"},
		"empty password": {[]string{"--email", "dave@example.org", "--password-file", pwFile("empty", "\n")}, "no password"},
		"no file":        {[]string{"--email", "dave@example.org", "--password-file", filepath.Join(dir, "none")}, "--password-file"},
		"unknown flag":   {[]string{"--email", "dave@example.org", "--role", "admin"}, "users create"},
		"stray argument": {[]string{"--email", "dave@example.org", "extra"}, "unexpected argument"},
		"password holds": {[]string{"--email", "dave.smith@example.org", "--password-file", pwFile("holds", "dave.smith rocks 2026")}, "local part"},
	} {
		_, err := create(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one line containing %q", name, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "password1234") || strings.Contains(err.Error(), "violet")) {
			t.Errorf("%s: the error repeats the password: %v", name, err)
		}
	}
	if err := run(ctx, []string{"users", "delete"}, env.Getenv, &testenv.SyncBuffer{}); err == nil || !strings.Contains(err.Error(), "unknown subcommand") {
		t.Errorf("users delete: %v", err)
	}

	// Recorded as user.registered by the system, valid against its schema.
	admin := testenv.Pool(t, db.AdminDSN())
	rows, err := admin.Query(ctx, `select payload::text from outbox where event_type = $1 order by id`, events.UserRegistered)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for rows.Next() {
		var payload string
		if err := rows.Scan(&payload); err != nil {
			t.Fatal(err)
		}
		n++
		if err := events.Validate([]byte(payload)); err != nil {
			t.Error(err)
		}
		var ev events.Envelope
		_ = json.Unmarshal([]byte(payload), &ev)
		if ev.Actor != events.System || strings.Contains(payload, "violet") {
			t.Errorf("event %s", payload)
		}
	}
	if n != 3 {
		t.Errorf("%d user.registered events; want 3", n)
	}

	// The served API logs them in (registration itself is closed).
	p := testenv.Start(t, run, nil, env)
	base := "http://" + p.Addr("api")
	post := func(path, body string) int {
		resp, err := http.Post(base+path, "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/api/v1/auth/login", `{"email":"root@example.org","password":"violet kettle humming 7"}`); code != 200 {
		t.Errorf("login: %d", code)
	}
	if code := post("/api/v1/auth/register", `{"email":"eve@example.org","password":"violet kettle humming 7"}`); code != 403 {
		t.Errorf("register with AUTH_REGISTRATION=closed: %d; want 403", code)
	}
	if strings.Contains(p.Log(), "violet") {
		t.Error("the log holds a password")
	}
}
