package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/docuvault/docuvault/internal/auth"
	"github.com/docuvault/docuvault/internal/httpapi"
)

// loopbackProxy trusts the tests' own address: the test client plays the
// reverse proxy.
var loopbackProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// sendVia sends a JSON POST with X-Forwarded-For set to xff ("": none).
func sendVia(t *testing.T, url, xff string, body any) authReply {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := authReply{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &out.body)
	return out
}

// clientIPs returns the client_ip of every audit row of action, in order
// ("" for none), and checks the outbox rows of the same events agree.
func (e *authEnv) clientIPs(action string) []string {
	e.t.Helper()
	rows, err := e.admin.Query(context.Background(), `select coalesce(host(a.client_ip), ''), coalesce(host(o.client_ip), '')
		from audit_log a join outbox o on o.event_id = a.event_id where a.action = $1 order by a.id`, action)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var audit, outbox string
		if err := rows.Scan(&audit, &outbox); err != nil {
			e.t.Fatal(err)
		}
		if audit != outbox {
			e.t.Errorf("%s: audit client_ip %q, outbox %q", action, audit, outbox)
		}
		out = append(out, audit)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func wrongLogin(email string) map[string]string { return creds(email, "wrong password here!") }

// Behind a trusted proxy, each forwarded client has its own login budget,
// however it decorates X-Forwarded-For, and is recorded under its own
// address; a malformed header counts against the proxy.
func TestTrustedProxyForwardsTheClient(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{TrustedProxies: loopbackProxy, Auth: httpapi.AuthConfig{Limits: auth.Limits{
		LoginPerIP:      auth.Limit{Count: 2, Period: time.Hour},
		LoginPerAccount: auth.Limit{Count: 100, Period: time.Minute},
	}}}, fastArgon2)
	login := e.url + "/api/v1/auth/login"
	const a, b = "198.51.100.1", "2001:db8:1:2::7"

	sendVia(t, login, a, wrongLogin("x@example.org")).want(t, "A 1st", 401, "invalid-credentials")
	sendVia(t, login, a, wrongLogin("y@example.org")).want(t, "A 2nd", 401, "invalid-credentials")
	sendVia(t, login, a, wrongLogin("z@example.org")).want(t, "A 3rd", 429, "too-many-requests")
	// What the client puts left of its own address changes nothing.
	sendVia(t, login, "203.0.113.99, "+a, wrongLogin("x@example.org")).want(t, "A prepending a forged address", 429, "too-many-requests")
	// B has its own budget, whether one proxy or a chain forwarded it:
	// "spoofed, real, proxy" is the real one.
	sendVia(t, login, b, wrongLogin("x@example.org")).want(t, "B 1st", 401, "invalid-credentials")
	sendVia(t, login, "203.0.113.99, "+b+", 127.0.0.1", wrongLogin("x@example.org")).want(t, "B 2nd, through two proxies", 401, "invalid-credentials")
	sendVia(t, login, b, wrongLogin("x@example.org")).want(t, "B 3rd", 429, "too-many-requests")
	// Another address of B's /64 is B.
	sendVia(t, login, "2001:db8:1:2::8", wrongLogin("x@example.org")).want(t, "B's /64", 429, "too-many-requests")
	// A malformed header, or none, is the proxy's: a budget of its own,
	// never the one of an address the header names.
	sendVia(t, login, "bogus, "+a+", not-an-address", wrongLogin("x@example.org")).want(t, "malformed 1st", 401, "invalid-credentials")
	sendVia(t, login, "", wrongLogin("x@example.org")).want(t, "no header", 401, "invalid-credentials")
	sendVia(t, login, "unknown", wrongLogin("x@example.org")).want(t, "malformed 3rd", 429, "too-many-requests")

	// The audit rows and events name the forwarded client.
	want := []string{a, a, b, b, "127.0.0.1", "127.0.0.1"}
	if got := e.clientIPs("user.login_failed"); !equal(got, want) {
		t.Errorf("login_failed client_ip %v; want %v", got, want)
	}
	// So do a login's refresh token and its event, and a refresh's.
	e.register("carol@example.org", "violet kettle humming 7")
	tok := sendVia(t, login, "192.0.2.33", creds("carol@example.org", "violet kettle humming 7")).want(t, "login", 200).tokens(t)
	sendVia(t, e.url+"/api/v1/auth/refresh", "192.0.2.34", map[string]string{"refresh_token": tok.refresh}).want(t, "refresh", 200)
	if got := e.clientIPs("user.logged_in"); !equal(got, []string{"192.0.2.33"}) {
		t.Errorf("logged_in client_ip %v; want [192.0.2.33]", got)
	}
	if got := e.clientIPs("user.token_refreshed"); !equal(got, []string{"192.0.2.34"}) {
		t.Errorf("token_refreshed client_ip %v; want [192.0.2.34]", got)
	}
	var ips []string
	rows, err := e.admin.Query(context.Background(), `select host(client_ip) from refresh_tokens order by created_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			t.Fatal(err)
		}
		ips = append(ips, ip)
	}
	if rows.Close(); !equal(ips, []string{"192.0.2.33", "192.0.2.34"}) {
		t.Errorf("refresh tokens' client_ip %v; want [192.0.2.33 192.0.2.34]", ips)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Without trusted proxies X-Forwarded-For is ignored: a client that sends
// a new one each time still has one budget, and is recorded as itself.
func TestUntrustedForwardedForIsIgnored(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{Auth: httpapi.AuthConfig{Limits: auth.Limits{
		LoginPerIP:      auth.Limit{Count: 2, Period: time.Hour},
		LoginPerAccount: auth.Limit{Count: 100, Period: time.Minute},
	}}}, fastArgon2)
	login := e.url + "/api/v1/auth/login"
	sendVia(t, login, "198.51.100.1", wrongLogin("x@example.org")).want(t, "1st", 401, "invalid-credentials")
	sendVia(t, login, "198.51.100.2", wrongLogin("x@example.org")).want(t, "2nd, another forged address", 401, "invalid-credentials")
	sendVia(t, login, "198.51.100.3, 127.0.0.1", wrongLogin("x@example.org")).want(t, "3rd, another forged address", 429, "too-many-requests")
	if got := e.clientIPs("user.login_failed"); !equal(got, []string{"127.0.0.1", "127.0.0.1"}) {
		t.Errorf("login_failed client_ip %v; want the peer's", got)
	}
}

// A refresh with a token that is not of the token format is answered 401
// and counted against its client only: it charges no account, and other
// clients behind the same proxy keep their budget.
func TestMalformedRefreshTokensChargeOnlyTheirClient(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, httpapi.Config{TrustedProxies: loopbackProxy, Auth: httpapi.AuthConfig{Limits: auth.Limits{
		RefreshPerIP:      auth.Limit{Count: 3, Period: time.Hour},
		RefreshPerAccount: auth.Limit{Count: 1, Period: time.Hour},
	}}}, fastArgon2)
	refresh := e.url + "/api/v1/auth/refresh"
	e.register("dave@example.org", "violet kettle humming 7")
	tok := sendVia(t, e.url+"/api/v1/auth/login", "192.0.2.10", creds("dave@example.org", "violet kettle humming 7")).want(t, "login", 200).tokens(t)
	for i, junk := range []string{"junk", tok.refresh + "x", tok.refresh[:len(tok.refresh)-1] + "!"} {
		sendVia(t, refresh, "203.0.113.66", map[string]string{"refresh_token": junk}).want(t, "junk "+string(rune('1'+i)), 401, "invalid-token")
	}
	sendVia(t, refresh, "203.0.113.66", map[string]string{"refresh_token": "junk"}).want(t, "junk over the IP limit", 429, "too-many-requests")
	// Dave, behind the same proxy, refreshes: his account's single
	// refresh an hour was not touched by the junk.
	sendVia(t, refresh, "192.0.2.10", map[string]string{"refresh_token": tok.refresh}).want(t, "dave", 200).tokens(t)
}

// Behind a trusted proxy each forwarded client has its own upload cap.
func TestUploadCapPerForwardedClient(t *testing.T) {
	t.Parallel()
	e := newHardEnv(t, httpapi.Config{UploadMaxBytes: 1 << 20, UploadConcurrencyPerClient: 1, StallTimeout: 30 * time.Second,
		TrustedProxies: loopbackProxy})
	mp := multipartBody(boundary, filePart("a.pdf", pdf))
	const a, b = "198.51.100.1", "198.51.100.2"

	// A holds its only slot.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(uploadHead(len(mp), mp[:len(mp)/2], "X-Forwarded-For: "+a)); err != nil {
		t.Fatal(err)
	}
	eventuallyStatus(t, http.StatusTooManyRequests, func() *reply {
		return send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, nil, "X-Forwarded-For", a)
	})
	// A forged address left of A's does not free it.
	if r := send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, mp, "X-Forwarded-For", "203.0.113.9, "+a); r.status != http.StatusTooManyRequests {
		t.Errorf("A with a forged address prepended: %s; want 429", r)
	}
	// B, behind the same proxy, uploads meanwhile; so does the proxy
	// itself (no header).
	r := send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, mp, "X-Forwarded-For", b)
	if r.status != http.StatusAccepted {
		t.Fatalf("B while A's upload is in flight: %s; want 202", r)
	}
	var id string
	if err := json.Unmarshal(r.body, &struct{ ID *string }{&id}); err != nil || id == "" {
		t.Fatalf("B's upload answered %s", r.body)
	}
	if r := send(t, http.MethodPost, e.base+"/api/v1/documents", mpType, mp); r.status != http.StatusAccepted {
		t.Fatalf("the proxy's own upload while A's is in flight: %s; want 202", r)
	}
	var ip string
	if err := e.admin.QueryRow(context.Background(),
		`select host(client_ip) from audit_log where aggregate_id = $1 and action = 'document.uploaded'`, id).Scan(&ip); err != nil {
		t.Fatal(err)
	}
	if ip != b {
		t.Errorf("B's upload audited from %s; want %s", ip, b)
	}
}
