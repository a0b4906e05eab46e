package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/auth"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/testenv"
)

// authSecret is the SECRET_KEY of the tests' APIs.
const authSecret = "auth-test-secret-0123456789abcdef0123456789"

// fastArgon2 keeps most tests fast; TestLoginFailuresLookAlike uses the
// production parameters.
var fastArgon2 = auth.Argon2Params{MemoryKiB: 1024, Iterations: 1, Parallelism: 1, SaltLen: 16, KeyLen: 32}

// authEnv is an API with accounts, on its own database and its own rate
// limit keys in the shared Redis.
type authEnv struct {
	t      *testing.T
	url    string
	admin  *pgxpool.Pool
	app    *pgxpool.Pool
	rdb    *redis.Client
	cfg    httpapi.Config
	hasher *auth.Hasher
}

func newAuthEnv(t *testing.T, cfg httpapi.Config, argon auth.Argon2Params) *authEnv {
	t.Helper()
	db := testenv.NewDB(t)
	opts, _ := redis.ParseURL(testenv.RedisURL())
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if cfg.Auth.RateLimitPrefix == "" {
		prefix := testenv.Unique("dvtest:auth:") + ":"
		cfg.Auth.RateLimitPrefix = prefix
		t.Cleanup(func() {
			ctx := context.Background()
			keys, _ := rdb.Keys(ctx, "rate:"+prefix+"*").Result()
			if len(keys) > 0 {
				rdb.Del(ctx, keys...)
			}
		})
	}
	e := &authEnv{t: t, admin: testenv.Pool(t, db.AdminDSN()), app: testenv.Pool(t, db.AppURL), rdb: rdb, cfg: cfg}
	e.url, e.hasher = e.start(argon)
	return e
}

