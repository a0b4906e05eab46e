package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/testenv"
)

// Each audit row written by the runtime role records whose resource it is
// about (migration 014's trigger, 015's function), by the rule the audit API scopes with:
// a document's owner (looked up when the row's data does not carry it, as
// for cloud_sync.*), the account of a user event, the user_id of other
// aggregates' data, nobody otherwise.
func TestAuditRowsRecordTheirOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	app := testenv.Pool(t, db.AppURL)
	admin := testenv.Pool(t, db.AdminDSN())
	alice, bob := testenv.User(t, admin, ""), testenv.User(t, admin, "")
	doc := uuid.Must(uuid.NewV7())
	if _, err := admin.Exec(ctx, `insert into documents (id, user_id, filename, content_type, size_bytes, sha256, storage_key)
		values ($1, $2, 'a', 'text/plain', 1, decode(repeat('ab', 32), 'hex'), 'staging/x')`, doc, alice); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, aggType string
		aggID         uuid.UUID
		details       string
		want          *uuid.UUID
	}{
		{"document event with its owner", "document", doc, `{"user_id":"` + alice.String() + `"}`, &alice},
		{"cloud_sync event (no owner in data)", "document", doc, `{"document_id":"` + doc.String() + `"}`, &alice},
		{"user event", "user", bob, `{"id":"` + bob.String() + `"}`, &bob},
		{"user event naming another user", "user", bob, `{"user_id":"` + alice.String() + `"}`, &bob},
		{"event of an unknown document", "document", uuid.Must(uuid.NewV7()), `{"document_id":"x"}`, nil},
		{"owner in upper case", "folder", uuid.Must(uuid.NewV7()), `{"user_id":"` + strings.ToUpper(bob.String()) + `"}`, &bob},
		{"owner with braces", "folder", uuid.Must(uuid.NewV7()), `{"user_id":"{` + bob.String() + `}"}`, nil},
		{"owner not a string", "folder", uuid.Must(uuid.NewV7()), `{"user_id":42}`, nil},
		{"topic event", "topic", uuid.Must(uuid.NewV7()), `{"user_id":"` + bob.String() + `"}`, &bob},
		{"topic event without owner", "topic", uuid.Must(uuid.NewV7()), `{"user_id":null}`, nil},
		{"malformed owner", "folder", uuid.Must(uuid.NewV7()), `{"user_id":"not-a-uuid"}`, nil},
	} {
		var got *uuid.UUID
		if err := app.QueryRow(ctx, `insert into audit_log (actor_type, action, aggregate_type, aggregate_id, details)
			values ('system', 'x.y', $1, $2, $3::jsonb) returning owner_id`, c.aggType, c.aggID, c.details).Scan(&got); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (got == nil) != (c.want == nil) || (got != nil && *got != *c.want) {
			t.Errorf("%s: owner %v; want %v", c.name, got, c.want)
		}
	}
}
