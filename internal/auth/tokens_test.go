package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/testenv"
)

const testSecret = "0123456789abcdef0123456789abcdef-test"

func newIssuer(t *testing.T, secret string, now func() time.Time) *TokenIssuer {
	t.Helper()
	it, err := NewIssuer(secret, IssuerConfig{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return it
}

func TestIssueAndVerify(t *testing.T) {
	it := newIssuer(t, testSecret, nil)
	user := uuid.Must(uuid.NewV7())
	tok, exp, err := it.Issue(user, 3)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 14*time.Minute || d > 15*time.Minute {
		t.Errorf("expires in %s; want the default 15m", d)
	}
	c, err := it.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != user || c.TokenVersion != 3 || !c.ExpiresAt.Equal(exp) || c.ID == "" {
		t.Errorf("claims %+v", c)
	}
	// The header names the algorithm and the key.
	header, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if !strings.Contains(string(header), `"alg":"HS256"`) || !strings.Contains(string(header), `"kid":"`+it.KeyID()+`"`) {
		t.Errorf("header %s", header)
	}
	// Another issuer with the same SECRET_KEY (another replica) accepts it.
	if _, err := newIssuer(t, testSecret, nil).Verify(tok); err != nil {
		t.Errorf("another replica refuses the token: %v", err)
	}
}

// Every way a token can be wrong is refused with ErrInvalidToken.
func TestVerifyRefuses(t *testing.T) {
	now := time.Now()
	it := newIssuer(t, testSecret, nil)
	user := uuid.Must(uuid.NewV7())
	good, _, _ := it.Issue(user, 1)
	parts := strings.Split(good, ".")
	past, _, _ := newIssuer(t, testSecret, func() time.Time { return now.Add(-time.Hour) }).Issue(user, 1)
	future, _, _ := newIssuer(t, testSecret, func() time.Time { return now.Add(time.Hour) }).Issue(user, 1)
	otherKey, _, _ := newIssuer(t, testSecret+"-other", nil).Issue(user, 1)

	// A payload byte flipped, signature kept.
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	payload[len(payload)/2] ^= 0x01
	flipped := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
		tok := jwt.NewWithClaims(method, claims)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": Issuer, "aud": Audience, "sub": user.String(), "ver": 1,
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "x"}
		edit(c)
		return c
	}
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(func(jwt.MapClaims) {}), it.KeyID())
	hs512 := sign(jwt.SigningMethodHS512, it.key, claims(func(jwt.MapClaims) {}), it.KeyID())
	for name, tok := range map[string]string{
		"expired":           past,
		"issued later":      future,
		"another key":       otherKey,
		"payload flipped":   flipped,
		"alg none":          none,
		"alg none, no sig":  strings.TrimSuffix(none, "."),
		"HS512":             hs512,
		"unknown kid":       sign(jwt.SigningMethodHS256, it.key, claims(func(jwt.MapClaims) {}), "0000000000000000"),
		"no kid":            sign(jwt.SigningMethodHS256, it.key, claims(func(jwt.MapClaims) {}), ""),
		"other issuer":      sign(jwt.SigningMethodHS256, it.key, claims(func(c jwt.MapClaims) { c["iss"] = "someone" }), it.KeyID()),
		"other audience":    sign(jwt.SigningMethodHS256, it.key, claims(func(c jwt.MapClaims) { c["aud"] = "other-api" }), it.KeyID()),
		"no exp":            sign(jwt.SigningMethodHS256, it.key, claims(func(c jwt.MapClaims) { delete(c, "exp") }), it.KeyID()),
		"no iat":            sign(jwt.SigningMethodHS256, it.key, claims(func(c jwt.MapClaims) { delete(c, "iat") }), it.KeyID()),
		"not yet valid":     sign(jwt.SigningMethodHS256, it.key, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }), it.KeyID()),
		"subject not uuid":  sign(jwt.SigningMethodHS256, it.key, claims(func(c jwt.MapClaims) { c["sub"] = "admin" }), it.KeyID()),
		"no version":        sign(jwt.SigningMethodHS256, it.key, claims(func(c jwt.MapClaims) { delete(c, "ver") }), it.KeyID()),
		"garbage":           "not.a.jwt",
		"empty":             "",
		"signature dropped": parts[0] + "." + parts[1] + ".",
		"huge":              strings.Repeat("a", 5000),
	} {
		if _, err := it.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: Verify = %v; want ErrInvalidToken", name, err)
		}
	}
	// The clock skew allowance is small: a token expired 4 s ago (under
	// the 5 s leeway) passes, one expired a minute ago does not.
	recent, _, _ := newIssuer(t, testSecret, func() time.Time { return now.Add(-DefaultAccessTokenTTL - 4*time.Second) }).Issue(user, 1)
	if _, err := it.Verify(recent); err != nil {
		t.Errorf("a token expired 4 s ago is refused: %v", err)
	}
}

