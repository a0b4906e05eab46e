package store_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
	"github.com/docuvault/docuvault/migrations"
)

// phase1 is a database at the version before owners became required,
// holding what phase 1 leaves: unowned documents (ready, pending, deleted;
// one in an unowned topic and folder), topics, a folder tree and a cloud
// connection, next to a user who already has a topic, a root folder and a
// connection of the same names.
type phase1 struct {
	db                           testenv.DB
	conn                         *pgx.Conn
	alice                        uuid.UUID
	ready, pending, deleted, doc uuid.UUID // unowned documents
	topic, folder, child, cc     uuid.UUID // unowned topic, root folder and its child, connection
}

func newPhase1(t *testing.T) *phase1 {
	t.Helper()
	ctx := context.Background()
	p := &phase1{db: testenv.EmptyDB(t)}
	p.conn = connect(t, p.db.MigrateURL)
	before := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() >= "013" {
			continue
		}
		b, _ := fs.ReadFile(migrations.FS, e.Name())
		before[e.Name()] = &fstest.MapFile{Data: b}
	}
	if res, err := store.Migrate(ctx, p.conn, before, nil); err != nil || res.To != store.OwnerRequiredVersion-1 {
		t.Fatalf("migrate to %d: %+v, %v", store.OwnerRequiredVersion-1, res, err)
	}
	ids := func(n int) []uuid.UUID {
		out := make([]uuid.UUID, n)
		for i := range out {
			out[i] = uuid.Must(uuid.NewV7())
		}
		return out
	}
	v := ids(10)
	p.alice = v[0]
	p.ready, p.pending, p.deleted, p.doc = v[1], v[2], v[3], v[4]
	p.topic, p.folder, p.child, p.cc = v[5], v[6], v[7], v[8]
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := p.conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	sum := strings.Repeat("a", 64)
	exec(`insert into users (id, email) values ($1, 'alice@example.com')`, p.alice)
	exec(`insert into topics (id, user_id, name) values ($1, $2, 'Taxes'), ($3, null, 'taxes'), ($4, null, 'Letters')`,
		uuid.Must(uuid.NewV7()), p.alice, p.topic, uuid.Must(uuid.NewV7()))
	exec(`insert into folders (id, user_id, name) values ($1, $2, 'Inbox'), ($3, null, 'Inbox')`, uuid.Must(uuid.NewV7()), p.alice, p.folder)
	exec(`insert into folders (id, user_id, parent_id, name) values ($1, null, $2, '2024')`, p.child, p.folder)
	exec(`insert into cloud_connections (id, user_id, provider, name, credentials) values ($1, $2, 's3', 'offsite', '\x00'), ($3, null, 's3', 'Offsite', '\x00')`,
		uuid.Must(uuid.NewV7()), p.alice, p.cc)
	doc := `insert into documents (id, user_id, topic_id, folder_id, filename, content_type, size_bytes, sha256, status, storage_key, finalized_at, deleted_at)
		values ($1, null, $2, $3, 'f.pdf', 'application/pdf', $4, decode($5, 'hex'), $6, $7, $8::timestamptz, $9::timestamptz)`
	exec(doc, p.ready, nil, nil, 100, sum, "ready", "users/_unowned/documents/"+p.ready.String(), "2026-01-01", nil)
	exec(doc, p.doc, p.topic, p.child, 20, sum, "ready", "users/_unowned/documents/"+p.doc.String(), "2026-01-01", nil)
	exec(doc, p.pending, nil, nil, 7, sum, "pending", "staging/"+p.pending.String(), nil, nil)
	exec(doc, p.deleted, nil, nil, 9, sum, "deleted", "users/_unowned/documents/"+p.deleted.String(), "2026-01-01", "2026-02-01")
	return p
}

func (p *phase1) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := p.conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (p *phase1) version(t *testing.T) int {
	return p.count(t, `select version from `+store.VersionTable)
}

