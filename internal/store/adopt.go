package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
)

// Phase 1 left documents, topics, folders and cloud connections without an
// owner; phase 2 (migration 013) requires one. Before that migration runs,
// `bin/api migrate` gives them to a chosen user (AdoptUnowned) or deletes
// them (DeleteUnowned), through the pipeline so that objects, quotas and
// subscribers follow.

// queryRows runs sql in tx and scans every row it returns with scan.
func queryRows[T any](ctx context.Context, tx pgx.Tx, scan func(pgx.Row) (T, error), sql string, args ...any) ([]T, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
	return out, translate(err)
}

// OwnerRequiredVersion is the migration that makes owners NOT NULL.
const OwnerRequiredVersion = 13

// Unowned counts the rows that have no owner.
type Unowned struct {
	Documents, Topics, Folders, CloudConnections int64
}

// Total is the number of rows without an owner.
func (u Unowned) Total() int64 { return u.Documents + u.Topics + u.Folders + u.CloudConnections }

func (u Unowned) String() string {
	return fmt.Sprintf("%d documents, %d topics, %d folders and %d cloud connections", u.Documents, u.Topics, u.Folders, u.CloudConnections)
}

// CountUnowned counts the rows phase 1 left without an owner.
func CountUnowned(ctx context.Context, db DBTX) (Unowned, error) {
	var u Unowned
	err := db.QueryRow(ctx, `select
		(select count(*) from documents where user_id is null),
		(select count(*) from topics where user_id is null),
		(select count(*) from folders where user_id is null),
		(select count(*) from cloud_connections where user_id is null)`).
		Scan(&u.Documents, &u.Topics, &u.Folders, &u.CloudConnections)
	return u, translate(err)
}

// AdoptUnowned gives every row without an owner to user, in one
// transaction that also writes, per row, its audit row and event (actor
// system, one correlation id): document.updated, topic.renamed,
// folder.updated and cloud_connection.updated, each carrying the new
// user_id. A topic, root folder or cloud connection whose name the user
// already uses gets " (phase 1 <id prefix>)" appended. The user's quota
// usage grows by the ready documents adopted (they are stored already, so
// it may exceed the limit; new uploads are then refused). Ready documents
// keep their object under users/_unowned/ until the consumer, on their
// document.updated, moves it under users/{user_id}/ (see
// finalize.Relocate); pending ones are finalised there directly.
func AdoptUnowned(ctx context.Context, db Beginner, user uuid.UUID) (Unowned, error) {
	var n Unowned
	err := WithTx(ctx, db, func(tx pgx.Tx) error {
		// First wait for finalisations in flight: each holds its
		// document's advisory lock (finalize.Finalize) from reading the
		// row to its commit, so none can finish a document as unowned
		// after this gives it an owner. Pending documents committed after
		// this point stay unowned, and migration 013 then asks for
		// another run.
		rows, err := tx.Query(ctx, `select id from (select id from documents where user_id is null and status = 'pending' order by id) d
			where pg_advisory_xact_lock(hashtextextended(id::text, 0)) is not null`)
		if err != nil {
			return translate(err)
		}
		locked, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return translate(err)
		}
		correlation := uuid.Must(uuid.NewV7())
		var evs []events.Envelope
		add := func(typ, aggregate string, id uuid.UUID, data any) error {
			ev, err := events.New(typ, aggregate, id, events.System, correlation, nil, data)
			evs = append(evs, ev)
			return err
		}

		topics, err := queryRows(ctx, tx, scanTopic, `update topics t set user_id = $1, updated_at = now(),
				name = case when exists (select 1 from topics o where o.user_id = $1 and lower(o.name) = lower(t.name))
					then left(t.name, 180) || ' (phase 1 ' || left(t.id::text, 8) || ')' else t.name end
			where t.user_id is null returning `+topicColumns, user)
		if err != nil {
			return err
		}
		for _, t := range topics {
			if err := add(events.TopicRenamed, "topic", t.ID, events.Topic{ID: t.ID, UserID: t.UserID, Name: t.Name}); err != nil {
				return err
			}
		}

		// Only root folders can clash with the user's: the parent of an
		// unowned folder is unowned too.
		folders, err := queryRows(ctx, tx, scanFolder, `update folders f set user_id = $1, updated_at = now(),
				name = case when exists (select 1 from folders o where o.user_id = $1
						and o.parent_id is not distinct from f.parent_id and lower(o.name) = lower(f.name))
					then left(f.name, 230) || ' (phase 1 ' || left(f.id::text, 8) || ')' else f.name end
			where f.user_id is null returning `+folderColumns, user)
		if err != nil {
			return err
		}
		for _, f := range folders {
			if err := add(events.FolderUpdated, "folder", f.ID, events.Folder{ID: f.ID, UserID: f.UserID, ParentID: f.ParentID, Name: f.Name}); err != nil {
				return err
			}
		}

		conns, err := queryRows(ctx, tx, scanCloudConnection, `update cloud_connections c set user_id = $1, updated_at = now(),
				name = case when exists (select 1 from cloud_connections o where o.user_id = $1 and lower(o.name) = lower(c.name))
					then left(c.name, 180) || ' (phase 1 ' || left(c.id::text, 8) || ')' else c.name end
			where c.user_id is null returning `+cloudConnectionColumns, user)
		if err != nil {
			return err
		}
		for _, c := range conns {
			if err := add(events.CloudConnectionUpdated, "cloud_connection", c.ID, c.EventData()); err != nil {
				return err
			}
		}

		docs, err := queryRows(ctx, tx, scanDocument, `update documents set user_id = $1, updated_at = now()
			where user_id is null and (status <> 'pending' or id = any($2)) returning `+documentColumns, user, locked)
		if err != nil {
			return err
		}
		var readyBytes, readyDocs int64
		for _, d := range docs {
			if d.Status == StatusReady {
				readyBytes += d.SizeBytes
				readyDocs++
			}
			if err := add(events.DocumentUpdated, "document", d.ID, d.EventData()); err != nil {
				return err
			}
		}
		if readyDocs > 0 {
			if _, err := tx.Exec(ctx, `insert into quotas (user_id, used_bytes, used_documents) values ($1, $2, $3)
				on conflict (user_id) do update set used_bytes = quotas.used_bytes + excluded.used_bytes,
					used_documents = quotas.used_documents + excluded.used_documents, updated_at = now()`,
				user, readyBytes, readyDocs); err != nil {
				return translate(err)
			}
		}
		n = Unowned{Documents: int64(len(docs)), Topics: int64(len(topics)), Folders: int64(len(folders)), CloudConnections: int64(len(conns))}
		return RecordAll(ctx, tx, evs, Origin{})
	})
	return n, err
}

