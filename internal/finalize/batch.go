package finalize

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/tracing"
)

// Group finalisation. While RunBatches runs, the uploads that handlers
// hand to Finalize at about the same time are finalised together, the
// common way (an unchanged staged object whose owner has room for all of
// the owner's uploads in the group), with two round trips and four
// statements to PostgreSQL for the whole group instead of three round trips
// per document:
//
//  1. begin; take each document's lock for the transaction
//     (pg_try_advisory_xact_lock: the same locks as the one-by-one path's
//     session locks, so the two exclude each other); read which events
//     were handled, and the documents with their owners' quotas;
//  2. (the conditional server-side copies, concurrently;)
//  3. one statement for every copied document (QueueFinishChargedMany:
//     ready, the owners' quota charges, processed marks, audit rows and
//     events); commit.
//
// Anything else (a large upload too), or anything that goes wrong, is
// handed back to the handler, which finalises that document one by one
// (Finalize's own path, which decides every case and returns the errors
// that retry the message). The group's copies are repeatable, so the
// one-by-one path finds the object at its final key at worst, and it
// removes a copy the group left before it rejects a document. A document
// is finalised ready only by a committed transaction, as before: a crash
// anywhere leaves it pending, with its message unacknowledged.

// errOneByOne hands a document back to its handler's one-by-one path.
var errOneByOne = errors.New("finalize one by one")

// batchReq is one upload handed to the group finaliser.
type batchReq struct {
	ctx  context.Context
	ev   events.Envelope
	done chan error // nil: finalised (or handled before); errOneByOne
}

const (
	// batchTimeout bounds one group's work, copies included.
	batchTimeout = 30 * time.Second
	// groupMaxBytes is the largest upload finalised in a group: a larger
	// one's copy would hold up the commit of the whole group, so it goes
	// one by one.
	groupMaxBytes = 16 << 20
)

