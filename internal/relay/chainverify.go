package relay

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/docuvault/docuvault/internal/store"
)

// ChainBreak is the first broken link that VerifyChain found.
type ChainBreak struct {
	Seq     int64 // the link (0 for a row that is in no link)
	AuditID int64 // the audit row
	Reason  string
}

func (b *ChainBreak) Error() string {
	if b.Seq == 0 {
		return fmt.Sprintf("audit chain broken at audit row %d: %s", b.AuditID, b.Reason)
	}
	return fmt.Sprintf("audit chain broken at link %d (audit row %d): %s", b.Seq, b.AuditID, b.Reason)
}

// ChainReport is what VerifyChain checked.
type ChainReport struct {
	From  int64           // first link verified (0 when none was)
	Links int64           // links verified
	Head  store.ChainLink // the last link verified
	Break *ChainBreak     // nil when the chain holds
}

// verifyBatch is how many links one query reads.
const verifyBatch = 20000

// VerifyChain recomputes the audit chain from the link of the first row
// that occurred at or after since (from the first link when since is
// zero) to its end, trusting the link before as the anchor, and stops at
// the first link that does not follow: a link missing from the sequence,
// a chained audit row that is gone, or a row or earlier link whose content
// no longer gives the stored hash. It then looks for audit rows that are
// in no link although later rows are, older than grace (younger ones may
// simply not be chained yet): rows inserted behind the chainer's back.
// progress, when not nil, is called after each batch.
func VerifyChain(ctx context.Context, db store.DBTX, since time.Time, grace time.Duration, progress func(links int64)) (ChainReport, error) {
	var rep ChainReport
	from := int64(1)
	if !since.IsZero() {
		var err error
		if from, err = store.ChainStartAt(ctx, db, since); err != nil {
			return rep, err
		}
		if from == 0 {
			return rep, nil // nothing chained since then
		}
	}
	var prev [sha256.Size]byte
	if from > 1 {
		anchor, ok, err := store.ChainLinkAt(ctx, db, from-1)
		if err != nil {
			return rep, err
		}
		if !ok {
			rep.Break = &ChainBreak{Seq: from - 1, Reason: "the link is missing"}
			return rep, nil
		}
		prev = anchor.Hash
	}
	rowsAfter := int64(-1) // unchained rows are looked for above this id
	for next := from; ; {
		entries, err := store.ChainEntries(ctx, db, next, verifyBatch)
		if err != nil {
			return rep, err
		}
		for _, e := range entries {
			switch {
			case e.Seq != next:
				rep.Break = &ChainBreak{Seq: next, Reason: fmt.Sprintf("the link is missing (the chain goes on at link %d)", e.Seq)}
			case e.Row == nil:
				rep.Break = &ChainBreak{Seq: e.Seq, AuditID: e.AuditID, Reason: "the chained audit row was deleted"}
			case store.ChainHash(prev, *e.Row) != e.Hash:
				rep.Break = &ChainBreak{Seq: e.Seq, AuditID: e.AuditID,
					Reason: "the audit row no longer matches its link: it, or the link before, was changed after chaining"}
			}
			if rep.Break != nil {
				return rep, nil
			}
			if rowsAfter < 0 {
				rowsAfter = e.AuditID - 1
				rep.From = e.Seq
			}
			prev = e.Hash
			rep.Head = e.ChainLink
			rep.Links++
			next++
		}
		if progress != nil && len(entries) > 0 {
			progress(rep.Links)
		}
		if len(entries) < verifyBatch {
			break
		}
	}
	if rep.Links == 0 {
		return rep, nil
	}
	id, found, err := store.UnchainedBefore(ctx, db, rowsAfter, time.Now().Add(-grace))
	if err != nil {
		return rep, err
	}
	if found {
		rep.Break = &ChainBreak{AuditID: id,
			Reason: fmt.Sprintf("the row is older than %s and in no link although later rows are: it was inserted behind the chain", grace)}
	}
	return rep, nil
}