// DeleteUnowned deletes what phase 1 left without an owner, in two steps,
// and reports how many documents are still being purged (0: all gone).
//
// First, every unowned document not yet deleted is deleted as the API
// deletes one: status deleted, audit row and document.deleted event (actor
// system), so that the consumer removes its objects and its remote copies.
// Then, once each unowned document is purged (objects confirmed gone) and
// none of its remote copies on a connection that deletes remote copies is
// still present or due (paused is how many of them wait on a paused
// connection, which will not remove them until resumed), the rows go: documents, cloud
// connections, folders (leaves first) and topics, each connection, folder
// and topic with its deleted event. Until then it reports the documents
// left, and is run again later (`bin/api migrate --unowned-delete` is).
func DeleteUnowned(ctx context.Context, db Beginner) (left, paused int64, err error) {
	err = WithTx(ctx, db, func(tx pgx.Tx) error {
		correlation := uuid.Must(uuid.NewV7())
		var evs []events.Envelope
		add := func(typ, aggregate string, id uuid.UUID, data any) error {
			ev, err := events.New(typ, aggregate, id, events.System, correlation, nil, data)
			evs = append(evs, ev)
			return err
		}
		docs, err := queryRows(ctx, tx, scanDocument, `update documents set status = 'deleted', deleted_at = now(), updated_at = now(), reject_reason = null
			where id in (select id from documents where user_id is null and status <> 'deleted' order by id for update)
			returning `+documentColumns)
		if err != nil {
			return err
		}
		for _, d := range docs {
			if err := add(events.DocumentDeleted, "document", d.ID, d.EventData()); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, `select count(*) filter (where `+unpurged+`),
				count(*) filter (where `+unpurged+` and exists (select 1 from cloud_sync s join cloud_connections c on c.id = s.connection_id
					where s.document_id = d.id and c.delete_remote and c.status = 'paused' and s.status in ('pending', 'synced')))
			from documents d where d.user_id is null`).Scan(&left, &paused); err != nil {
			return translate(err)
		}
		if left > 0 {
			return RecordAll(ctx, tx, evs, Origin{})
		}
		// The same condition again: a document an old API committed since
		// the count is not deleted unseen (it stays, and migration 013
		// then asks for another run).
		if _, err := tx.Exec(ctx, `delete from documents d where d.user_id is null and not (`+unpurged+`)`); err != nil {
			return translate(err)
		}
		conns, err := queryRows(ctx, tx, scanCloudConnection, `delete from cloud_connections where user_id is null returning `+cloudConnectionColumns)
		if err != nil {
			return err
		}
		for _, c := range conns {
			if err := add(events.CloudConnectionDeleted, "cloud_connection", c.ID, c.EventData()); err != nil {
				return err
			}
		}
		for {
			// Leaves first: a folder's parent may not go before it.
			folders, err := queryRows(ctx, tx, scanFolder, `delete from folders f where f.user_id is null
				and not exists (select 1 from folders c where c.parent_id = f.id) returning `+folderColumns)
			if err != nil {
				return err
			}
			if len(folders) == 0 {
				break
			}
			for _, f := range folders {
				if err := add(events.FolderDeleted, "folder", f.ID, events.Folder{ID: f.ID, ParentID: f.ParentID, Name: f.Name}); err != nil {
					return err
				}
			}
		}
		topics, err := queryRows(ctx, tx, scanTopic, `delete from topics where user_id is null returning `+topicColumns)
		if err != nil {
			return err
		}
		for _, t := range topics {
			if err := add(events.TopicDeleted, "topic", t.ID, events.Topic{ID: t.ID, Name: t.Name}); err != nil {
				return err
			}
		}
		return RecordAll(ctx, tx, evs, Origin{})
	})
	return left, paused, err
}