// Migration 013 on a database holding phase 1 data: refused with a clear
// message (nothing changed) until the data has an owner; then everything
// is owned, each change audited with its event, name clashes renamed, the
// owner's quota charged, and owners are required from then on.
func TestOwnerRequiredMigrationAdoptsPhase1Data(t *testing.T) {
	ctx := context.Background()
	p := newPhase1(t)

	_, err := store.Migrate(ctx, p.conn, migrations.FS, nil)
	if err == nil || !strings.Contains(err.Error(), "have no owner") || !strings.Contains(err.Error(), "--unowned-owner") {
		t.Fatalf("migrate with unowned rows: %v; want a refusal naming --unowned-owner", err)
	}
	if v := p.version(t); v != store.OwnerRequiredVersion-1 {
		t.Fatalf("refused migration left version %d", v)
	}
	n, err := store.CountUnowned(ctx, p.conn)
	if err != nil || n != (store.Unowned{Documents: 4, Topics: 2, Folders: 2, CloudConnections: 1}) {
		t.Fatalf("unowned: %+v, %v", n, err)
	}

	var adopted store.Unowned
	_, err = store.MigrateWith(ctx, p.conn, migrations.FS, nil, func(ctx context.Context, conn *pgx.Conn) error {
		adopted, err = store.AdoptUnowned(ctx, conn, p.alice)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if adopted != n || p.version(t) < store.OwnerRequiredVersion {
		t.Fatalf("adopted %+v (want %+v), version %d", adopted, n, p.version(t))
	}
	for _, table := range []string{"documents", "topics", "folders", "cloud_connections"} {
		if left := p.count(t, `select count(*) from `+table+` where user_id is distinct from $1`, p.alice); left != 0 {
			t.Errorf("%s: %d rows not alice's", table, left)
		}
	}
	// Clashing names renamed, the others kept; the tree and the
	// document's topic and folder kept.
	var topicName, folderName, ccName string
	if err := p.conn.QueryRow(ctx, `select (select name from topics where id = $1), (select name from folders where id = $2),
		(select name from cloud_connections where id = $3)`, p.topic, p.folder, p.cc).Scan(&topicName, &folderName, &ccName); err != nil {
		t.Fatal(err)
	}
	if topicName != "taxes (phase 1 "+p.topic.String()[:8]+")" || folderName != "Inbox (phase 1 "+p.folder.String()[:8]+")" ||
		ccName != "Offsite (phase 1 "+p.cc.String()[:8]+")" {
		t.Errorf("renamed: topic %q, folder %q, connection %q", topicName, folderName, ccName)
	}
	if p.count(t, `select count(*) from topics where name = 'Letters'`) != 1 ||
		p.count(t, `select count(*) from folders where id = $1 and parent_id = $2 and name = '2024'`, p.child, p.folder) != 1 ||
		p.count(t, `select count(*) from documents where id = $1 and topic_id = $2 and folder_id = $3`, p.doc, p.topic, p.child) != 1 {
		t.Error("adoption changed more than the owner and clashing names")
	}
	// One audit row and event per row, by the system, one correlation.
	want := map[string]int{"document.updated": 4, "topic.renamed": 2, "folder.updated": 2, "cloud_connection.updated": 1}
	for action, n := range want {
		if got := p.count(t, `select count(*) from audit_log where action = $1 and actor_type = 'system'`, action); got != n {
			t.Errorf("%d audit rows %s; want %d", got, action, n)
		}
		if got := p.count(t, `select count(*) from outbox where event_type = $1`, action); got != n {
			t.Errorf("%d outbox events %s; want %d", got, action, n)
		}
	}
	if c := p.count(t, `select count(distinct correlation_id) from audit_log`); c != 1 {
		t.Errorf("%d correlation ids; want 1", c)
	}
	// The ready documents (100 + 20 bytes) count against alice's quota.
	var usedBytes, usedDocs int64
	if err := p.conn.QueryRow(ctx, `select used_bytes, used_documents from quotas where user_id = $1`, p.alice).Scan(&usedBytes, &usedDocs); err != nil ||
		usedBytes != 120 || usedDocs != 2 {
		t.Errorf("alice's usage %d bytes, %d documents (%v); want 120, 2", usedBytes, usedDocs, err)
	}
	// Owners are required from now on.
	for _, sql := range []string{
		`insert into topics (id, name) values (gen_random_uuid(), 'x')`,
		`insert into folders (id, name) values (gen_random_uuid(), 'x')`,
		`insert into cloud_connections (id, provider, name, credentials) values (gen_random_uuid(), 's3', 'x', '\x00')`,
		`update documents set user_id = null where id = '` + p.ready.String() + `'`,
	} {
		if _, err := p.conn.Exec(ctx, sql); err == nil || !strings.Contains(err.Error(), "23502") {
			t.Errorf("%s: %v; want a not-null violation", sql, err)
		}
	}
	// Ready documents still at users/_unowned/ are the consumer's to move.
	misplaced, err := store.MisplacedDocuments(ctx, p.conn, 10)
	if err != nil || len(misplaced) != 2 {
		t.Errorf("misplaced %v, %v; want the 2 ready documents", misplaced, err)
	}
}

// --unowned-delete: documents are deleted through the pipeline first; the
// rows go (with the topics, folder tree and connection) only once the
// consumer has purged them, and then the migration applies.
func TestOwnerRequiredMigrationDeletesPhase1Data(t *testing.T) {
	ctx := context.Background()
	p := newPhase1(t)
	resolve := func(ctx context.Context, conn *pgx.Conn) error {
		left, _, err := store.DeleteUnowned(ctx, conn)
		if err == nil && left > 0 {
			return store.ErrConflict // "run again later"
		}
		return err
	}
	if _, err := store.MigrateWith(ctx, p.conn, migrations.FS, nil, resolve); err != store.ErrConflict {
		t.Fatalf("first run: %v; want to wait for the purge", err)
	}
	if v := p.version(t); v != store.OwnerRequiredVersion-1 {
		t.Fatalf("version %d", v)
	}
	// All four deleted now, three with a document.deleted (one was already).
	if n := p.count(t, `select count(*) from documents where status = 'deleted'`); n != 4 {
		t.Fatalf("%d documents deleted; want 4", n)
	}
	if n := p.count(t, `select count(*) from outbox where event_type = 'document.deleted'`); n != 3 {
		t.Fatalf("%d document.deleted events; want 3", n)
	}
	// A second run before the purge deletes nothing twice.
	if _, _, err := store.DeleteUnowned(ctx, p.conn); err != nil {
		t.Fatal(err)
	}
	if n := p.count(t, `select count(*) from outbox where event_type = 'document.deleted'`); n != 3 {
		t.Fatalf("%d document.deleted events after a second run; want 3", n)
	}
	// The consumer purges them (objects gone).
	if _, err := p.conn.Exec(ctx, `update documents set purged_at = now()`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.MigrateWith(ctx, p.conn, migrations.FS, nil, resolve); err != nil {
		t.Fatal(err)
	}
	if v := p.version(t); v < store.OwnerRequiredVersion {
		t.Fatalf("version %d", v)
	}
	for _, table := range []string{"documents", "topics", "folders", "cloud_connections"} {
		if n := p.count(t, `select count(*) from `+table+` where user_id is null`); n != 0 {
			t.Errorf("%s: %d unowned rows left", table, n)
		}
	}
	if p.count(t, `select count(*) from topics`) != 1 || p.count(t, `select count(*) from folders`) != 1 ||
		p.count(t, `select count(*) from cloud_connections`) != 1 {
		t.Error("alice's own topic, folder or connection went too")
	}
	for action, n := range map[string]int{"topic.deleted": 2, "folder.deleted": 2, "cloud_connection.deleted": 1} {
		if got := p.count(t, `select count(*) from outbox where event_type = $1`, action); got != n {
			t.Errorf("%d %s events; want %d", got, action, n)
		}
	}
}

// Adoption waits for a finalisation in flight (which holds its document's
// advisory lock from reading the row to its commit): a document finalised
// meanwhile is adopted as ready, and counted in the owner's quota, never
// finished as unowned after it was given an owner.
func TestAdoptionWaitsForFinalisationsInFlight(t *testing.T) {
	ctx := context.Background()
	p := newPhase1(t)
	finalizer := connect(t, p.db.AdminDSN())
	if _, err := finalizer.Exec(ctx, `select pg_advisory_lock(hashtextextended($1, 0))`, p.pending.String()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := store.AdoptUnowned(ctx, p.conn, p.alice)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("adoption did not wait for the finalisation in flight (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The finalisation commits (unowned, as it read the row) and unlocks.
	if _, err := finalizer.Exec(ctx, `update documents set status = 'ready', finalized_at = now(),
		storage_key = 'users/_unowned/documents/' || id where id = $1`, p.pending); err != nil {
		t.Fatal(err)
	}
	if _, err := finalizer.Exec(ctx, `select pg_advisory_unlock(hashtextextended($1, 0))`, p.pending.String()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var owner uuid.UUID
	var usedBytes int64
	if err := p.conn.QueryRow(ctx, `select (select user_id from documents where id = $1), (select used_bytes from quotas where user_id = $2)`,
		p.pending, p.alice).Scan(&owner, &usedBytes); err != nil {
		t.Fatal(err)
	}
	if owner != p.alice || usedBytes != 100+20+7 {
		t.Errorf("finalised meanwhile: owner %v, alice's usage %d; want alice, 127", owner, usedBytes)
	}
}
