package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// account is a user signed in to a running API.
type account struct {
	ID       string // users.id: documents live under users/{ID}/documents/
	Email    string
	Password string
	Access   string // access token, sent as Authorization: Bearer
	Refresh  string
}

// newCredentials returns a unique email and a password the policy accepts
// (12+ characters, not common, not containing the email's local part).
func newCredentials() (email, password string) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return "e2e-" + h[:12] + "@example.org", "Quiet lanterns drift " + h[12:]
}

// authJSON posts body as JSON to base+path with client (no token unless
// the client adds one) and decodes a JSON answer into out when given. It
// returns the status and the raw body.
func authJSON(t testing.TB, client *http.Client, base, path string, body, out any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if out != nil && len(got) > 0 {
		_ = json.Unmarshal(got, out)
	}
	return resp.StatusCode, got
}

// tokenPair is the answer of login and refresh.
type tokenPair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
}

// login logs email in and returns the token pair; any status but 200 ends
// the test.
func login(t testing.TB, base, email, password string) tokenPair {
	t.Helper()
	var pair tokenPair
	code, body := authJSON(t, http.DefaultClient, base, "/api/v1/auth/login", map[string]string{"email": email, "password": password}, &pair)
	if code != http.StatusOK || pair.AccessToken == "" || pair.TokenType != "Bearer" {
		t.Fatalf("login %s: %d %s", email, code, body)
	}
	return pair
}

// signIn registers a new account on the API at base (the first one of a
// database is its administrator) and logs it in.
func signIn(t testing.TB, base string) account {
	t.Helper()
	email, password := newCredentials()
	var user struct{ ID string }
	code, body := authJSON(t, http.DefaultClient, base, "/api/v1/auth/register", map[string]string{"email": email, "password": password}, &user)
	if code != http.StatusCreated || user.ID == "" {
		t.Fatalf("register %s: %d %s", email, code, body)
	}
	pair := login(t, base, email, password)
	return account{ID: user.ID, Email: email, Password: password, Access: pair.AccessToken, Refresh: pair.RefreshToken}
}

// bearer is a RoundTripper that adds Authorization: Bearer token to every
// request (on a clone: the caller's request is left as is) and sends it
// through next.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

// withToken returns next (http.DefaultTransport, which TestMain wraps with
// the OpenAPI validation, when nil) sending token.
func withToken(token string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return bearer{token: token, next: next}
}

// client returns an http.Client that acts for a (through the validating
// default transport).
func (a account) client() *http.Client {
	return &http.Client{Transport: withToken(a.Access, nil)}
}