// start starts another API on the env's database and Redis keys, with
// Deps of its own (another replica), and returns its URL and hasher.
func (e *authEnv) start(argon auth.Argon2Params) (string, *auth.Hasher) {
	t := e.t
	tokens, err := auth.NewIssuer(authSecret, auth.IssuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	hasher := auth.NewHasher(argon)
	h := httpapi.NewActing(httpapi.Deps{
		Config: e.cfg, Log: testenv.Logger(t), DB: e.app, Redis: e.rdb, Metrics: http.NotFoundHandler(),
		Tokens: tokens, Passwords: hasher,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, hasher
}

// authReply is an answer: status, headers and JSON object.
type authReply struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

// send sends a JSON request (body nil: none) with the bearer token (""
// for none) through client (nil: http.DefaultClient, which validates the
// exchange against api/openapi.yaml).
func sendJSON(t *testing.T, client *http.Client, method, url string, body any, bearer string) authReply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := authReply{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &out.body)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s %s: %d answered with Content-Type %q", method, url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return out
}

func (r authReply) problem() string {
	typ, _ := r.body["type"].(string)
	return strings.TrimPrefix(typ, "https://docuvault.dev/problems/")
}

// want fails the test unless the authReply has status (and, for a problem,
// type).
func (r authReply) want(t *testing.T, what string, status int, problemType ...string) authReply {
	t.Helper()
	if r.status != status || len(problemType) > 0 && r.problem() != problemType[0] {
		t.Fatalf("%s: %d %s; want %d %v", what, r.status, r.raw, status, problemType)
	}
	return r
}

func creds(email, password string) map[string]string {
	return map[string]string{"email": email, "password": password}
}

// tokens is a login or refresh answer.
type tokens struct{ access, refresh string }

func (r authReply) tokens(t *testing.T) tokens {
	t.Helper()
	a, _ := r.body["access_token"].(string)
	rt, _ := r.body["refresh_token"].(string)
	if a == "" || rt == "" || r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(900) {
		t.Fatalf("not a token pair: %s", r.raw)
	}
	return tokens{a, rt}
}

func (e *authEnv) register(email, password string) map[string]any {
	e.t.Helper()
	return sendJSON(e.t, nil, "POST", e.url+"/api/v1/auth/register", creds(email, password), "").want(e.t, "register "+email, 201).body
}

func (e *authEnv) login(email, password string) tokens {
	e.t.Helper()
	return sendJSON(e.t, nil, "POST", e.url+"/api/v1/auth/login", creds(email, password), "").want(e.t, "login "+email, 200).tokens(e.t)
}

func (e *authEnv) refresh(token string) authReply {
	e.t.Helper()
	return sendJSON(e.t, nil, "POST", e.url+"/api/v1/auth/refresh", map[string]string{"refresh_token": token}, "")
}

// authEvents returns the user.* events in the outbox, in order, and fails
// the test for any event that does not match its JSON Schema or that
// carries a secret.
func (e *authEnv) authEvents(secrets ...string) []events.Envelope {
	e.t.Helper()
	rows, err := e.admin.Query(context.Background(), `select o.payload::text, a.details::text from outbox o
		join audit_log a on a.event_id = o.event_id order by o.id`)
	if err != nil {
		e.t.Fatal(err)
	}
	type row struct{ Payload, Details string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		e.t.Fatal(err)
	}
	var out []events.Envelope
	for _, r := range got {
		if err := events.Validate([]byte(r.Payload)); err != nil {
			e.t.Errorf("%v\n%s", err, r.Payload)
		}
		for _, s := range append(secrets, "argon2id") {
			if strings.Contains(r.Payload, s) || strings.Contains(r.Details, s) {
				e.t.Errorf("an event or audit row holds a secret (%.8s…): %s", s, r.Payload)
			}
		}
		var ev events.Envelope
		if err := json.Unmarshal([]byte(r.Payload), &ev); err != nil {
			e.t.Fatal(err)
		}
		if ev.Stream() != events.StreamUsers {
			e.t.Errorf("%s goes to %s", ev.Type, ev.Stream())
		}
		out = append(out, ev)
	}
	return out
}

func types(evs []events.Envelope) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func authData(t *testing.T, ev events.Envelope) events.UserAuth {
	t.Helper()
	var d events.UserAuth
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *authEnv) count(table string) int {
	e.t.Helper()
	var n int
	if err := e.admin.QueryRow(context.Background(), "select count(*) from "+table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// The first account is an administrator, later ones are not; each
// registration is recorded (user.registered, without the password).
func TestRegisterFirstAccountIsAdmin(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	first := e.register("Alice@Example.org", "violet kettle humming 7")
	second := e.register("bob@example.org", "quiet orange lanterns 12")
	if first["is_admin"] != true || second["is_admin"] != false || first["email"] != "Alice@Example.org" || first["status"] != "active" {
		t.Errorf("first %v, second %v", first, second)
	}
	// The login and /me agree.
	tok := e.login("alice@example.org", "violet kettle humming 7")
	me := sendJSON(t, nil, "GET", e.url+"/api/v1/me", nil, tok.access).want(t, "me", 200).body
	if me["id"] != first["id"] || me["is_admin"] != true {
		t.Errorf("/me %v; want %v", me, first)
	}
	evs := e.authEvents("violet kettle", "quiet orange", tok.access, tok.refresh)
	if got := types(evs); !slices.Equal(got, []string{events.UserRegistered, events.UserRegistered, events.UserLoggedIn}) {
		t.Fatalf("events %v", got)
	}
	if evs[0].AggregateID.String() != first["id"] || evs[0].Actor != events.Anonymous {
		t.Errorf("registered event %+v", evs[0])
	}
	var data events.User
	_ = json.Unmarshal(evs[0].Data, &data)
	if !data.IsAdmin || data.Email != "Alice@Example.org" {
		t.Errorf("registered data %+v", data)
	}
	if d := authData(t, evs[2]); d.SessionID == nil || d.ID.String() != first["id"] || evs[2].Actor.ID == nil || evs[2].Actor.ID.String() != first["id"] {
		t.Errorf("logged_in event %+v %+v", evs[2], d)
	}
}

// Of concurrent first registrations, exactly one is the administrator.
func TestConcurrentFirstRegistrationsMakeOneAdmin(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() { e.register(fmt.Sprintf("user%d@example.org", i), "violet kettle humming 7") })
	}
	wg.Wait()
	var admins int
	if err := e.admin.QueryRow(context.Background(), `select count(*) from users where is_admin`).Scan(&admins); err != nil {
		t.Fatal(err)
	}
	if admins != 1 {
		t.Errorf("%d administrators; want 1", admins)
	}
}

// Closed registration answers 403 registration-closed and stores
// nothing; first-user registration lets the first account in only.
func TestRegistrationCanBeClosed(t *testing.T) {
	t.Parallel()
	closed := newAuthEnv(t, httpapi.Config{Auth: httpapi.AuthConfig{Registration: httpapi.RegistrationClosed}}, fastArgon2)
	sendJSON(t, nil, "POST", closed.url+"/api/v1/auth/register", creds("alice@example.org", "violet kettle humming 7"), "").
		want(t, "register while closed", 403, "registration-closed")
	for _, table := range []string{"users", "audit_log", "outbox"} {
		if n := closed.count(table); n != 0 {
			t.Errorf("%d rows in %s after a refused registration", n, table)
		}
	}

	first := newAuthEnv(t, httpapi.Config{Auth: httpapi.AuthConfig{Registration: httpapi.RegistrationFirstUser}}, fastArgon2)
	if u := first.register("alice@example.org", "violet kettle humming 7"); u["is_admin"] != true {
		t.Errorf("first account %v is not an administrator", u)
	}
	sendJSON(t, nil, "POST", first.url+"/api/v1/auth/register", creds("bob@example.org", "quiet orange lanterns 12"), "").
		want(t, "second registration in first-user mode", 403, "registration-closed")
	if n := first.count("users"); n != 1 {
		t.Errorf("%d users; want 1", n)
	}
}

// Bad registrations are problems that store nothing.
func TestRegisterRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	e.register("alice@example.org", "violet kettle humming 7")
	before := e.count("audit_log")
	for _, c := range []struct {
		name   string
		body   any
		status int
		typ    string
		field  string
	}{
		{"no password", map[string]string{"email": "bob@example.org"}, 400, "invalid-field", "password"},
		{"empty email", creds("", "violet kettle humming 7"), 400, "invalid-field", "email"},
		{"not an email", creds("bob.example.org", "violet kettle humming 7"), 400, "invalid-field", "email"},
		{"two @", creds("bob@a@example.org", "violet kettle humming 7"), 400, "invalid-field", "email"},
		{"space in email", creds("bob smith@example.org", "violet kettle humming 7"), 400, "invalid-field", "email"},
		{"unknown field", map[string]string{"email": "bob@example.org", "password": "violet kettle humming 7", "admin": "true"}, 400, "invalid-json", ""},
		{"short password", creds("bob@example.org", "short pw 1"), 422, "weak-password", "password"},
		{"common password", creds("bob@example.org", "Password2026!"), 422, "weak-password", "password"},
		{"password holds the email", creds("bobby.tables@example.org", "little bobby tables!"), 422, "weak-password", "password"},
		{"email taken, other case", creds("ALICE@example.org", "quiet orange lanterns 12"), 409, "email-taken", "email"},
	} {
		r := sendJSON(t, nil, "POST", e.url+"/api/v1/auth/register", c.body, "")
		if r.status != c.status || r.problem() != c.typ || c.field != "" && r.body["field"] != c.field {
			t.Errorf("%s: %d %s; want %d %s field %q", c.name, r.status, r.raw, c.status, c.typ, c.field)
		}
		if strings.Contains(string(r.raw), "violet") || strings.Contains(string(r.raw), "Password2026") {
			t.Errorf("%s: the answer repeats the password: %s", c.name, r.raw)
		}
	}
	if n := e.count("users"); n != 1 {
		t.Errorf("%d users; want 1", n)
	}
	if n := e.count("audit_log"); n != before {
		t.Errorf("%d audit rows after refused registrations; want %d", n, before)
	}
}

// A wrong password and an unknown email get the same answer after the
// same work: each runs exactly one Argon2id verification (a dummy hash
// for the unknown email), so they take about as long. Both are recorded,
// without the password, and without the unknown address.
func TestLoginFailuresLookAlike(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{Auth: httpapi.AuthConfig{Limits: auth.Limits{
		LoginPerIP: auth.Limit{Count: 1000, Period: time.Minute}, LoginPerAccount: auth.Limit{Count: 1000, Period: time.Minute},
	}}}, auth.DefaultArgon2)
	e.register("alice@example.org", "violet kettle humming 7")

	attempt := func(email string) (authReply, int64, time.Duration) {
		before := e.hasher.Verifications()
		start := time.Now()
		r := sendJSON(t, nil, "POST", e.url+"/api/v1/auth/login", creds(email, "wrong password here!"), "")
		return r, e.hasher.Verifications() - before, time.Since(start)
	}
	wrong, nWrong, _ := attempt("alice@example.org")
	unknown, nUnknown, _ := attempt("nobody@example.org")
	if nWrong != 1 || nUnknown != 1 {
		t.Errorf("Argon2 verifications: %d for a wrong password, %d for an unknown email; want 1 and 1", nWrong, nUnknown)
	}
	wrong.want(t, "wrong password", 401, "invalid-credentials")
	unknown.want(t, "unknown email", 401, "invalid-credentials")
	if !bytes.Equal(wrong.raw, unknown.raw) {
		t.Errorf("the answers differ:\n%s\n%s", wrong.raw, unknown.raw)
	}
	for _, h := range []string{"WWW-Authenticate", "Content-Type", "Content-Length"} {
		if wrong.header.Get(h) != unknown.header.Get(h) {
			t.Errorf("%s differs: %q vs %q", h, wrong.header.Get(h), unknown.header.Get(h))
		}
	}

	// A loose timing check (the counter above is the real guarantee):
	// median of several alternating tries, within a factor of two.
	var known, unknownTimes []time.Duration
	for range 7 {
		_, _, d := attempt("alice@example.org")
		known = append(known, d)
		_, _, d = attempt("nobody@example.org")
		unknownTimes = append(unknownTimes, d)
	}
	slices.Sort(known)
	slices.Sort(unknownTimes)
	if ratio := float64(unknownTimes[3]) / float64(known[3]); ratio < 0.5 || ratio > 2 {
		t.Errorf("median unknown-email login %s vs wrong-password login %s (ratio %.2f); want within 0.5-2", unknownTimes[3], known[3], ratio)
	}

	evs := e.authEvents("wrong password here", "nobody@example.org")
	failed := map[string]events.Envelope{}
	for _, ev := range evs {
		if ev.Type == events.UserLoginFailed {
			failed[authData(t, ev).Reason] = ev
		}
	}
	// The unknown address is recorded under an id keyed by SECRET_KEY:
	// the same for every attempt on it (any case), but not one a reader
	// of the stream could compute from a guessed address.
	ours, err := auth.NewIssuer(authSecret, auth.IssuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := auth.NewIssuer(authSecret+"-another-server", auth.IssuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	want := ours.UnknownUserID(" Nobody@Example.org")
	if ev := failed[events.LoginUnknownUser]; ev.AggregateID != want || ev.Actor != events.Anonymous {
		t.Errorf("unknown email's event: %+v; want aggregate %s", ev, want)
	}
	if theirs.UnknownUserID("nobody@example.org") == want || want == events.UnknownUserID([]byte("nobody@example.org")) {
		t.Error("the unknown address's id does not depend on SECRET_KEY")
	}
	if ev := failed[events.LoginWrongPassword]; ev.ID == uuid.Nil {
		t.Error("no user.login_failed for the wrong password")
	}
	if n := len(ofTypeEnv(evs, events.UserLoginFailed)); n != 16 {
		t.Errorf("%d user.login_failed events; want 16", n)
	}
}

func ofTypeEnv(evs []events.Envelope, typ string) []events.Envelope {
	var out []events.Envelope
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// A disabled account cannot log in (same answer as a wrong password), and
// its access tokens stop working at once.
func TestDisabledAccount(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	u := e.register("alice@example.org", "violet kettle humming 7")
	tok := e.login("alice@example.org", "violet kettle humming 7")
	if _, err := e.admin.Exec(context.Background(), `update users set status = 'disabled' where id = $1`, u["id"]); err != nil {
		t.Fatal(err)
	}
	sendJSON(t, nil, "GET", e.url+"/api/v1/me", nil, tok.access).want(t, "me while disabled", 401, "invalid-token")
	sendJSON(t, nil, "POST", e.url+"/api/v1/auth/login", creds("alice@example.org", "violet kettle humming 7"), "").
		want(t, "login while disabled", 401, "invalid-credentials")
	e.refresh(tok.refresh).want(t, "refresh while disabled", 401, "invalid-token")
	evs := ofTypeEnv(e.authEvents(), events.UserLoginFailed)
	if len(evs) != 1 || authData(t, evs[0]).Reason != events.LoginDisabled {
		t.Errorf("login failures %v; want one, reason disabled", evs)
	}
}

// A bearer token sets the request's principal; expired, tampered, foreign
// and unsigned tokens are refused with 401 invalid-token and the Bearer
// challenge, whatever the route.
func TestAccessTokens(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	u := e.register("alice@example.org", "violet kettle humming 7")
	tok := e.login("alice@example.org", "violet kettle humming 7")
	user := uuid.MustParse(u["id"].(string))

	me := sendJSON(t, nil, "GET", e.url+"/api/v1/me", nil, tok.access).want(t, "me", 200).body
	if me["email"] != "alice@example.org" {
		t.Errorf("/me %v", me)
	}
	// Topics created with the token belong to its user.
	topic := sendJSON(t, nil, "POST", e.url+"/api/v1/topics", map[string]string{"name": "Taxes"}, tok.access).want(t, "create topic", 201).body
	if topic["user_id"] != u["id"] {
		t.Errorf("topic %v; want user_id %v", topic, u["id"])
	}

	expired, _, err := mustIssuer(t, func() time.Time { return time.Now().Add(-time.Hour) }).Issue(user, 1)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := auth.NewIssuer(authSecret+"-another-server", auth.IssuerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _ := otherKey.Issue(user, 1)
	parts := strings.Split(tok.access, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	// Claim to be someone else: the signature no longer matches.
	forged := bytes.Replace(payload, []byte(user.String()), []byte(uuid.Must(uuid.NewV7()).String()), 1)
	flipped := append([]byte(nil), payload...)
	flipped[len(flipped)/2] ^= 0x01
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	cases := map[string]string{
		"expired":          expired,
		"another key":      foreign,
		"payload flipped":  parts[0] + "." + base64.RawURLEncoding.EncodeToString(flipped) + "." + parts[2],
		"subject replaced": parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2],
		"alg none":         header + "." + parts[1] + ".",
		"not a JWT":        "hello",
	}
	for name, bad := range cases {
		r := sendJSON(t, nil, "GET", e.url+"/api/v1/me", nil, bad).want(t, name, 401, "invalid-token")
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="docuvault", error="invalid_token"` {
			t.Errorf("%s: WWW-Authenticate %q", name, got)
		}
	}
	// Another scheme is no bearer token either.
	req, _ := http.NewRequest("GET", e.url+"/api/v1/me", nil)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice@example.org:violet kettle humming 7")))
	resp, err := unvalidated.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("Basic credentials: %d; want 401", resp.StatusCode)
	}

	// Any route refuses a bad token.
	for name, bad := range cases {
		if r := sendJSON(t, nil, "GET", e.url+"/api/v1/topics", nil, bad); r.status != 401 || r.problem() != "invalid-token" {
			t.Errorf("%s on /topics: %d %s", name, r.status, r.raw)
		}
	}
	// Without a token: refused everywhere but the public routes.
	for _, path := range []string{"/api/v1/me", "/api/v1/topics"} {
		r := sendJSON(t, nil, "GET", e.url+path, nil, "").want(t, path+" without a token", 401, "authentication-required")
		if r.header.Get("WWW-Authenticate") != `Bearer realm="docuvault"` {
			t.Errorf("%s: WWW-Authenticate %q", path, r.header.Get("WWW-Authenticate"))
		}
	}
	// The public routes ignore the header: a client may refresh with its
	// expired access token still attached.
	refreshed := sendJSON(t, nil, "POST", e.url+"/api/v1/auth/refresh", map[string]string{"refresh_token": tok.refresh}, expired)
	refreshed.want(t, "refresh with an expired bearer", 200)
}

// unvalidated sends requests the description refuses (credentials of
// another scheme), without the validating transport.
var unvalidated = &http.Client{Transport: &http.Transport{}}

func mustIssuer(t *testing.T, now func() time.Time) *auth.TokenIssuer {
	t.Helper()
	it, err := auth.NewIssuer(authSecret, auth.IssuerConfig{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// Tokens are mandatory: every route under /api/v1 but register, login,
// refresh and openapi.yaml refuses a request without a token, and
// changes nothing.
func TestTokenIsRequired(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	e.register("alice@example.org", "violet kettle humming 7")
	tok := e.login("alice@example.org", "violet kettle humming 7")
	for _, path := range []string{"/api/v1/topics", "/api/v1/documents", "/api/v1/folders", "/api/v1/audit", "/api/v1/cloud-connections", "/api/v1/me"} {
		r := sendJSON(t, nil, "GET", e.url+path, nil, "")
		if r.status != 401 || r.problem() != "authentication-required" || r.header.Get("WWW-Authenticate") != `Bearer realm="docuvault"` {
			t.Errorf("GET %s without a token: %d %v %s", path, r.status, r.header.Get("WWW-Authenticate"), r.raw)
		}
		if r := sendJSON(t, nil, "GET", e.url+path, nil, tok.access); r.status != 200 {
			t.Errorf("GET %s with a token: %d %s", path, r.status, r.raw)
		}
	}
	for _, path := range []string{"/api/v1/topics", "/api/v1/folders"} {
		sendJSON(t, nil, "POST", e.url+path, map[string]string{"name": "anonymous"}, "").
			want(t, "POST "+path+" without a token", 401, "authentication-required")
	}
	sendJSON(t, nil, "POST", e.url+"/api/v1/auth/logout", map[string]string{"refresh_token": tok.refresh}, "").
		want(t, "logout without a token", 401, "authentication-required")
	var n int
	if err := e.admin.QueryRow(context.Background(), `select (select count(*) from topics) + (select count(*) from folders)
		+ (select count(*) from refresh_tokens where revoked_at is not null)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("requests without a token changed %d rows", n)
	}
	sendJSON(t, nil, "GET", e.url+"/api/v1/openapi.yaml", nil, "").want(t, "openapi.yaml", 200)
	next := e.refresh(tok.refresh).want(t, "refresh", 200).tokens(t)
	sendJSON(t, nil, "POST", e.url+"/api/v1/auth/logout", map[string]string{"refresh_token": next.refresh}, next.access).want(t, "logout", 204)
}

// Every refresh rotates the refresh token: the old one is refused, and
// presenting it again revokes the whole session (the newest token too)
// and is recorded.
func TestRefreshRotationAndReuseDetection(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	u := e.register("alice@example.org", "violet kettle humming 7")
	first := e.login("alice@example.org", "violet kettle humming 7")
	second := e.refresh(first.refresh).want(t, "first refresh", 200).tokens(t)
	third := e.refresh(second.refresh).want(t, "second refresh", 200).tokens(t)
	if second.refresh == first.refresh || third.refresh == second.refresh {
		t.Fatal("refresh returned the same refresh token")
	}
	sendJSON(t, nil, "GET", e.url+"/api/v1/me", nil, third.access).want(t, "me with the refreshed token", 200)

	// The first token again: refused, and the session is revoked.
	e.refresh(first.refresh).want(t, "reused token", 401, "invalid-token")
	e.refresh(third.refresh).want(t, "newest token after reuse", 401, "invalid-token")

	evs := e.authEvents(first.refresh, second.refresh, third.refresh, first.access, second.access, third.access)
	want := []string{events.UserRegistered, events.UserLoggedIn, events.UserTokenRefreshed, events.UserTokenRefreshed,
		events.UserTokenReuseDetected, events.UserTokenReuseDetected}
	if got := types(evs); !slices.Equal(got, want) {
		t.Fatalf("events %v; want %v", got, want)
	}
	session := authData(t, evs[1]).SessionID
	for _, ev := range evs[1:] {
		if d := authData(t, ev); d.SessionID == nil || *d.SessionID != *session || d.ID.String() != u["id"] {
			t.Errorf("%s: %+v; want session %s of %v", ev.Type, d, session, u["id"])
		}
	}
	// The reuse revoked the one live token (the third); the newest
	// token presented after it is a revoked one, and revokes nothing more.
	if d := authData(t, evs[4]); d.Reason != events.ReuseUsed || d.RevokedTokens == nil || *d.RevokedTokens != 1 || evs[4].Actor != events.Anonymous {
		t.Errorf("first reuse: %+v by %+v", d, evs[4].Actor)
	}
	if d := authData(t, evs[5]); d.Reason != events.ReuseRevoked || *d.RevokedTokens != 0 {
		t.Errorf("second reuse: %+v", d)
	}
	var live int
	if err := e.admin.QueryRow(context.Background(), `select count(*) from refresh_tokens where revoked_at is null and used_at is null`).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != 0 {
		t.Errorf("%d refresh tokens still usable", live)
	}
	// Tokens are stored hashed only.
	raw, err := base64.RawURLEncoding.DecodeString(first.refresh)
	if err != nil {
		t.Fatal(err)
	}
	var stored int
	if err := e.admin.QueryRow(context.Background(), `select count(*) from refresh_tokens where token_hash = $1`, raw).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Error("a refresh token is stored in clear")
	}
}

// Logout revokes the session; the token is then refused (and presenting
// it is a reuse); logging out again changes nothing.
func TestLogoutRevokes(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	e.register("alice@example.org", "violet kettle humming 7")
	tok := e.login("alice@example.org", "violet kettle humming 7")
	other := e.login("alice@example.org", "violet kettle humming 7") // another session
	logout := func(token string) {
		t.Helper()
		sendJSON(t, nil, "POST", e.url+"/api/v1/auth/logout", map[string]string{"refresh_token": token}, other.access).want(t, "logout", 204)
	}
	logout(tok.refresh)
	e.refresh(tok.refresh).want(t, "refresh after logout", 401, "invalid-token")
	logout(tok.refresh)
	logout("not-a-token")
	sendJSON(t, nil, "POST", e.url+"/api/v1/auth/logout", map[string]string{}, other.access).want(t, "logout without a refresh token", 400, "invalid-field")
	// The other session lives on.
	e.refresh(other.refresh).want(t, "other session", 200)
	got := types(e.authEvents(tok.refresh, other.refresh))
	want := []string{events.UserRegistered, events.UserLoggedIn, events.UserLoggedIn, events.UserLoggedOut,
		events.UserTokenReuseDetected, events.UserTokenRefreshed}
	if !slices.Equal(got, want) {
		t.Errorf("events %v; want %v", got, want)
	}
}

// An expired refresh token is refused, and that is no reuse.
func TestRefreshTokenExpires(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	e.register("alice@example.org", "violet kettle humming 7")
	tok := e.login("alice@example.org", "violet kettle humming 7")
	var secs int64
	if err := e.admin.QueryRow(context.Background(), `select extract(epoch from expires_at - created_at)::bigint from refresh_tokens`).Scan(&secs); err != nil {
		t.Fatal(err)
	}
	if ttl := time.Duration(secs) * time.Second; ttl != auth.DefaultRefreshTokenTTL {
		t.Errorf("refresh token valid for %s; want %s", ttl, auth.DefaultRefreshTokenTTL)
	}
	if _, err := e.admin.Exec(context.Background(), `update refresh_tokens set expires_at = created_at + interval '1 microsecond'`); err != nil {
		t.Fatal(err)
	}
	e.refresh(tok.refresh).want(t, "expired refresh token", 401, "invalid-token")
	if got := types(e.authEvents()); slices.Contains(got, events.UserTokenReuseDetected) || slices.Contains(got, events.UserTokenRefreshed) {
		t.Errorf("events %v after an expired refresh", got)
	}
}

// Changing the password needs the current one, follows the password
// rules, revokes every session and ends the access tokens issued before.
func TestChangePassword(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{}, fastArgon2)
	e.register("alice@example.org", "violet kettle humming 7")
	a := e.login("alice@example.org", "violet kettle humming 7")
	b := e.login("alice@example.org", "violet kettle humming 7")
	change := func(current, next string) authReply {
		return sendJSON(t, nil, "POST", e.url+"/api/v1/me/password", map[string]string{"current_password": current, "new_password": next}, a.access)
	}
	change("wrong password here!", "new kettle whistles 8").want(t, "wrong current password", 403, "wrong-password")
	if r := change("violet kettle humming 7", "alice123456789"); r.status != 422 || r.problem() != "weak-password" || r.body["field"] != "new_password" {
		t.Errorf("weak new password: %d %s", r.status, r.raw)
	}
	sendJSON(t, nil, "POST", e.url+"/api/v1/me/password", map[string]string{"current_password": "x", "new_password": "new kettle whistles 8"}, "").
		want(t, "without a token", 401, "authentication-required")
	change("violet kettle humming 7", "new kettle whistles 8").want(t, "change", 204)

	sendJSON(t, nil, "GET", e.url+"/api/v1/me", nil, a.access).want(t, "old access token", 401, "invalid-token")
	e.refresh(b.refresh).want(t, "old refresh token", 401, "invalid-token")
	sendJSON(t, nil, "POST", e.url+"/api/v1/auth/login", creds("alice@example.org", "violet kettle humming 7"), "").
		want(t, "old password", 401, "invalid-credentials")
	c := e.login("alice@example.org", "new kettle whistles 8")
	sendJSON(t, nil, "GET", e.url+"/api/v1/me", nil, c.access).want(t, "new access token", 200)

	evs := ofTypeEnv(e.authEvents("violet kettle", "new kettle"), events.UserPasswordChanged)
	if len(evs) != 1 {
		t.Fatalf("%d user.password_changed; want 1", len(evs))
	}
	if d := authData(t, evs[0]); d.RevokedTokens == nil || *d.RevokedTokens != 2 {
		t.Errorf("password_changed %+v; want 2 revoked tokens", d)
	}
}

// The rate limits are counted in Redis: two API instances (separate Deps,
// the same Redis keyspace) share them, and the one over the limit answers
// 429 too-many-requests with Retry-After.
func TestRateLimitsAcrossInstances(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{Auth: httpapi.AuthConfig{Limits: auth.Limits{
		LoginPerAccount: auth.Limit{Count: 3, Period: time.Minute},
		LoginPerIP:      auth.Limit{Count: 6, Period: time.Minute},
		RegisterPerIP:   auth.Limit{Count: 2, Period: time.Hour},
	}}}, fastArgon2)
	other, _ := e.start(fastArgon2)
	e.register("alice@example.org", "violet kettle humming 7")
	login := func(url, email string) authReply {
		return sendJSON(t, nil, "POST", url+"/api/v1/auth/login", creds(email, "wrong password here!"), "")
	}
	// Per account: 3 a minute, wherever they are sent.
	login(e.url, "alice@example.org").want(t, "1st", 401)
	login(other, "ALICE@example.org").want(t, "2nd (other instance)", 401)
	login(e.url, "alice@example.org").want(t, "3rd", 401)
	r := login(other, "alice@example.org").want(t, "4th (other instance)", 429, "too-many-requests")
	if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 || secs > 60 {
		t.Errorf("Retry-After %q; want 1-60 seconds", r.header.Get("Retry-After"))
	}
	// The right password is refused too while the account is limited.
	sendJSON(t, nil, "POST", e.url+"/api/v1/auth/login", creds("alice@example.org", "violet kettle humming 7"), "").
		want(t, "right password while limited", 429, "too-many-requests")
	// Per IP: 6 a minute, whatever the account (5 counted so far).
	login(other, "bob@example.org").want(t, "6th from this IP", 401)
	login(e.url, "carol@example.org").want(t, "7th from this IP", 429, "too-many-requests")
	// Registration: 2 an hour from this IP (1 used).
	e.register("dave@example.org", "quiet orange lanterns 12")
	sendJSON(t, nil, "POST", other+"/api/v1/auth/register", creds("erin@example.org", "quiet orange lanterns 12"), "").
		want(t, "3rd registration", 429, "too-many-requests")
	// Limited attempts did nothing: no login event, no account.
	if n := len(ofTypeEnv(e.authEvents(), events.UserLoginFailed)); n != 4 {
		t.Errorf("%d login failures recorded; want 4", n)
	}
	if n := e.count("users"); n != 2 {
		t.Errorf("%d users; want 2", n)
	}
	// The counts are Redis keys under the configured prefix.
	keys, err := e.rdb.Keys(context.Background(), "rate:"+e.cfg.Auth.RateLimitPrefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("rate limit keys: %v, %v", keys, err)
	}
	for _, k := range keys {
		if strings.Contains(k, "alice") {
			t.Errorf("key %s names the email", k)
		}
	}
}
