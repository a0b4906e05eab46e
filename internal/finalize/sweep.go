package finalize

import (
	"cmp"
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/store"
)

// SweepConfig tunes the periodic repairs.
type SweepConfig struct {
	// Interval between sweeps (default 1 minute).
	Interval time.Duration
	// StagingGrace is how old a staged object must be before it may be
	// removed (default 1 hour): an upload in flight has staged bytes and no
	// row yet.
	StagingGrace time.Duration
	// RepublishAfter is how long a document may stay pending before its
	// document.uploaded event is published again (default 2 minutes).
	RepublishAfter time.Duration
}

func (c SweepConfig) withDefaults() SweepConfig {
	c.Interval = cmp.Or(c.Interval, time.Minute)
	c.StagingGrace = cmp.Or(c.StagingGrace, time.Hour)
	c.RepublishAfter = cmp.Or(c.RepublishAfter, 2*time.Minute)
	return c
}

// SweepResult counts what one sweep repaired.
type SweepResult struct {
	OrphansRemoved int
	Republished    int
	Purged         int
	Relocated      int // phase 1 objects moved under their owner's prefix
}

// Sweep runs until ctx is done, repairing every Interval.
func (f *Finalizer) Sweep(ctx context.Context, cfg SweepConfig) {
	cfg = cfg.withDefaults()
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		res, err := f.SweepOnce(ctx, cfg)
		if err != nil && ctx.Err() == nil {
			f.log.Warn("sweep", "err", err)
		} else if res.OrphansRemoved > 0 || res.Republished > 0 || res.Purged > 0 || res.Relocated > 0 {
			f.log.Info("sweep repaired", "orphans_removed", res.OrphansRemoved, "republished", res.Republished, "purged", res.Purged,
				"relocated", res.Relocated)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SweepOnce removes staged objects older than the grace period whose
// document never committed or is no longer pending, re-queues the events of
// documents pending for too long, and removes the objects of deleted
// documents whose document.deleted was never handled (lost or
// dead-lettered).
func (f *Finalizer) SweepOnce(ctx context.Context, cfg SweepConfig) (SweepResult, error) {
	cfg = cfg.withDefaults()
	var res SweepResult
	cutoff := time.Now().Add(-cfg.StagingGrace)
	var candidates []uuid.UUID
	err := f.blobs.List(ctx, "staging/", func(key string, info minio.ObjectInfo) error {
		if info.LastModified.After(cutoff) {
			return nil
		}
		id, err := uuid.Parse(strings.TrimPrefix(key, "staging/"))
		if err != nil {
			return nil // not ours
		}
		candidates = append(candidates, id)
		return nil
	})
	if err != nil {
		return res, err
	}
	for len(candidates) > 0 {
		batch := candidates[:min(len(candidates), 500)]
		candidates = candidates[len(batch):]
		pending, err := store.PendingDocumentIDs(ctx, f.db, batch)
		if err != nil {
			return res, err
		}
		for _, id := range batch {
			if pending[id] {
				continue
			}
			if err := f.blobs.Remove(ctx, "staging/"+id.String()); err != nil {
				return res, err
			}
			res.OrphansRemoved++
		}
	}
	if res.Republished, err = store.RequeueStuckUploads(ctx, f.db, cfg.RepublishAfter, 500); err != nil {
		return res, err
	}
	deleted, err := store.Unpurged(ctx, f.db, cfg.RepublishAfter, 500)
	if err != nil {
		return res, err
	}
	for _, d := range deleted {
		if err := f.purge(ctx, f.db, d.ID, d.UserID, d.StorageKey); err != nil {
			return res, err
		}
		res.Purged++
	}
	var left int
	if res.Relocated, left, err = f.relocateMisplaced(ctx, cfg.StagingGrace, 500); err != nil {
		return res, err
	}
	res.OrphansRemoved += left
	return res, nil
}
