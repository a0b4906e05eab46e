package httpapi

import (
	"cmp"
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/auth"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// Accounts and authentication: /api/v1/auth/* and /api/v1/me.
//
// Access tokens are short-lived JWTs (auth.TokenIssuer); refresh tokens
// are opaque, stored hashed, rotated on every use, and grouped in families
// (one per login, the session): presenting a token that was exchanged or
// revoked already revokes its whole family (reuse detection). Every
// outcome worth knowing is recorded (audit row and outbox event in the
// change's transaction) without a password, token or hash in it.
//
// The authenticate middleware checks each request's bearer token against
// its user's row (one primary key lookup): a disabled or deleted user, or
// one whose password changed since the token was issued, loses access at
// once rather than when the token expires.

// Registration modes (AuthConfig.Registration).
const (
	RegistrationOpen      = "open"       // anyone may register
	RegistrationFirstUser = "first-user" // only the first account (the administrator)
	RegistrationClosed    = "closed"     // accounts come from `api users create`
)

// AuthConfig is how accounts and tokens behave. Zero values mean the
// defaults.
type AuthConfig struct {
	// Registration is RegistrationOpen (default), RegistrationFirstUser or
	// RegistrationClosed. Closed registration answers 403
	// registration-closed. The first account is an administrator.
	Registration string
	// RefreshTokenTTL is how long a refresh token may wait to be used
	// (default auth.DefaultRefreshTokenTTL); each refresh issues a new one.
	RefreshTokenTTL time.Duration
	// Limits are the rate limits of login, register and refresh (and of
	// password changes: login's), counted in Redis.
	Limits auth.Limits
	// RateLimitPrefix prefixes the rate limit keys in Redis (default
	// auth.DefaultRateLimitPrefix); replicas sharing counts share it.
	RateLimitPrefix string
}

func (a AuthConfig) withDefaults() AuthConfig {
	a.Registration = cmp.Or(a.Registration, RegistrationOpen)
	a.RefreshTokenTTL = cmp.Or(a.RefreshTokenTTL, auth.DefaultRefreshTokenTTL)
	a.Limits = a.Limits.WithDefaults()
	a.RateLimitPrefix = cmp.Or(a.RateLimitPrefix, auth.DefaultRateLimitPrefix)
	return a
}

// publicPaths are served without a token, and never look at the Authorization header: a client whose access token has
// expired may still send it when it refreshes.
var publicPaths = map[string]bool{
	"/api/v1/auth/register": true,
	"/api/v1/auth/login":    true,
	"/api/v1/auth/refresh":  true,
	"/api/v1/openapi.yaml":  true,
}

// bearerRealm is the WWW-Authenticate challenge of every 401.
const bearerRealm = `Bearer realm="docuvault"`

// unauthorized answers 401 with the Bearer challenge; invalidToken adds
// error="invalid_token" (RFC 6750 3.1).
func (s *server) unauthorized(w http.ResponseWriter, r *http.Request, invalidToken bool, err error) {
	challenge := bearerRealm
	if invalidToken {
		challenge += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	s.fail(w, r, err)
}

var (
	errAuthRequired = &apiError{status: http.StatusUnauthorized, typ: "authentication-required", title: "Authentication required",
		detail: "send Authorization: Bearer <access_token> (POST /api/v1/auth/login)"}
	errInvalidAccessToken = &apiError{status: http.StatusUnauthorized, typ: "invalid-token", title: "Invalid token",
		detail: "the access token is malformed, expired or revoked; refresh it or log in again"}
	errInvalidRefreshToken = &apiError{status: http.StatusUnauthorized, typ: "invalid-token", title: "Invalid token",
		detail: "the refresh token is unknown, expired or revoked; log in again"}
	// errInvalidCredentials is the one answer to every refused login, so
	// that it does not tell an unknown email from a wrong password.
	errInvalidCredentials = &apiError{status: http.StatusUnauthorized, typ: "invalid-credentials", title: "Invalid credentials",
		detail: "the email or the password is wrong"}
	errRegistrationClosed = &apiError{status: http.StatusForbidden, typ: "registration-closed", title: "Registration closed",
		detail: "this server does not accept new accounts; an administrator creates them"}
	errEmailTaken = &apiError{status: http.StatusConflict, typ: "email-taken", title: "Email taken",
		detail: "an account with this email exists", extra: map[string]any{"field": "email"}}
	errWrongPassword = &apiError{status: http.StatusForbidden, typ: "wrong-password", title: "Wrong password",
		detail: "current_password is not the account's password", extra: map[string]any{"field": "current_password"}}
)

// authenticate sets the principal of a request that carries a valid
// bearer access token. Every request under /api/v1 needs one (401
// authentication-required without, 401 invalid-token with a bad one) but
// for publicPaths.
//
// Only in tests (NewActing, export_test.go: no other build can set
// trustContext), a request whose context already carries a principal is
// passed through unchanged, so that a test wrapping the handler acts for
// a user without minting a token.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if publicPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		if _, ok := PrincipalFrom(r.Context()); ok && s.trustContext {
			next.ServeHTTP(w, r)
			return
		}
		values := r.Header.Values("Authorization")
		if len(values) == 0 {
			s.unauthorized(w, r, false, errAuthRequired)
			return
		}
		scheme, token, _ := strings.Cut(values[0], " ")
		token = strings.TrimSpace(token)
		if len(values) > 1 || !strings.EqualFold(scheme, "Bearer") || token == "" || s.Tokens == nil {
			s.unauthorized(w, r, true, errInvalidAccessToken)
			return
		}
		claims, err := s.Tokens.Verify(token)
		if err != nil {
			s.log(r).Debug("access token refused", "reason", err)
			s.unauthorized(w, r, true, errInvalidAccessToken)
			return
		}
		u, err := store.UserByID(r.Context(), s.DB, claims.UserID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			s.unauthorized(w, r, true, errInvalidAccessToken)
			return
		case err != nil:
			s.fail(w, r, dbErr(err))
			return
		case u.Status != store.UserActive || u.TokenVersion != claims.TokenVersion:
			s.unauthorized(w, r, true, errInvalidAccessToken)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), Principal{UserID: u.ID, Admin: u.IsAdmin})))
	})
}

