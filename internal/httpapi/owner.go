package httpapi

import (
	"context"

	"github.com/google/uuid"
)

// Principal is who a request acts for: an authenticated user, who may be
// an administrator (administrators see every owner's resources).
type Principal struct {
	UserID uuid.UUID
	Admin  bool
}

type principalKey struct{}

// WithPrincipal returns ctx carrying the principal a request acts for.
// The authentication middleware sets it from a valid access token.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal ctx carries, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// WithOwner returns ctx acting for user, who is not an administrator.
func WithOwner(ctx context.Context, user uuid.UUID) context.Context {
	return WithPrincipal(ctx, Principal{UserID: user})
}

// Owner is the user the request acts for, or nil when it acts for no one:
// a public route (register, login, refresh) or one outside /api/v1; every
// other route under /api/v1 requires a token (authenticate).
func Owner(ctx context.Context) *uuid.UUID {
	if p, ok := PrincipalFrom(ctx); ok {
		return &p.UserID
	}
	return nil
}

// IsAdmin reports whether the request acts for an administrator.
func IsAdmin(ctx context.Context) bool {
	p, ok := PrincipalFrom(ctx)
	return ok && p.Admin
}
