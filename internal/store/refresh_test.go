package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// Refresh tokens expired for longer than the grace are deleted, in
// batches; the others stay.
func TestDeleteExpiredRefreshTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.NewDB(t)
	app := testenv.Pool(t, db.AppURL)
	admin := testenv.Pool(t, db.AdminDSN())
	user := testenv.User(t, admin, "")
	insert := func(expiredAgo string) uuid.UUID {
		t.Helper()
		id := uuid.Must(uuid.NewV7())
		if _, err := admin.Exec(ctx, `insert into refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at)
			values ($1, $2, $1, sha256(convert_to($4, 'UTF8')), now() - interval '40 days', now() - $3::interval)`, id, user, expiredAgo, id.String()); err != nil {
			t.Fatal(err)
		}
		return id
	}
	old1, old2 := insert("3 days"), insert("2 days")
	recent, live := insert("1 hour"), insert("-10 days")
	n, err := store.DeleteExpiredRefreshTokens(ctx, app, 24*time.Hour, 1)
	if err != nil || n != 1 {
		t.Fatalf("first batch: %d, %v; want 1", n, err)
	}
	if n, err = store.DeleteExpiredRefreshTokens(ctx, app, 24*time.Hour, 1000); err != nil || n != 1 {
		t.Fatalf("second batch: %d, %v; want 1", n, err)
	}
	var left []uuid.UUID
	rows, err := admin.Query(ctx, `select id from refresh_tokens order by id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		_ = rows.Scan(&id)
		left = append(left, id)
	}
	if len(left) != 2 || left[0] != recent || left[1] != live {
		t.Fatalf("left %v; want only %v and %v (deleted %v, %v)", left, recent, live, old1, old2)
	}
}
