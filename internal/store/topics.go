package store

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrCycle means a folder would become its own ancestor.
var ErrCycle = errors.New("folder cycle")

// ErrNotEmpty means a folder still has subfolders.
var ErrNotEmpty = errors.New("folder not empty")

// Topic is a row of topics.
type Topic struct {
	ID        uuid.UUID
	UserID    *uuid.UUID
	Name      string
	CreatedAt time.Time
	UpdatedAt time.Time
}

const topicColumns = `id, user_id, name, created_at, updated_at`

func scanTopic(row pgx.Row) (Topic, error) {
	var t Topic
	err := row.Scan(&t.ID, &t.UserID, &t.Name, &t.CreatedAt, &t.UpdatedAt)
	return t, translate(err)
}

// InsertTopic creates a topic; ErrConflict when the owner has one of that
// name (case-insensitive).
func InsertTopic(ctx context.Context, tx pgx.Tx, t Topic) (Topic, error) {
	return scanTopic(tx.QueryRow(ctx, `insert into topics (id, user_id, name) values ($1, $2, $3) returning `+topicColumns,
		t.ID, t.UserID, t.Name))
}

// GetTopic returns the topic with id if it is in scope, or ErrNotFound.
func GetTopic(ctx context.Context, db DBTX, scope Scope, id uuid.UUID) (Topic, error) {
	return scanTopic(db.QueryRow(ctx, `select `+topicColumns+` from topics where id = $1 and `+scope.match("user_id", 2),
		id, scope.arg()))
}

// ListTopics returns the topics in scope by id, after the keyset cursor.
func ListTopics(ctx context.Context, db DBTX, scope Scope, after *uuid.UUID, limit int) ([]Topic, error) {
	rows, err := db.Query(ctx, `select `+topicColumns+` from topics
		where `+scope.match("user_id", 3)+` and ($1::uuid is null or id > $1) order by id limit $2`, after, limit, scope.arg())
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Topic, error) { return scanTopic(r) })
	return out, translate(err)
}

// RenameTopic renames the topic id if it is in scope; ErrNotFound or
// ErrConflict (its owner has a topic of that name).
func RenameTopic(ctx context.Context, tx pgx.Tx, scope Scope, id uuid.UUID, name string) (Topic, error) {
	return scanTopic(tx.QueryRow(ctx, `update topics set name = $2, updated_at = now()
		where id = $1 and `+scope.match("user_id", 3)+` returning `+topicColumns, id, name, scope.arg()))
}

// DeleteTopic deletes the topic id if it is in scope; ErrNotFound. Its
// documents keep existing, without topic: it returns those it took the
// topic off (all but the deleted ones, whose topic_id the foreign key
// clears), as they are now, in id order and locked until tx ends (see
// detachDocuments).
func DeleteTopic(ctx context.Context, tx pgx.Tx, scope Scope, id uuid.UUID) (Topic, []Document, error) {
	// The topic first: an upload naming it (whose foreign key check takes
	// a key share lock on it) now waits, then fails, instead of adding a
	// document that would lose its topic without an event.
	t, err := scanTopic(tx.QueryRow(ctx, `select `+topicColumns+` from topics
		where id = $1 and `+scope.match("user_id", 2)+` for update`, id, scope.arg()))
	if err != nil {
		return Topic{}, nil, err
	}
	docs, err := detachDocuments(ctx, tx, "topic_id", id, t.UserID)
	if err != nil {
		return Topic{}, nil, err
	}
	t, err = scanTopic(tx.QueryRow(ctx, `delete from topics where id = $1 returning `+topicColumns, id))
	return t, docs, err
}

// Folder is a row of folders.
type Folder struct {
	ID        uuid.UUID
	UserID    *uuid.UUID
	ParentID  *uuid.UUID
	Name      string
	CreatedAt time.Time
	UpdatedAt time.Time
}

const folderColumns = `id, user_id, parent_id, name, created_at, updated_at`

func scanFolder(row pgx.Row) (Folder, error) {
	var f Folder
	err := row.Scan(&f.ID, &f.UserID, &f.ParentID, &f.Name, &f.CreatedAt, &f.UpdatedAt)
	return f, translate(err)
}

// InsertFolder creates a folder. ErrUnknownFolder when the parent does not
// exist or is another owner's, ErrConflict when a sibling has the name.
func InsertFolder(ctx context.Context, tx pgx.Tx, f Folder) (Folder, error) {
	out, err := scanFolder(tx.QueryRow(ctx, `insert into folders (id, user_id, parent_id, name)
		values ($1, $2, `+ownedRef("folders", "$3", "$2::uuid")+`, $4)
		returning `+folderColumns, f.ID, f.UserID, f.ParentID, f.Name))
	return out, folderError(err)
}

