package relay

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/docuvault/docuvault/internal/store"
)

// ChainLock is the advisory lock key the audit chainer holds.
const ChainLock int64 = 0x646f637563686169 // "docuchai"

// ChainConfig tunes a Chainer.
type ChainConfig struct {
	// Batch is how many audit rows one transaction chains (default 5000).
	Batch int
	// Poll is how often the chainer looks for new audit rows (default 1 s).
	Poll time.Duration
	// FullScanEvery is how often it looks for unchained rows from the
	// beginning of the log, as a safety net (default 5 min); see cursor.
	FullScanEvery time.Duration
	// LeaseRetry is how often a standby tries to take the chain lock
	// (default 1 s).
	LeaseRetry time.Duration
}

func (c ChainConfig) withDefaults() ChainConfig {
	c.Batch = cmp.Or(c.Batch, 5000)
	c.Poll = cmp.Or(c.Poll, time.Second)
	c.FullScanEvery = cmp.Or(c.FullScanEvery, 5*time.Minute)
	c.LeaseRetry = cmp.Or(c.LeaseRetry, time.Second)
	return c
}

// Chainer appends every committed audit_log row to the audit chain
// (store.ChainHash). One chainer runs at a time: it holds ChainLock on a
// dedicated connection and writes on that connection, so a chainer that
// lost its connection (and with it the lock) cannot commit. Rows are
// chained in the order the chainer sees them commit; the same cursor as the
// relay's keeps each look from rescanning the whole log (a row committed
// late is chained late, never skipped).
type Chainer struct {
	cfg    ChainConfig
	log    *slog.Logger
	db     *pgxpool.Pool
	linked prometheus.Counter
	head   prometheus.Gauge
}

// NewChainer returns a chainer over db that registers its metrics on reg
// (when not nil).
func NewChainer(cfg ChainConfig, log *slog.Logger, db *pgxpool.Pool, reg prometheus.Registerer) *Chainer {
	c := &Chainer{cfg: cfg.withDefaults(), log: log, db: db,
		linked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "docuvault_audit_chain_links_total",
			Help: "Audit rows this process appended to the audit chain.",
		}),
		head: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "docuvault_audit_chain_head_seq",
			Help: "Sequence number of the last link of the audit chain, as this process last wrote it (0 on standby).",
		}),
	}
	if reg != nil {
		reg.MustRegister(c.linked, c.head)
	}
	return c
}

// Run chains until ctx is cancelled, taking over when the chainer holding
// the lock goes away. It returns nil when ctx is cancelled.
func (c *Chainer) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		conn, err := holdLock(ctx, c.db, ChainLock, c.cfg.LeaseRetry, "docuvault-chainer", func() {
			c.log.Info("audit chain: another relay chains")
		})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.log.Warn("audit chain lock", "err", err)
			sleep(ctx, c.cfg.LeaseRetry)
			continue
		}
		err = c.chain(ctx, conn)
		c.head.Set(0)
		releaseLock(conn, ChainLock)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("audit chain: stopped chaining", "err", err)
			sleep(ctx, c.cfg.LeaseRetry)
		}
	}
	return nil
}

// chain appends rows on conn until ctx is cancelled (nil) or a round
// fails: the head in memory is only known right after reading it.
func (c *Chainer) chain(ctx context.Context, conn *pgx.Conn) error {
	head, err := store.ChainHead(ctx, conn)
	if err != nil {
		return fmt.Errorf("read chain head: %w", err)
	}
	c.log.Info("audit chain: chaining", "head_seq", head.Seq)
	c.head.Set(float64(head.Seq))
	cur := newCursor(c.cfg.FullScanEvery)
	tick := time.NewTicker(c.cfg.Poll)
	defer tick.Stop()
	for {
		for { // until the look comes back short
			n, err := c.round(ctx, conn, cur, &head)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			c.linked.Add(float64(n))
			c.head.Set(float64(head.Seq))
			if !cur.more() || ctx.Err() != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// round chains one batch of unchained rows in one transaction and moves
// *head on commit.
func (c *Chainer) round(ctx context.Context, conn *pgx.Conn, cur *cursor, head *store.ChainLink) (int, error) {
	from := cur.next(time.Now())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit, a no-op
	rows, xmin, err := store.UnchainedAudit(ctx, tx, from, c.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("read unchained audit rows: %w", err)
	}
	links := make([]store.ChainLink, len(rows))
	next := *head
	for i, r := range rows {
		next = store.ChainLink{Seq: next.Seq + 1, AuditID: r.ID, Hash: store.ChainHash(next.Hash, r)}
		links[i] = next
	}
	xid, err := store.AppendChain(ctx, tx, links)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit audit chain links: %w", err)
	}
	*head = next
	last := from
	if len(rows) > 0 {
		last = rows[len(rows)-1].ID
	}
	cur.observeIDs(time.Now(), from, last, len(rows), xid, xmin, c.cfg.Batch)
	return len(rows), nil
}

// holdLock connects to db (not waiting for the WAL flush on commit: work
// lost in a database crash is redone) and waits until the connection holds
// the advisory lock key, calling onStandby once if it has to wait.
func holdLock(ctx context.Context, db *pgxpool.Pool, key int64, retry time.Duration, name string, onStandby func()) (*pgx.Conn, error) {
	cc := db.Config().ConnConfig.Copy()
	cc.RuntimeParams["synchronous_commit"] = "off"
	cc.RuntimeParams["application_name"] = name
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	standby := false
	for {
		var got bool
		if err := conn.QueryRow(ctx, `select pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
			_ = conn.Close(context.Background())
			return nil, fmt.Errorf("take lock: %w", err)
		}
		if got {
			return conn, nil
		}
		if !standby && onStandby != nil {
			onStandby()
			standby = true
		}
		select {
		case <-ctx.Done():
			_ = conn.Close(context.Background())
			return nil, ctx.Err()
		case <-time.After(retry):
		}
	}
}

// releaseLock gives the lock back and closes conn (closing alone would
// release it too).
func releaseLock(conn *pgx.Conn, key int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, `select pg_advisory_unlock($1)`, key)
	_ = conn.Close(ctx)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
