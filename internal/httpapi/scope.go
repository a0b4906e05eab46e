package httpapi

import (
	"context"

	"github.com/docuvault/docuvault/internal/store"
)

// scope is whose resources a request may see and change: every owner's
// for an administrator, the user's own for a user. (Every request under
// /api/v1 acts for a user: authenticate refuses one without a token; one
// that acted for no one would see no row.) Every read and write of
// documents, topics, folders, cloud connections and the audit log goes
// through it, in the statement's WHERE clause: another owner's id is
// answered 404, exactly like an id that does not exist.
//
// Whatever its scope, a request creates resources for its own principal
// (Owner), and a reference in a body (topic_id, folder_id, parent_id)
// must name a resource of the owner of the row it is written into.
func scope(ctx context.Context) store.Scope {
	if IsAdmin(ctx) {
		return store.Everyone()
	}
	return store.OwnedBy(Owner(ctx))
}
