package relay

import (
	"sort"
	"time"

	"github.com/docuvault/docuvault/internal/store"
)

// cursor chooses where each batch starts, so that the leader neither scans
// the whole outbox for every batch nor skips or reorders a late commit.
//
// Published rows are deleted, and until VACUUM runs their index entries
// stay: a batch that starts at the lowest id walks over every row deleted
// since, which made the relay half as fast after a million events. So a
// batch starts after a floor below which no row can still appear:
//
//   - Batch j ran in the relay's transaction R_j, which got its id after
//     the batch's snapshot was taken, and left the high-water mark H_j
//     (highest id taken so far; all those rows were visible to it).
//   - A transaction that got its id after R_j got it after that snapshot,
//     and our writers get a transaction id (they change a row) before they
//     take an outbox id: so all its rows have ids above H_j.
//   - Every row that became visible since the previous batch belongs to a
//     transaction that was running at the previous batch's snapshot, whose
//     id is at least that snapshot's xmin. So with R_j the latest below
//     that xmin, every such row is above H_j, and the next batch starts
//     after min(high-water mark, H_j).
//
// Rows of one batch go out in id order, so events of one aggregate (whose
// writers lock it, so they take ids in commit order) keep their order
// whatever the commit order of others. The floor trails the oldest running
// transaction of the whole PostgreSQL cluster: a long transaction anywhere
// makes batches rescan more dead entries, never stalls them. A scan from
// the very beginning runs at start and every fullEvery, as a safety net for
// writers that take an outbox id first and for rows a concurrent
// transaction held locked.
type cursor struct {
	hwm       int64  // highest id taken so far
	marks     []mark // (relay transaction, high-water mark after it), ascending
	xmin      uint64 // oldest running transaction at the last batch
	fullEvery time.Duration
	lastFull  time.Time // zero: a full scan is due
	pass      *pass     // a scan below the floor in progress
	full      bool      // the last batch came back full
}

type mark struct {
	xid uint64
	hwm int64
}

// pass is a scan in progress: the next batch takes ids above from.
type pass struct {
	from  int64
	whole bool // from the beginning
}

func newCursor(fullEvery time.Duration) *cursor {
	return &cursor{fullEvery: fullEvery}
}

// floor is the id below which no row can still become visible: the
// high-water mark of the latest batch whose transaction is older than the
// oldest transaction running at the last batch (0 when unknown).
func (c *cursor) floor() int64 {
	i := sort.Search(len(c.marks), func(i int) bool { return c.marks[i].xid >= c.xmin })
	if i == 0 {
		return 0
	}
	return c.marks[i-1].hwm
}

// next returns the id the next batch starts after.
func (c *cursor) next(now time.Time) int64 {
	switch {
	case c.pass != nil:
		return c.pass.from
	case c.lastFull.IsZero() || now.Sub(c.lastFull) >= c.fullEvery:
		c.pass = &pass{whole: true}
		return 0
	}
	return min(c.hwm, c.floor())
}

// observe records a committed batch that started after from: its rows (of
// at most batch), its transaction and its snapshot's xmin.
func (c *cursor) observe(now time.Time, from int64, rows []store.OutboxRow, xid, xmin uint64, batch int) {
	last := from
	if len(rows) > 0 {
		last = rows[len(rows)-1].ID
	}
	c.observeIDs(now, from, last, len(rows), xid, xmin, batch)
}

// observeIDs is observe for a batch of n rows whose highest id is last
// (from when n is 0).
func (c *cursor) observeIDs(now time.Time, from, last int64, n int, xid, xmin uint64, batch int) {
	last = max(last, from)
	c.hwm = max(c.hwm, last)
	c.marks = append(c.marks, mark{xid: xid, hwm: c.hwm})
	c.xmin = max(c.xmin, xmin)
	// Keep the latest mark below xmin (the floor) and those after it.
	if i := sort.Search(len(c.marks), func(i int) bool { return c.marks[i].xid >= c.xmin }); i > 1 {
		c.marks = append(c.marks[:0], c.marks[i-1:]...)
	}
	c.full = n == batch
	switch {
	case c.full && c.pass != nil:
		c.pass.from = last // continue the scan
	case c.pass != nil:
		if c.pass.whole {
			c.lastFull = now
		}
		c.pass = nil
	}
}

// more reports whether another batch is due right away.
func (c *cursor) more() bool {
	return c.full || c.pass != nil
}
