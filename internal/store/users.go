package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// User statuses. A disabled user cannot log in, refresh or use an access
// token.
const (
	UserActive   = "active"
	UserDisabled = "disabled"
)

// ErrEmailTaken means an account with that email (regardless of case)
// exists.
var ErrEmailTaken = errors.New("email taken")

// ErrNotFirstUser means CreateUser was asked to create the first account
// only, and there is one already.
var ErrNotFirstUser = errors.New("an account exists already")

// User is a row of users. PasswordHash is an Argon2id PHC string, or nil
// for an account that cannot log in.
type User struct {
	ID           uuid.UUID
	Email        string
	PasswordHash *string
	IsAdmin      bool
	Status       string
	TokenVersion int
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

const userColumns = `id, email, password_hash, is_admin, status, token_version, created_at, updated_at`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.PasswordHash, &u.IsAdmin, &u.Status, &u.TokenVersion, &u.CreatedAt, &u.UpdatedAt)
	return u, translate(err)
}

// NewUser is an account to create.
type NewUser struct {
	ID           uuid.UUID
	Email        string
	PasswordHash string
	// Admin makes the account an administrator; the first account ever
	// created is one whatever Admin says.
	Admin bool
	// OnlyFirst refuses (ErrNotFirstUser) unless no account exists yet.
	OnlyFirst bool
}

// CreateUser inserts u in tx. It serialises account creation (a
// transaction-scoped advisory lock), so that of two concurrent first
// registrations exactly one becomes the administrator. It returns
// ErrEmailTaken when the email is in use, ErrNotFirstUser (OnlyFirst).
func CreateUser(ctx context.Context, tx pgx.Tx, u NewUser) (User, error) {
	if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock(hashtext('docuvault.users.create'))`); err != nil {
		return User{}, translate(err)
	}
	var exists bool
	if err := tx.QueryRow(ctx, `select exists (select 1 from users)`).Scan(&exists); err != nil {
		return User{}, translate(err)
	}
	if exists && u.OnlyFirst {
		return User{}, ErrNotFirstUser
	}
	out, err := scanUser(tx.QueryRow(ctx, `insert into users (id, email, password_hash, is_admin)
		values ($1, $2, $3, $4) returning `+userColumns, u.ID, u.Email, u.PasswordHash, u.Admin || !exists))
	if errors.Is(err, ErrConflict) {
		return User{}, ErrEmailTaken
	}
	return out, err
}

// UserByEmail returns the user whose email is email regardless of case
// (users_email_key), or ErrNotFound.
func UserByEmail(ctx context.Context, db DBTX, email string) (User, error) {
	return scanUser(db.QueryRow(ctx, `select `+userColumns+` from users where lower(email) = lower($1)`, email))
}

// UserByID returns user id, or ErrNotFound.
func UserByID(ctx context.Context, db DBTX, id uuid.UUID) (User, error) {
	return scanUser(db.QueryRow(ctx, `select `+userColumns+` from users where id = $1`, id))
}

// LockUser returns user id locked for update in tx, or ErrNotFound.
func LockUser(ctx context.Context, tx pgx.Tx, id uuid.UUID) (User, error) {
	return scanUser(tx.QueryRow(ctx, `select `+userColumns+` from users where id = $1 for update`, id))
}

// SetPasswordHash replaces user id's password hash, leaving its token
// version (login re-hashing a password made with older parameters).
func SetPasswordHash(ctx context.Context, db DBTX, id uuid.UUID, hash string) error {
	_, err := db.Exec(ctx, `update users set password_hash = $2, updated_at = now() where id = $1`, id, hash)
	return translate(err)
}

// ChangePassword replaces user id's password hash and raises its token
// version, which ends every access token issued before.
func ChangePassword(ctx context.Context, db DBTX, id uuid.UUID, hash string) error {
	tag, err := db.Exec(ctx, `update users set password_hash = $2, token_version = token_version + 1, updated_at = now()
		where id = $1`, id, hash)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return translate(err)
}

// RefreshToken is a row of refresh_tokens (the token itself is never
// stored: TokenHash is its SHA-256). Tokens of one login share a family;
// each refresh uses one and creates its replacement.
type RefreshToken struct {
	ID         uuid.UUID
	UserID     uuid.UUID
	FamilyID   uuid.UUID
	TokenHash  []byte
	ReplacedBy *uuid.UUID
	UserAgent  string
	ClientIP   *netip.Addr
	CreatedAt  time.Time
	ExpiresAt  time.Time
	UsedAt     *time.Time
	RevokedAt  *time.Time
}

const refreshTokenColumns = `id, user_id, family_id, token_hash, replaced_by, user_agent, client_ip, created_at, expires_at, used_at, revoked_at`

func scanRefreshToken(row pgx.Row) (RefreshToken, error) {
	var t RefreshToken
	err := row.Scan(&t.ID, &t.UserID, &t.FamilyID, &t.TokenHash, &t.ReplacedBy, &t.UserAgent, &t.ClientIP,
		&t.CreatedAt, &t.ExpiresAt, &t.UsedAt, &t.RevokedAt)
	return t, translate(err)
}

// InsertRefreshToken stores t (ID, UserID, FamilyID, TokenHash,
// UserAgent, ClientIP) in tx, expiring ttl from now (the database's
// clock, like every other time of the row).
func InsertRefreshToken(ctx context.Context, db DBTX, t RefreshToken, ttl time.Duration) (RefreshToken, error) {
	var ip any
	if t.ClientIP != nil {
		ip = t.ClientIP.String()
	}
	return scanRefreshToken(db.QueryRow(ctx, `insert into refresh_tokens (id, user_id, family_id, token_hash, user_agent, client_ip, expires_at)
		values ($1, $2, $3, $4, $5, $6::inet, now() + $7::bigint * interval '1 microsecond') returning `+refreshTokenColumns,
		t.ID, t.UserID, t.FamilyID, t.TokenHash, truncate(t.UserAgent, 1024), ip, ttl.Microseconds()))
}

// RefreshTokenByHash returns the token whose hash is hash, or
// ErrNotFound.
func RefreshTokenByHash(ctx context.Context, db DBTX, hash []byte) (RefreshToken, error) {
	return scanRefreshToken(db.QueryRow(ctx, `select `+refreshTokenColumns+` from refresh_tokens where token_hash = $1`, hash))
}

// LockRefreshToken is RefreshTokenByHash locking the row for update in
// tx, so that two refreshes with one token are serialised (the second
// sees it used), and reporting whether it has expired by the database's
// clock.
func LockRefreshToken(ctx context.Context, tx pgx.Tx, hash []byte) (RefreshToken, bool, error) {
	var t RefreshToken
	var expired bool
	err := tx.QueryRow(ctx, `select `+refreshTokenColumns+`, expires_at <= now() from refresh_tokens where token_hash = $1 for update`, hash).
		Scan(&t.ID, &t.UserID, &t.FamilyID, &t.TokenHash, &t.ReplacedBy, &t.UserAgent, &t.ClientIP,
			&t.CreatedAt, &t.ExpiresAt, &t.UsedAt, &t.RevokedAt, &expired)
	return t, expired, translate(err)
}

// MarkRefreshTokenUsed records that token id was exchanged for
// replacement.
func MarkRefreshTokenUsed(ctx context.Context, db DBTX, id, replacement uuid.UUID) error {
	tag, err := db.Exec(ctx, `update refresh_tokens set used_at = now(), replaced_by = $2 where id = $1 and used_at is null`, id, replacement)
	if err == nil && tag.RowsAffected() != 1 {
		return fmt.Errorf("refresh token %s: %w", id, ErrNotFound)
	}
	return translate(err)
}

// RevokeRefreshFamily revokes every token of family that could still be
// exchanged (neither used nor revoked) and returns how many it revoked.
// Used tokens keep their state: presenting one again is a reuse whatever
// happened since.
func RevokeRefreshFamily(ctx context.Context, db DBTX, family uuid.UUID) (int64, error) {
	tag, err := db.Exec(ctx, `update refresh_tokens set revoked_at = now()
		where family_id = $1 and revoked_at is null and used_at is null`, family)
	return tag.RowsAffected(), translate(err)
}

// RevokeUserRefreshTokens revokes every token of user that could still
// be exchanged and returns how many it revoked.
func RevokeUserRefreshTokens(ctx context.Context, db DBTX, user uuid.UUID) (int64, error) {
	tag, err := db.Exec(ctx, `update refresh_tokens set revoked_at = now()
		where user_id = $1 and revoked_at is null and used_at is null`, user)
	return tag.RowsAffected(), translate(err)
}

// DeleteExpiredRefreshTokens deletes up to limit refresh tokens that
// expired more than grace ago (used, revoked or not: an expired token is
// refused whatever it was) and reports how many. A family's newer tokens
// keep working; one that presents a deleted token is refused as unknown,
// as it was refused as expired before.
func DeleteExpiredRefreshTokens(ctx context.Context, db DBTX, grace time.Duration, limit int) (int64, error) {
	tag, err := db.Exec(ctx, `delete from refresh_tokens where id in (
		select id from refresh_tokens where expires_at < now() - $1::interval order by expires_at limit $2)`, grace, limit)
	if err != nil {
		return 0, translate(err)
	}
	return tag.RowsAffected(), nil
}
