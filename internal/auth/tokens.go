package auth

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/events"
)

// Access tokens are JWTs (RFC 7519) signed with HMAC-SHA-256 under a key
// derived from SECRET_KEY with HKDF-SHA-256 and its own info string (the
// cloud credentials key has another: cloudsync). Their header names the
// key (kid: the first 8 bytes of the key's SHA-256, hex), so that a key
// rotation can keep verifying the previous key's tokens until they
// expire.

// accessTokenInfo is the HKDF info string of the access token signing key.
const accessTokenInfo = "docuvault/access-token-hs256/v1"

// Issuer and Audience of every access token; verification requires both.
const (
	Issuer   = "docuvault"
	Audience = "docuvault-api"
)

// DefaultAccessTokenTTL is how long an access token is valid unless
// configured otherwise (AUTH_ACCESS_TOKEN_TTL).
const DefaultAccessTokenTTL = 15 * time.Minute

// clockSkew is how far the clocks of two API replicas may disagree: a
// token is accepted that long after its exp and before its iat and nbf.
const clockSkew = 5 * time.Second

// maxTokenLen bounds the tokens Verify parses; DocuVault's are about 300
// bytes.
const maxTokenLen = 4096

// ErrInvalidToken means an access token is malformed, signed with another
// key or algorithm, expired, not yet valid or not for this API. Its
// cause, when wrapped, is for logs (it never contains the token).
var ErrInvalidToken = errors.New("invalid access token")

// Claims is what a valid access token says.
type Claims struct {
	UserID uuid.UUID // sub
	// TokenVersion is the user's token version when the token was issued:
	// a password change raises it, ending the tokens issued before.
	TokenVersion int
	IssuedAt     time.Time
	ExpiresAt    time.Time
	ID           string // jti
}

// accessClaims are the JWT claims: the registered ones plus ver.
type accessClaims struct {
	TokenVersion int `json:"ver"`
	jwt.RegisteredClaims
}

// IssuerConfig configures an Issuer. Zero values mean the defaults.
type IssuerConfig struct {
	TTL time.Duration // default DefaultAccessTokenTTL
	// Now is the clock tokens are issued and checked by (default
	// time.Now); tests set it to issue tokens in the past.
	Now func() time.Time
}

// TokenIssuer issues and verifies access tokens.
type TokenIssuer struct {
	kid    string
	key    []byte
	ttl    time.Duration
	now    func() time.Time
	parser *jwt.Parser
	// pseudonym keys the ids of failed logins for unknown emails.
	pseudonym []byte
}

// unknownLoginInfo is the HKDF info string of the key of UnknownUserID.
const unknownLoginInfo = "docuvault/unknown-login-id/v1"

// UnknownUserID is the id failed logins for email, which no account has,
// are recorded under: the same for every attempt on that address (any
// case, surrounding spaces ignored), and neither the address nor a hash
// anyone without SECRET_KEY could check a guess against.
func (it *TokenIssuer) UnknownUserID(email string) uuid.UUID {
	mac := hmac.New(sha256.New, it.pseudonym)
	mac.Write([]byte(strings.ToLower(strings.TrimSpace(email))))
	return events.UnknownUserID(mac.Sum(nil))
}

// NewIssuer derives the signing key from secretKey (SECRET_KEY; at least
// 32 bytes, which config.SecretKey checks at start-up).
func NewIssuer(secretKey string, cfg IssuerConfig) (*TokenIssuer, error) {
	if len(secretKey) < 32 {
		return nil, errors.New("SECRET_KEY: too short to derive a token signing key")
	}
	key, err := hkdf.Key(sha256.New, []byte(secretKey), nil, accessTokenInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive the token signing key: %w", err)
	}
	pseudonym, err := hkdf.Key(sha256.New, []byte(secretKey), nil, unknownLoginInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive the unknown login key: %w", err)
	}
	sum := sha256.Sum256(key)
	it := &TokenIssuer{kid: hex.EncodeToString(sum[:8]), key: key, pseudonym: pseudonym, ttl: cfg.TTL, now: cfg.Now}
	if it.ttl <= 0 {
		it.ttl = DefaultAccessTokenTTL
	}
	if it.now == nil {
		it.now = time.Now
	}
	it.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(Issuer), jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithLeeway(clockSkew), jwt.WithTimeFunc(func() time.Time { return it.now() }),
	)
	return it, nil
}

// TTL is how long the tokens it issues are valid.
func (it *TokenIssuer) TTL() time.Duration { return it.ttl }

// KeyID is the kid of the tokens it issues.
func (it *TokenIssuer) KeyID() string { return it.kid }

// Issue returns an access token for user at tokenVersion, valid from now
// for TTL, and its expiry.
func (it *TokenIssuer) Issue(user uuid.UUID, tokenVersion int) (string, time.Time, error) {
	now := it.now().Truncate(time.Second)
	exp := now.Add(it.ttl)
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, accessClaims{
		TokenVersion: tokenVersion,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: Issuer, Subject: user.String(), Audience: jwt.ClaimStrings{Audience},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp),
			ID: uuid.Must(uuid.NewV7()).String(),
		},
	})
	tok.Header["kid"] = it.kid
	s, err := tok.SignedString(it.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign access token: %w", err)
	}
	return s, exp, nil
}

// Verify checks token (signature, algorithm HS256 only, kid, iss, aud,
// exp, iat, nbf, a UUID subject) and returns its claims, or an error
// wrapping ErrInvalidToken.
func (it *TokenIssuer) Verify(token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	var c accessClaims
	_, err := it.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != it.kid {
			return nil, errors.New("unknown key id")
		}
		return it.key, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	user, err := uuid.Parse(c.Subject)
	if err != nil || c.IssuedAt == nil || c.TokenVersion < 1 {
		return Claims{}, fmt.Errorf("%w: no user, iat or ver", ErrInvalidToken)
	}
	return Claims{UserID: user, TokenVersion: c.TokenVersion, IssuedAt: c.IssuedAt.Time,
		ExpiresAt: c.ExpiresAt.Time, ID: c.ID}, nil
}

// DefaultRefreshTokenTTL is how long a refresh token is valid unless
// configured otherwise (AUTH_REFRESH_TOKEN_TTL). Every refresh gives a
// new one, so a session ends after this long unused.
const DefaultRefreshTokenTTL = 30 * 24 * time.Hour

// refreshTokenBytes is the entropy of a refresh token.
const refreshTokenBytes = 32

// NewRefreshToken returns a new opaque refresh token (32 random bytes,
// unpadded base64url) and the SHA-256 that is stored in its place.
func NewRefreshToken() (token string, hash []byte) {
	raw := make([]byte, refreshTokenBytes)
	_, _ = rand.Read(raw) // never fails (crypto/rand)
	sum := sha256.Sum256(raw)
	return base64.RawURLEncoding.EncodeToString(raw), sum[:]
}

// RefreshTokenHash returns the stored form of a refresh token, or false
// when token is not one NewRefreshToken could have made.
func RefreshTokenHash(token string) ([]byte, bool) {
	if len(token) != base64.RawURLEncoding.EncodedLen(refreshTokenBytes) {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != refreshTokenBytes {
		return nil, false
	}
	sum := sha256.Sum256(raw)
	return sum[:], true
}
