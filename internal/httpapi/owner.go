package httpapi

import (
	"context"

	"github.com/google/uuid"
)

type ownerKey struct{}

// WithOwner returns ctx carrying the id of the user a request acts for.
// Phase 2's authentication middleware sets it; in phase 1 nothing does, and
// requests act for no one: documents, topics, folders and cloud
// connections they create have no owner.
func WithOwner(ctx context.Context, user uuid.UUID) context.Context {
	return context.WithValue(ctx, ownerKey{}, user)
}

// Owner is the user the request acts for, or nil (phase 1: no accounts).
func Owner(ctx context.Context) *uuid.UUID {
	if id, ok := ctx.Value(ownerKey{}).(uuid.UUID); ok {
		return &id
	}
	return nil
}