// unpurged is the condition (on documents d) of a deleted document whose
// objects or remote copies are not confirmed gone yet.
const unpurged = `(d.purged_at is null or exists (select 1 from cloud_sync s join cloud_connections c on c.id = s.connection_id
	where s.document_id = d.id and c.delete_remote and s.status in ('pending', 'synced')))`

// MoveDocumentObject points the ready document id at its object's new key
// to, if it still points at from, and returns it as it is now; ok is false
// when it no longer does (deleted, or moved meanwhile).
func MoveDocumentObject(ctx context.Context, tx pgx.Tx, id uuid.UUID, from, to string) (Document, bool, error) {
	d, err := scanDocument(tx.QueryRow(ctx, `update documents set storage_key = $3, updated_at = now()
		where id = $1 and storage_key = $2 and status = 'ready' returning `+documentColumns, id, from, to))
	if errors.Is(err, ErrNotFound) {
		return d, false, nil
	}
	return d, err == nil, err
}

// MisplacedDocuments returns up to limit ready documents whose object is
// still under users/_unowned/ although they have an owner.
func MisplacedDocuments(ctx context.Context, db DBTX, limit int) ([]uuid.UUID, error) {
	rows, err := db.Query(ctx, `select id from documents where storage_key like 'users/\_unowned/%'
		and status = 'ready' and user_id is not null order by id limit $1`, limit)
	if err != nil {
		return nil, translate(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	return ids, translate(err)
}

// StorageKeysInUse reports which of keys, all of the form
// {prefix}{document id}, the row of that document names as its object's
// key. Keys that do not end in an id are reported in use (not ours to
// judge).
func StorageKeysInUse(ctx context.Context, db DBTX, prefix string, keys []string) (map[string]bool, error) {
	in := make(map[string]bool, len(keys))
	ids := make([]uuid.UUID, 0, len(keys))
	for _, k := range keys {
		id, err := uuid.Parse(strings.TrimPrefix(k, prefix))
		if err != nil || !strings.HasPrefix(k, prefix) {
			in[k] = true
			continue
		}
		ids = append(ids, id)
	}
	rows, err := db.Query(ctx, `select storage_key from documents where id = any($1)`, ids)
	if err != nil {
		return nil, translate(err)
	}
	used, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, translate(err)
	}
	for _, k := range used {
		in[k] = true
	}
	return in, nil
}

// AnyUnownedDocument reports whether some document still has no owner
// (phase 1, before migration 013).
func AnyUnownedDocument(ctx context.Context, db DBTX) (bool, error) {
	var found bool
	err := db.QueryRow(ctx, `select exists (select 1 from documents where user_id is null)`).Scan(&found)
	return found, translate(err)
}