// tokenPairJSON is the answer of login and refresh (RFC 6749 5.1).
type tokenPairJSON struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"` // seconds the access token is valid
}

// userJSON is an account as the API returns it.
type userJSON struct {
	ID        uuid.UUID `json:"id"`
	Email     string    `json:"email"`
	IsAdmin   bool      `json:"is_admin"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
}

func toUserJSON(u store.User) userJSON {
	return userJSON{ID: u.ID, Email: u.Email, IsAdmin: u.IsAdmin, Status: u.Status, CreatedAt: u.CreatedAt}
}

// credentials is the body of register and login.
type credentials struct {
	Email    *string `json:"email"`
	Password *string `json:"password"`
}

// readCredentials decodes the body of register and login, both fields
// required, or answers the problem and reports false.
func (s *server) readCredentials(w http.ResponseWriter, r *http.Request) (credentials, bool) {
	var in credentials
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return in, false
	}
	if err := requireFields("email", in.Email, "password", in.Password); err != nil {
		s.fail(w, r, err)
		return in, false
	}
	return in, true
}

// requireFields checks that the named fields are present and not empty.
func requireFields(fields ...any) error {
	for i := 0; i+1 < len(fields); i += 2 {
		if v := fields[i+1].(*string); v == nil || *v == "" {
			name := fields[i].(string)
			return &apiError{status: http.StatusBadRequest, typ: "invalid-field", title: "Bad request",
				detail: name + " is required", extra: map[string]any{"field": name}}
		}
	}
	return nil
}

// maxEmailLen is the longest email accepted, in bytes (users_email_length
// allows 320 characters).
const maxEmailLen = 320

// validEmail trims an email and checks its shape: one @ with something on
// each side, no white space or control characters, at most 320 bytes.
// Whether mail reaches it is not checked.
func validEmail(raw string) (string, error) {
	e := strings.TrimSpace(raw)
	local, domain, _ := strings.Cut(e, "@")
	bad := !utf8.ValidString(e) || len(e) > maxEmailLen || local == "" || domain == "" || strings.Contains(domain, "@") ||
		strings.IndexFunc(e, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
	if bad {
		return "", &apiError{status: http.StatusBadRequest, typ: "invalid-field", title: "Bad request",
			detail: "email must be an address such as alice@example.org (at most 320 bytes)", extra: map[string]any{"field": "email"}}
	}
	return e, nil
}

// weakPassword is the 422 of a password the policy refuses.
func weakPassword(field string, err error) error {
	var pe *auth.PolicyError
	if !errors.As(err, &pe) {
		return err
	}
	return &apiError{status: http.StatusUnprocessableEntity, typ: "weak-password", title: "Weak password",
		detail: pe.Detail, extra: map[string]any{"field": field, "reason": pe.Reason}}
}

// needIssuer refuses the request when the API has no token issuer (a
// wiring error: cmd/api always sets one).
func (s *server) needIssuer(w http.ResponseWriter, r *http.Request) bool {
	if s.Tokens == nil || s.Passwords == nil {
		s.fail(w, r, errors.New("authentication is not configured (no token issuer or password hasher)"))
		return false
	}
	return true
}

// rateCheck is one limit of an attempt: by client IP or by account.
type rateCheck struct {
	subject, value string
	limit          auth.Limit
}

// byIP counts against the request's client address (clientAddr; IPv6:
// its /64).
func (s *server) byIP(r *http.Request, l auth.Limit) rateCheck {
	ip := "unknown"
	if a := clientKey(s.clientAddr(r)); a.IsValid() {
		ip = a.String()
	}
	return rateCheck{"ip", ip, l}
}

func byAccount(key string, l auth.Limit) rateCheck { return rateCheck{"account", key, l} }

// allow counts an attempt of action against each check in turn, and
// answers 429 too-many-requests with Retry-After when one refuses it
// (503 when Redis cannot be asked: the limits are not skipped).
func (s *server) allow(w http.ResponseWriter, r *http.Request, action string, checks ...rateCheck) bool {
	for _, c := range checks {
		wait, err := s.limiter.Allow(r.Context(), action, c.subject, c.value, c.limit)
		if err != nil {
			s.fail(w, r, &unavailable{dependency: "redis", err: err})
			return false
		}
		if wait > 0 {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			s.fail(w, r, &apiError{status: http.StatusTooManyRequests, typ: "too-many-requests", title: "Too many requests",
				detail: "too many " + action + " attempts from this client or for this account; retry after " + strconv.Itoa(secs) + " s"})
			return false
		}
	}
	return true
}

// recordAuth runs change and records its events (none is fine) in one
// transaction. An authentication event is recorded even when the client
// goes away meanwhile: refused logins and reuse detection are worth
// keeping however the request ends.
func (s *server) recordAuth(r *http.Request, change func(ctx context.Context, tx pgx.Tx) ([]events.Envelope, error)) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.Config.ResponseTimeout)
	defer cancel()
	wrote := false
	err := store.WithTx(ctx, s.DB, func(tx pgx.Tx) error {
		evs, err := change(ctx, tx)
		if err != nil || len(evs) == 0 {
			return err
		}
		wrote = true
		return store.RecordAll(ctx, tx, evs, s.origin(r))
	})
	if err == nil && wrote {
		s.Notifier.Poke()
	}
	return err
}

// userEvent builds a user.* event about user id.
func userEvent(r *http.Request, typ string, id uuid.UUID, actor events.Actor, data any) (events.Envelope, error) {
	return events.New(typ, "user", id, actor, correlationID(r), nil, data)
}

func userActor(id uuid.UUID) events.Actor { return events.Actor{Type: "user", ID: &id} }

func revokedCount(n int64) *int64 { return &n }

// register creates an account: POST /api/v1/auth/register. The first
// account is an administrator.
func (s *server) register(w http.ResponseWriter, r *http.Request) {
	mode := s.Config.Auth.Registration
	if mode == RegistrationClosed {
		s.fail(w, r, errRegistrationClosed)
		return
	}
	if !s.needIssuer(w, r) {
		return
	}
	in, ok := s.readCredentials(w, r)
	if !ok {
		return
	}
	email, err := validEmail(*in.Email)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	lim := s.Config.Auth.Limits
	if !s.allow(w, r, "register", s.byIP(r, lim.RegisterPerIP), byAccount(auth.AccountKey(email), lim.RegisterPerAccount)) {
		return
	}
	if err := auth.CheckPassword(*in.Password, email); err != nil {
		s.fail(w, r, weakPassword("password", err))
		return
	}
	hash, err := s.Passwords.Hash(r.Context(), *in.Password)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var out store.User
	err = s.recordAuth(r, func(ctx context.Context, tx pgx.Tx) ([]events.Envelope, error) {
		var err error
		out, err = store.CreateUser(ctx, tx, store.NewUser{ID: uuid.Must(uuid.NewV7()), Email: email, PasswordHash: hash,
			OnlyFirst: mode == RegistrationFirstUser})
		if err != nil {
			return nil, err
		}
		ev, err := userEvent(r, events.UserRegistered, out.ID, requestActor(r), events.User{ID: out.ID, Email: out.Email, IsAdmin: out.IsAdmin})
		return []events.Envelope{ev}, err
	})
	switch {
	case errors.Is(err, store.ErrEmailTaken):
		s.fail(w, r, errEmailTaken)
	case errors.Is(err, store.ErrNotFirstUser):
		s.fail(w, r, errRegistrationClosed)
	case err != nil:
		s.fail(w, r, dbErr(err))
	default:
		s.log(r).Info("account registered", "user_id", out.ID, "admin", out.IsAdmin)
		writeJSON(w, http.StatusCreated, toUserJSON(out))
	}
}

// verifyPassword checks password against the stored hash, or, when there
// is none (no account, no password) or it is malformed (logged), against
// a dummy hash: every path costs one Argon2id verification, so the answer
// takes as long whatever the account. rehash says the stored hash uses
// parameters older than the current ones.
func (s *server) verifyPassword(r *http.Request, user uuid.UUID, password string, stored *string) (ok, rehash bool, err error) {
	ctx := r.Context()
	if stored != nil {
		ok, rehash, err = s.Passwords.Verify(ctx, password, *stored)
		if !errors.Is(err, auth.ErrMalformedHash) {
			return ok, rehash, err
		}
		s.log(r).Error("stored password hash is malformed", "user_id", user)
	}
	return false, false, s.Passwords.VerifyDummy(ctx, password)
}

// login exchanges an email and password for a token pair: POST
// /api/v1/auth/login. An unknown email, a wrong password and a disabled
// account get the same answer after the same work (one Argon2id
// verification: against a dummy hash when there is no account).
func (s *server) login(w http.ResponseWriter, r *http.Request) {
	if !s.needIssuer(w, r) {
		return
	}
	in, read := s.readCredentials(w, r)
	if !read {
		return
	}
	email := strings.TrimSpace(*in.Email)
	lim := s.Config.Auth.Limits
	if !s.allow(w, r, "login", s.byIP(r, lim.LoginPerIP), byAccount(auth.AccountKey(email), lim.LoginPerAccount)) {
		return
	}
	ctx := r.Context()
	u, err := store.UserByEmail(ctx, s.DB, email)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, dbErr(err))
		return
	}
	known := err == nil
	var stored *string
	if known {
		stored = u.PasswordHash
	}
	ok, rehash, err := s.verifyPassword(r, u.ID, *in.Password, stored)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reason := ""
	switch {
	case !known:
		reason = events.LoginUnknownUser
	case !ok:
		reason = events.LoginWrongPassword
	case u.Status != store.UserActive:
		reason = events.LoginDisabled
	}
	if reason != "" {
		id := s.Tokens.UnknownUserID(email)
		if known {
			id = u.ID
		}
		err := s.recordAuth(r, func(context.Context, pgx.Tx) ([]events.Envelope, error) {
			ev, err := userEvent(r, events.UserLoginFailed, id, events.Anonymous, events.UserAuth{ID: id, Reason: reason})
			return []events.Envelope{ev}, err
		})
		if err != nil {
			s.fail(w, r, dbErr(err))
			return
		}
		s.unauthorized(w, r, false, errInvalidCredentials)
		return
	}
	newHash := ""
	if rehash {
		// The hash was made with other Argon2 parameters: replace it now
		// that the password is at hand.
		if newHash, err = s.Passwords.Hash(ctx, *in.Password); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	refresh, tokenHash := auth.NewRefreshToken()
	family := uuid.Must(uuid.NewV7())
	err = s.recordAuth(r, func(ctx context.Context, tx pgx.Tx) ([]events.Envelope, error) {
		if newHash != "" {
			if err := store.SetPasswordHash(ctx, tx, u.ID, newHash); err != nil {
				return nil, err
			}
		}
		if err := s.insertRefreshToken(ctx, tx, r, u.ID, family, tokenHash); err != nil {
			return nil, err
		}
		ev, err := userEvent(r, events.UserLoggedIn, u.ID, userActor(u.ID), events.UserAuth{ID: u.ID, SessionID: &family})
		return []events.Envelope{ev}, err
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	s.writeTokens(w, r, u, refresh)
}

// insertRefreshToken stores a new refresh token of user in family.
func (s *server) insertRefreshToken(ctx context.Context, tx pgx.Tx, r *http.Request, user, family uuid.UUID, hash []byte) error {
	o := s.origin(r)
	_, err := store.InsertRefreshToken(ctx, tx, store.RefreshToken{ID: uuid.Must(uuid.NewV7()), UserID: user, FamilyID: family,
		TokenHash: hash, UserAgent: o.UserAgent, ClientIP: o.ClientIP}, s.Config.Auth.RefreshTokenTTL)
	return err
}

// writeTokens answers a new access token for u with refresh.
func (s *server) writeTokens(w http.ResponseWriter, r *http.Request, u store.User, refresh string) {
	access, _, err := s.Tokens.Issue(u.ID, u.TokenVersion)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, tokenPairJSON{AccessToken: access, RefreshToken: refresh, TokenType: "Bearer",
		ExpiresIn: int(s.Tokens.TTL().Seconds())})
}

// refreshBody is the body of refresh and logout.
type refreshBody struct {
	RefreshToken *string `json:"refresh_token"`
}

// refreshToken reads the refresh token of a refresh or logout request;
// false when the body is not one (answered with the problem).
func (s *server) refreshToken(w http.ResponseWriter, r *http.Request) (string, bool) {
	var in refreshBody
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return "", false
	}
	if err := requireFields("refresh_token", in.RefreshToken); err != nil {
		s.fail(w, r, err)
		return "", false
	}
	return *in.RefreshToken, true
}

// refresh exchanges a refresh token for a new pair: POST
// /api/v1/auth/refresh. The token can then no longer be used: presenting
// it again (or a revoked one) revokes its whole session and is recorded
// (user.token_reuse_detected).
func (s *server) refresh(w http.ResponseWriter, r *http.Request) {
	if !s.needIssuer(w, r) {
		return
	}
	token, ok := s.refreshToken(w, r)
	if !ok {
		return
	}
	// Every attempt counts against its client's address (behind trusted
	// proxies: the forwarded client's, so junk from one client exhausts
	// its own budget only). The account's budget is only charged once
	// the token is known to be its: a token that is not of the format
	// NewRefreshToken makes, or that matches no stored token, gets its
	// 401 before, and charges no account.
	lim := s.Config.Auth.Limits
	if !s.allow(w, r, "refresh", s.byIP(r, lim.RefreshPerIP)) {
		return
	}
	hash, ok := auth.RefreshTokenHash(token)
	if !ok {
		s.unauthorized(w, r, false, errInvalidRefreshToken)
		return
	}
	found, err := store.RefreshTokenByHash(r.Context(), s.DB, hash)
	if errors.Is(err, store.ErrNotFound) {
		s.unauthorized(w, r, false, errInvalidRefreshToken)
		return
	}
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	if !s.allow(w, r, "refresh", byAccount(found.UserID.String(), lim.RefreshPerAccount)) {
		return
	}
	next, nextHash := auth.NewRefreshToken()
	var u store.User
	issued := false
	err = s.recordAuth(r, func(ctx context.Context, tx pgx.Tx) ([]events.Envelope, error) {
		t, expired, err := store.LockRefreshToken(ctx, tx, hash)
		if err != nil {
			return nil, err
		}
		if t.UsedAt != nil || t.RevokedAt != nil {
			n, err := store.RevokeRefreshFamily(ctx, tx, t.FamilyID)
			if err != nil {
				return nil, err
			}
			reason := events.ReuseRevoked
			if t.UsedAt != nil {
				reason = events.ReuseUsed
			}
			s.log(r).Warn("refresh token reuse: session revoked", "user_id", t.UserID, "session_id", t.FamilyID, "reason", reason)
			ev, err := userEvent(r, events.UserTokenReuseDetected, t.UserID, events.Anonymous,
				events.UserAuth{ID: t.UserID, SessionID: &t.FamilyID, Reason: reason, RevokedTokens: revokedCount(n)})
			return []events.Envelope{ev}, err
		}
		if expired {
			return nil, nil
		}
		if u, err = store.LockUser(ctx, tx, t.UserID); err != nil || u.Status != store.UserActive {
			return nil, err
		}
		next := uuid.Must(uuid.NewV7())
		o := s.origin(r)
		if _, err := store.InsertRefreshToken(ctx, tx, store.RefreshToken{ID: next, UserID: u.ID, FamilyID: t.FamilyID,
			TokenHash: nextHash, UserAgent: o.UserAgent, ClientIP: o.ClientIP}, s.Config.Auth.RefreshTokenTTL); err != nil {
			return nil, err
		}
		if err := store.MarkRefreshTokenUsed(ctx, tx, t.ID, next); err != nil {
			return nil, err
		}
		issued = true
		ev, err := userEvent(r, events.UserTokenRefreshed, u.ID, userActor(u.ID), events.UserAuth{ID: u.ID, SessionID: &t.FamilyID})
		return []events.Envelope{ev}, err
	})
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		s.fail(w, r, dbErr(err))
	case !issued:
		s.unauthorized(w, r, false, errInvalidRefreshToken)
	default:
		s.writeTokens(w, r, u, next)
	}
}

// logout ends the session of a refresh token: POST /api/v1/auth/logout
// revokes every token of its family. An unknown, malformed or already
// revoked token is answered the same (204), and changes nothing; so is
// one of another user than the request's bearer token.
func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	token, ok := s.refreshToken(w, r)
	if !ok {
		return
	}
	if hash, ok := auth.RefreshTokenHash(token); ok {
		err := s.recordAuth(r, func(ctx context.Context, tx pgx.Tx) ([]events.Envelope, error) {
			t, _, err := store.LockRefreshToken(ctx, tx, hash)
			if errors.Is(err, store.ErrNotFound) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			if p, ok := PrincipalFrom(r.Context()); ok && p.UserID != t.UserID {
				return nil, nil
			}
			n, err := store.RevokeRefreshFamily(ctx, tx, t.FamilyID)
			if err != nil || n == 0 {
				return nil, err
			}
			ev, err := userEvent(r, events.UserLoggedOut, t.UserID, userActor(t.UserID),
				events.UserAuth{ID: t.UserID, SessionID: &t.FamilyID, RevokedTokens: revokedCount(n)})
			return []events.Envelope{ev}, err
		})
		if err != nil {
			s.fail(w, r, dbErr(err))
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// currentUser returns the account the request acts for, or answers 401.
func (s *server) currentUser(w http.ResponseWriter, r *http.Request) (store.User, bool) {
	p, ok := PrincipalFrom(r.Context())
	if !ok {
		s.unauthorized(w, r, false, errAuthRequired)
		return store.User{}, false
	}
	u, err := store.UserByID(r.Context(), s.DB, p.UserID)
	if errors.Is(err, store.ErrNotFound) {
		s.unauthorized(w, r, true, errInvalidAccessToken)
		return u, false
	}
	if err != nil {
		s.fail(w, r, dbErr(err))
		return u, false
	}
	return u, true
}

// me answers the account the request acts for: GET /api/v1/me.
func (s *server) me(w http.ResponseWriter, r *http.Request) {
	if u, ok := s.currentUser(w, r); ok {
		writeJSON(w, http.StatusOK, toUserJSON(u))
	}
}

// changePassword replaces the password of the account the request acts
// for, given the current one: POST /api/v1/me/password. It revokes every
// refresh token of the account and ends every access token issued before
// (this one included): the client logs in again with the new password.
func (s *server) changePassword(w http.ResponseWriter, r *http.Request) {
	if !s.needIssuer(w, r) {
		return
	}
	u, ok := s.currentUser(w, r)
	if !ok {
		return
	}
	var in struct {
		CurrentPassword *string `json:"current_password"`
		NewPassword     *string `json:"new_password"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := requireFields("current_password", in.CurrentPassword, "new_password", in.NewPassword); err != nil {
		s.fail(w, r, err)
		return
	}
	// The current password is guessed no faster here than at login.
	lim := s.Config.Auth.Limits
	if !s.allow(w, r, "password", s.byIP(r, lim.LoginPerIP), byAccount(u.ID.String(), lim.LoginPerAccount)) {
		return
	}
	ctx := r.Context()
	ok, _, err := s.verifyPassword(r, u.ID, *in.CurrentPassword, u.PasswordHash)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		s.fail(w, r, errWrongPassword)
		return
	}
	if err := auth.CheckPassword(*in.NewPassword, u.Email); err != nil {
		s.fail(w, r, weakPassword("new_password", err))
		return
	}
	hash, err := s.Passwords.Hash(ctx, *in.NewPassword)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	err = s.recordAuth(r, func(ctx context.Context, tx pgx.Tx) ([]events.Envelope, error) {
		if err := store.ChangePassword(ctx, tx, u.ID, hash); err != nil {
			return nil, err
		}
		n, err := store.RevokeUserRefreshTokens(ctx, tx, u.ID)
		if err != nil {
			return nil, err
		}
		ev, err := userEvent(r, events.UserPasswordChanged, u.ID, userActor(u.ID), events.UserAuth{ID: u.ID, RevokedTokens: revokedCount(n)})
		return []events.Envelope{ev}, err
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