// isFKViolation reports whether err is a foreign key violation.
func isFKViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// folderError maps a missing parent to ErrUnknownFolder.
func folderError(err error) error {
	if isFKViolation(err) {
		return ErrUnknownFolder
	}
	return err
}

// GetFolder returns the folder with id if it is in scope, or ErrNotFound.
func GetFolder(ctx context.Context, db DBTX, scope Scope, id uuid.UUID) (Folder, error) {
	return scanFolder(db.QueryRow(ctx, `select `+folderColumns+` from folders where id = $1 and `+scope.match("user_id", 2),
		id, scope.arg()))
}

// ListFolders returns the children of parent (roots when nil) in scope, by
// id, after the keyset cursor. A parent of another owner has no children
// in scope, like one that does not exist.
func ListFolders(ctx context.Context, db DBTX, scope Scope, parent *uuid.UUID, after *uuid.UUID, limit int) ([]Folder, error) {
	// Two forms, so both can use folders_parent_idx (or, with the owner,
	// folders_sibling_name_key).
	where := `parent_id = $1`
	if parent == nil {
		where = `parent_id is null and $1::uuid is null`
	}
	rows, err := db.Query(ctx, `select `+folderColumns+` from folders
		where `+where+` and `+scope.match("user_id", 4)+` and ($2::uuid is null or id > $2) order by id limit $3`,
		parent, after, limit, scope.arg())
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Folder, error) { return scanFolder(r) })
	return out, translate(err)
}

// UpdateFolder renames and/or moves the folder id if it is in scope;
// ErrNotFound otherwise. The new parent must be a folder of the same
// owner: another owner's is ErrUnknownFolder, like one that does not
// exist. Moving under itself or one of its descendants returns ErrCycle.
// Concurrent moves are serialised by a transaction-scoped advisory lock so
// two moves cannot create a cycle together.
func UpdateFolder(ctx context.Context, tx pgx.Tx, scope Scope, id uuid.UUID, name string, parent *uuid.UUID) (Folder, error) {
	if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock(hashtext('docuvault.folders.move'))`); err != nil {
		return Folder{}, translate(err)
	}
	cur, err := scanFolder(tx.QueryRow(ctx, `select `+folderColumns+` from folders
		where id = $1 and `+scope.match("user_id", 2)+` for no key update`, id, scope.arg()))
	if err != nil {
		return Folder{}, err
	}
	if parent != nil {
		// The walk up stays within the folder's owner: another owner's
		// folder is refused below as unknown, and its ancestors are not
		// read.
		var cycle bool
		err := tx.QueryRow(ctx, `with recursive up(id, parent_id) as (
				select id, parent_id from folders where id = $1 and user_id is not distinct from $3
				union all
				select f.id, f.parent_id from folders f join up on f.id = up.parent_id
			) select exists (select 1 from up where id = $2)`, *parent, id, cur.UserID).Scan(&cycle)
		if err != nil {
			return Folder{}, translate(err)
		}
		if cycle {
			return Folder{}, ErrCycle
		}
	}
	out, err := scanFolder(tx.QueryRow(ctx, `update folders f set name = $2, parent_id = `+ownedRef("folders", "$3", "f.user_id")+`,
			updated_at = now()
		where f.id = $1 returning `+folderColumns, id, name, parent))
	return out, folderError(err)
}

// DeleteFolder deletes the folder id, in scope and without subfolders;
// ErrNotFound, or ErrNotEmpty when it has subfolders. Documents in it keep existing,
// without folder: it returns those it took the folder off (all but the
// deleted ones, whose folder_id the foreign key clears), as they are now,
// in id order and locked until tx ends (see detachDocuments).
func DeleteFolder(ctx context.Context, tx pgx.Tx, scope Scope, id uuid.UUID) (Folder, []Document, error) {
	// The folder first: a new subfolder or document in it (whose foreign
	// key check takes a key share lock on it) now waits, then fails.
	var hasChildren bool
	var owner *uuid.UUID
	err := tx.QueryRow(ctx, `select exists (select 1 from folders where parent_id = f.id), f.user_id from folders f
		where f.id = $1 and `+scope.match("f.user_id", 2)+` for update of f`, id, scope.arg()).Scan(&hasChildren, &owner)
	switch {
	case err != nil:
		return Folder{}, nil, translate(err)
	case hasChildren:
		return Folder{}, nil, ErrNotEmpty
	}
	docs, err := detachDocuments(ctx, tx, "folder_id", id, owner)
	if err != nil {
		return Folder{}, nil, err
	}
	out, err := scanFolder(tx.QueryRow(ctx, `delete from folders where id = $1 returning `+folderColumns, id))
	if isFKViolation(err) {
		return out, nil, ErrNotEmpty
	}
	return out, docs, err
}
