package store

import (
	"context"
	"log/slog"
	"time"
)

// OutboxChannel is the LISTEN/NOTIFY channel that wakes the relay.
const OutboxChannel = "docuvault_outbox"

// Notifier wakes the relay after outbox rows committed.
//
// The NOTIFY is sent after the commit, in its own statement, never inside
// the writing transaction: PostgreSQL serialises the commits of all
// transactions that issued NOTIFY under one lock (fsync included), which
// capped uploads at one commit at a time. A notification sent this way can
// be lost (the process dies between commit and NOTIFY); the relay's poll
// fallback covers that. Bursts are coalesced into one NOTIFY.
type Notifier struct {
	db   DBTX
	log  *slog.Logger
	poke chan struct{}
}

// NewNotifier returns a Notifier sending on db; Run must be running for
// Poke to have an effect.
func NewNotifier(db DBTX, log *slog.Logger) *Notifier {
	return &Notifier{db: db, log: log, poke: make(chan struct{}, 1)}
}

// Poke asks for a notification; it never blocks.
func (n *Notifier) Poke() {
	if n == nil {
		return
	}
	select {
	case n.poke <- struct{}{}:
	default:
	}
}

// Run sends one NOTIFY per burst of pokes until ctx is done.
func (n *Notifier) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.poke:
		}
		sendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := n.db.Exec(sendCtx, `select pg_notify($1, '')`, OutboxChannel)
		cancel()
		if err != nil && ctx.Err() == nil {
			n.log.Warn("notify relay", "err", err)
		}
	}
}