func TestIssuerNeedsALongSecret(t *testing.T) {
	if _, err := NewIssuer("short", IssuerConfig{}); err == nil || strings.Contains(err.Error(), "short\"") {
		t.Errorf("NewIssuer with a short secret: %v", err)
	}
}

// The signing key is not the credentials key: the same SECRET_KEY gives
// different keys to different purposes (HKDF info strings).
func TestSigningKeyIsItsOwn(t *testing.T) {
	it := newIssuer(t, testSecret, nil)
	if string(it.key) == testSecret || len(it.key) != 32 {
		t.Errorf("the signing key is the secret itself or not 32 bytes")
	}
}

func TestRefreshTokens(t *testing.T) {
	tok, hash := NewRefreshToken()
	if len(tok) != 43 || len(hash) != 32 {
		t.Fatalf("token %q (%d), hash %d bytes", tok, len(tok), len(hash))
	}
	got, ok := RefreshTokenHash(tok)
	if !ok || string(got) != string(hash) {
		t.Error("RefreshTokenHash does not give the hash NewRefreshToken gave")
	}
	other, _ := NewRefreshToken()
	if other == tok {
		t.Error("two refresh tokens are equal")
	}
	for _, bad := range []string{"", "abc", tok + "A", tok[:42] + "=", strings.Repeat("!", 43)} {
		if _, ok := RefreshTokenHash(bad); ok {
			t.Errorf("RefreshTokenHash(%q) accepted", bad)
		}
	}
}

// The limiter lets Count attempts through at once, then refuses with the
// time to wait; the count lives in Redis, so a second limiter on the same
// keys (another replica, or the same one restarted) shares it.
func TestRateLimiterSharedThroughRedis(t *testing.T) {
	rdb := testenv.RedisClient(t, testenv.RedisURL())
	prefix := testenv.Unique("dvtest:auth:") + ":"
	a, b := NewRateLimiter(rdb, prefix), NewRateLimiter(rdb, prefix)
	ctx := context.Background()
	l := Limit{Count: 3, Period: time.Minute}
	for i, rl := range []*RateLimiter{a, b, a} {
		if wait, err := rl.Allow(ctx, "login", "ip", "192.0.2.1", l); err != nil || wait != 0 {
			t.Fatalf("attempt %d: wait %s, %v", i+1, wait, err)
		}
	}
	wait, err := b.Allow(ctx, "login", "ip", "192.0.2.1", l)
	if err != nil || wait < time.Second || wait > 20*time.Second {
		t.Errorf("4th attempt: wait %s, %v; want about 20s", wait, err)
	}
	// Other subjects, values and actions have their own counts.
	for _, k := range [][3]string{{"login", "ip", "192.0.2.2"}, {"login", "account", "192.0.2.1"}, {"register", "ip", "192.0.2.1"}} {
		if wait, err := a.Allow(ctx, k[0], k[1], k[2], l); err != nil || wait != 0 {
			t.Errorf("%v: wait %s, %v", k, wait, err)
		}
	}
	if n, _ := rdb.Exists(ctx, "rate:"+prefix+"login:ip:192.0.2.1").Result(); n != 1 {
		t.Errorf("no key rate:%slogin:ip:192.0.2.1 in Redis", prefix)
	}
	keys, _ := rdb.Keys(ctx, "rate:"+prefix+"*").Result()
	for _, k := range keys {
		rdb.Del(ctx, k)
	}
}

func TestAccountKeyHidesTheEmail(t *testing.T) {
	k := AccountKey(" Alice@Example.org ")
	if k != AccountKey("alice@example.org") || strings.Contains(k, "alice") || len(k) != 32 {
		t.Errorf("AccountKey = %q", k)
	}
}
