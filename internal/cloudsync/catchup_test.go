package cloudsync_test

import (
	"context"
	"testing"
	"time"

	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/store"
)

// Events whose stream entries were lost (Redis restarted without its
// data) are handled from the audit log: a finalised document still gets
// its copy, a deleted one its removal, each once, and events handled from
// the stream are left alone.
func TestCatchUpHandlesEventsTheStreamLost(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	conn := f.webdavConn(t, true)
	s := f.syncer(cloudsync.Config{CatchUpAfter: time.Millisecond})

	lost, _ := f.readyDocument(t, []byte("%PDF-1.4 lost on the stream"))
	delivered, ev := f.readyDocument(t, []byte("%PDF-1.4 delivered"))
	if err := s.HandleEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // older than CatchUpAfter

	n, err := s.CatchUp(ctx)
	if err != nil || n != 1 {
		t.Fatalf("catch-up handled %d events (%v); want the 1 lost", n, err)
	}
	s.Drain(ctx)
	if r := f.row(t, lost.ID, conn.ID); r.Status != store.SyncSynced {
		t.Errorf("lost document's copy: %s; want synced", r.Status)
	}
	if r := f.row(t, delivered.ID, conn.ID); r.Status != store.SyncSynced {
		t.Errorf("delivered document's copy: %s; want synced", r.Status)
	}

	// The deletion's entry is lost too: its removal is planned from the
	// audit log. A second look finds nothing left to do.
	f.deleteDocument(t, lost.ID)
	time.Sleep(5 * time.Millisecond)
	if n, err := s.CatchUp(ctx); err != nil || n != 1 {
		t.Fatalf("catch-up after the deletion handled %d events (%v); want 1", n, err)
	}
	s.Drain(ctx)
	if r := f.row(t, lost.ID, conn.ID); r.Operation != store.SyncRemove || r.Status != store.SyncRemoved {
		t.Errorf("deleted document's copy: %s %s; want remove removed", r.Operation, r.Status)
	}
	if n, err := s.CatchUp(ctx); err != nil || n != 0 {
		t.Errorf("a third look handled %d events (%v); want 0", n, err)
	}
}