// finalizeGrouped hands ev to the group finaliser while it runs: true
// with the outcome when it took it, false when the caller must finalise
// it one by one.
func (f *Finalizer) finalizeGrouped(ctx context.Context, ev events.Envelope) (bool, error) {
	// Only what a group may finish takes a place (and a lock) in one.
	var data struct {
		UserID    *uuid.UUID `json:"user_id"`
		SizeBytes int64      `json:"size_bytes"`
	}
	if err := json.Unmarshal(ev.Data, &data); err != nil || data.UserID == nil || data.SizeBytes > groupMaxBytes {
		return false, nil
	}
	req := batchReq{ctx: ctx, ev: ev, done: make(chan error, 1)}
	select {
	case f.batchIn <- req:
	case <-f.batchStop:
		return false, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
	// The group always answers (its own work is bounded by batchTimeout).
	err := <-req.done
	if errors.Is(err, errOneByOne) {
		return false, nil
	}
	return true, err
}

// RunBatches runs the group finaliser until ctx ends: up to parallel
// groups at once, each of at most most uploads, taken as they queue (no
// waiting to fill a group: the uploads that arrive while the groups in
// flight work form the next one). Then it hands every upload it has not
// taken back to its handler. Run it once, before the handlers start.
func (f *Finalizer) RunBatches(ctx context.Context, parallel, most int) {
	f.batchOn.Store(true)
	var wg sync.WaitGroup
	defer func() {
		f.batchOn.Store(false)
		close(f.batchStop)
		wg.Wait()
	}()
	slots := make(chan struct{}, parallel)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		var reqs []batchReq
		select {
		case r := <-f.batchIn:
			reqs = append(reqs, r)
		case <-ctx.Done():
			<-slots
			return
		}
	more:
		for len(reqs) < most {
			select {
			case r := <-f.batchIn:
				reqs = append(reqs, r)
			default:
				break more
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			f.finalizeBatch(context.WithoutCancel(ctx), reqs)
		}()
	}
}

// finalizeBatch finalises reqs as one group and answers each.
func (f *Finalizer) finalizeBatch(ctx context.Context, reqs []batchReq) {
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	f.metrics.grouped(len(reqs))
	answered := make([]bool, len(reqs))
	answer := func(i int, err error) {
		if !answered[i] {
			answered[i] = true
			reqs[i].done <- err
		}
	}
	defer func() {
		for i := range reqs {
			answer(i, errOneByOne)
		}
	}()

	// One document once per group (a duplicate delivery goes one by one:
	// it waits for this group's lock and then finds the work done).
	slices.SortFunc(reqs, func(a, b batchReq) int { return compareUUID(a.ev.AggregateID, b.ev.AggregateID) })
	var ids, eventIDs []uuid.UUID
	var keys []string
	var group []int
	for i, r := range reqs {
		if i > 0 && r.ev.AggregateID == reqs[i-1].ev.AggregateID {
			continue
		}
		group = append(group, i)
		ids = append(ids, r.ev.AggregateID)
		eventIDs = append(eventIDs, r.ev.ID)
		keys = append(keys, r.ev.AggregateID.String())
	}

	conn, err := f.db.Acquire(ctx)
	if err != nil {
		return
	}
	defer conn.Release() // the pool closes a connection left in a transaction
	batch := &pgx.Batch{}
	batch.Queue(`begin`)
	batch.Queue(`select k, pg_try_advisory_xact_lock(hashtextextended(k, 0)) from unnest($1::text[]) k`, keys)
	processed := store.QueueProcessedAmong(batch, ConsumerName, eventIDs)
	documents := store.QueueGetDocumentsAndQuotas(batch, ids, f.quota)
	results := conn.SendBatch(ctx, batch)
	_, err = results.Exec()
	locked := map[string]bool{}
	if err == nil {
		var rows pgx.Rows
		if rows, err = results.Query(); err == nil {
			for rows.Next() {
				var k string
				var ok bool
				if err = rows.Scan(&k, &ok); err != nil {
					break
				}
				locked[k] = ok
			}
			rows.Close()
			err = errors.Join(err, rows.Err())
		}
	}
	done, doneErr := processed(results)
	docs, docsErr := documents(results)
	if err := errors.Join(err, doneErr, docsErr, results.Close()); err != nil {
		f.rollback(conn)
		return
	}

	// The common case only: the rest goes one by one.
	type candidate struct {
		req int
		doc store.Document
		err error
	}
	var copies []candidate
	for _, i := range group {
		ev := reqs[i].ev
		if !locked[ev.AggregateID.String()] {
			continue
		}
		if done[ev.ID] {
			answer(i, nil)
			continue
		}
		dq, ok := docs[ev.AggregateID]
		if !ok || dq.Document.Status != store.StatusPending || dq.Document.StagingETag == nil || dq.Document.UserID == nil ||
			dq.Document.SizeBytes > groupMaxBytes {
			continue
		}
		if fits, _ := dq.Quota.Fits(dq.Document.SizeBytes); !fits {
			continue
		}
		copies = append(copies, candidate{req: i, doc: dq.Document})
	}
	if len(copies) == 0 {
		f.rollback(conn)
		return
	}
	var wg sync.WaitGroup
	for c := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			doc := copies[c].doc
			copies[c].err = f.blobs.CopyIfUnchanged(ctx, blob.StagingKey(doc.ID), *doc.StagingETag, blob.FinalKey(doc.UserID, doc.ID))
		}()
	}
	wg.Wait()

	var items []store.ChargedFinish
	var finishing []candidate
	for _, c := range copies {
		if c.err != nil {
			continue // not found, changed, or failed: one by one
		}
		r := reqs[c.req]
		expected := c.doc
		expected.Status, expected.StorageKey = store.StatusReady, blob.FinalKey(c.doc.UserID, c.doc.ID)
		out, err := events.New(events.DocumentFinalized, "document", c.doc.ID, events.System, r.ev.CorrelationID, &r.ev, expected.EventData())
		if err != nil {
			continue
		}
		items = append(items, store.ChargedFinish{EventID: r.ev.ID, Doc: c.doc, FinalKey: expected.StorageKey, Out: out, Origin: origin(r.ctx)})
		finishing = append(finishing, c)
	}
	if len(items) == 0 {
		f.rollback(conn)
		return
	}
	batch = &pgx.Batch{}
	finished, err := store.QueueFinishChargedMany(batch, ConsumerName, items, f.quota)
	if err != nil {
		f.rollback(conn)
		return
	}
	batch.Queue(`commit`)
	results = conn.SendBatch(ctx, batch)
	applied, err := finished(results)
	tag, commitErr := results.Exec()
	if err = errors.Join(err, commitErr, results.Close()); err != nil || tag.String() != "COMMIT" {
		// Rolled back: nothing of the group happened.
		f.rollback(conn)
		return
	}
	f.notify.Poke()
	for _, c := range finishing {
		if !applied[c.doc.ID] {
			continue // not applied (see QueueFinishChargedMany): one by one decides
		}
		r := reqs[c.req]
		f.removeLater(ctx, blob.StagingKey(c.doc.ID))
		f.metrics.finished(store.StatusReady, "")
		f.log.Info("document ready", append([]any{"document_id", c.doc.ID, "size_bytes", c.doc.SizeBytes},
			tracing.EventAttrs(r.ctx, r.ev)...)...)
		answer(c.req, nil)
	}
}

// rollback ends conn's transaction, if one is open; if that fails, the
// pool closes the connection on release.
func (f *Finalizer) rollback(conn *pgxpool.Conn) {
	if conn.Conn().PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, `rollback`)
}

func compareUUID(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }
