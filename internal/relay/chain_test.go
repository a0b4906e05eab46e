package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// runChainer runs a chainer on db until stop is called or the test ends.
func runChainer(t *testing.T, db *pgxpool.Pool, cfg relay.ChainConfig) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := relay.NewChainer(cfg, testenv.Logger(t), db, nil).Run(ctx); err != nil {
			t.Errorf("chainer Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// recordEvents writes n events through store.Record, each in its own
// transaction.
func recordEvents(t *testing.T, db *pgxpool.Pool, n int) {
	t.Helper()
	for range n {
		ev := testenv.SampleEvent(t)
		if err := pgx.BeginFunc(context.Background(), db, func(tx pgx.Tx) error {
			return store.Record(context.Background(), tx, ev, store.Origin{UserAgent: "test", RequestID: "req-1"})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// chained waits (bounded) until every audit row is in the chain.
func chained(t *testing.T, db *pgxpool.Pool, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var rows, links int64
		if err := db.QueryRow(context.Background(),
			`select (select count(*) from audit_log), (select count(*) from audit_chain)`).Scan(&rows, &links); err != nil {
			t.Fatal(err)
		}
		if rows == links {
			return links
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d audit rows, %d chained after %s", rows, links, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestChainerChainsEveryRowOnce: writers commit out of id order (one holds
// its row for a second, some roll back) while two chainers compete; in the
// end every committed row is in exactly one link, the links are numbered
// without gap, and the chain verifies.
func TestChainerChainsEveryRowOnce(t *testing.T) {
	db := testenv.NewDB(t)
	pool := testenv.Pool(t, db.AppURL)
	ctx := context.Background()
	cfg := relay.ChainConfig{Batch: 50, Poll: 10 * time.Millisecond, FullScanEvery: time.Hour, LeaseRetry: 20 * time.Millisecond}
	runChainer(t, pool, cfg)
	runChainer(t, pool, cfg)

	// A transaction that takes an early audit id and commits after many
	// later ones have been chained.
	late, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback(ctx) //nolint:errcheck
	if err := store.Record(ctx, late, testenv.SampleEvent(t), store.Origin{}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var committed, rolledBack sync.Map
	for w := range 6 {
		wg.Go(func() {
			for i := range 60 {
				ev := testenv.SampleEvent(t)
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if err := store.Record(ctx, tx, ev, store.Origin{}); err != nil {
						return err
					}
					if rand.IntN(10) == 0 {
						return errRollback
					}
					return nil
				})
				switch {
				case errors.Is(err, errRollback):
					rolledBack.Store(fmt.Sprint(w, i), true)
				case err != nil:
					t.Error(err)
					return
				default:
					committed.Store(ev.ID, true)
				}
			}
		})
	}
	wg.Wait()
	chained(t, pool, 30*time.Second)
	if err := late.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	links := chained(t, pool, 30*time.Second)

	var rows, distinct, maxSeq int64
	if err := pool.QueryRow(ctx, `select count(*), count(distinct c.audit_id), max(c.seq)
		from audit_chain c join audit_log a on a.id = c.audit_id`).Scan(&rows, &distinct, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if rows != links || distinct != links || maxSeq != links {
		t.Fatalf("links %d, joined %d, distinct rows %d, last seq %d: want all equal", links, rows, distinct, maxSeq)
	}
	var lateChainedLast bool
	if err := pool.QueryRow(ctx, `select (select audit_id from audit_chain order by seq desc limit 1) = (select min(id) from audit_log)`).Scan(&lateChainedLast); err != nil {
		t.Fatal(err)
	}
	if !lateChainedLast {
		t.Error("the late commit (lowest audit id) is not the last link")
	}
	rep, err := relay.VerifyChain(ctx, pool, time.Time{}, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Break != nil || rep.Links != links {
		t.Fatalf("verify: %d links, break %v; want %d links intact", rep.Links, rep.Break, links)
	}
}

var errRollback = errors.New("roll back")

// TestVerifyChainFindsTampering: a superuser changes the audit log or the
// chain behind the application's back; verification names the first
// broken link, and the untouched chain before it still verifies from a
// later --since.
func TestVerifyChainFindsTampering(t *testing.T) {
	cases := []struct {
		name   string
		tamper string // run as superuser; $1 is the 5th chained audit row's id
		want   string
		seq    int64 // link reported (0: a row in no link)
	}{
		{"row altered", `update audit_log set details = details || '{"size_bytes": 1}' where id = $1`, "no longer matches", 5},
		{"actor rewritten", `update audit_log set actor_type = 'system' where id = $1`, "no longer matches", 5},
		{"trace rewritten", `update audit_log set traceparent = '00-' || repeat('a', 32) || '-' || repeat('b', 16) || '-01' where id = $1`, "no longer matches", 5},
		{"row deleted", `delete from audit_log where id = $1`, "was deleted", 5},
		{"link deleted", `delete from audit_chain where audit_id = $1`, "link is missing", 5},
		{"link recomputed for an altered row", `with a as (update audit_log set action = 'document.rejected' where id = $1)
			update audit_chain set hash = sha256(hash) where audit_id = $1`, "no longer matches", 5},
		{"row inserted behind the chain", `insert into audit_log (id, occurred_at, actor_type, action, aggregate_type, aggregate_id)
			overriding system value values ($1 * 1000 + 1, now() - interval '1 day', 'system', 'document.deleted', 'document', gen_random_uuid())`, "inserted behind", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := testenv.NewDB(t)
			pool := testenv.Pool(t, db.AppURL)
			ctx := context.Background()
			stopChainer := runChainer(t, pool, relay.ChainConfig{Poll: 10 * time.Millisecond})
			recordEvents(t, pool, 10)
			chained(t, pool, 30*time.Second)
			if tc.seq == 0 {
				// Room above the row ids for the inserted row to sit below
				// a later chained one.
				if _, err := testenv.AdminConn(t, db.Name).Exec(ctx, `select setval(pg_get_serial_sequence('audit_log', 'id'), 100000)`); err != nil {
					t.Fatal(err)
				}
				recordEvents(t, pool, 1)
				chained(t, pool, 30*time.Second)
			}
			// A running chainer would link a row slipped in behind it at
			// its next full scan: verification reports such a row only
			// until then.
			stopChainer()

			rep, err := relay.VerifyChain(ctx, pool, time.Time{}, time.Minute, nil)
			if err != nil || rep.Break != nil {
				t.Fatalf("before tampering: %v, break %v", err, rep.Break)
			}
			var fifth int64
			if err := pool.QueryRow(ctx, `select audit_id from audit_chain where seq = 5`).Scan(&fifth); err != nil {
				t.Fatal(err)
			}
			if _, err := testenv.AdminConn(t, db.Name).Exec(ctx, tc.tamper, fifth); err != nil {
				t.Fatal(err)
			}
			rep, err = relay.VerifyChain(ctx, pool, time.Time{}, time.Minute, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Break == nil {
				t.Fatalf("tampering not detected (%d links verified)", rep.Links)
			}
			if !strings.Contains(rep.Break.Error(), tc.want) || rep.Break.Seq != tc.seq {
				t.Errorf("break %q at link %d; want %q at link %d", rep.Break, rep.Break.Seq, tc.want, tc.seq)
			}
			if tc.seq != 0 && rep.Break.Seq == 5 && rep.Break.AuditID != 0 && rep.Break.AuditID != fifth {
				t.Errorf("break names audit row %d; want %d", rep.Break.AuditID, fifth)
			}
		})
	}
}

// TestVerifyChainSince: verification from a later point trusts the link
// before it, so a break earlier in the chain is outside its range.
func TestVerifyChainSince(t *testing.T) {
	db := testenv.NewDB(t)
	pool := testenv.Pool(t, db.AppURL)
	ctx := context.Background()
	runChainer(t, pool, relay.ChainConfig{Poll: 10 * time.Millisecond})
	recordEvents(t, pool, 5)
	chained(t, pool, 30*time.Second)
	mid := time.Now()
	time.Sleep(5 * time.Millisecond) // occurred_at of the next rows is after mid
	recordEvents(t, pool, 5)
	links := chained(t, pool, 30*time.Second)
	if _, err := testenv.AdminConn(t, db.Name).Exec(ctx, `update audit_log set details = '{}' where id = (select audit_id from audit_chain where seq = 2)`); err != nil {
		t.Fatal(err)
	}
	rep, err := relay.VerifyChain(ctx, pool, mid, time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Break != nil || rep.Links != 5 || rep.From != 6 || rep.Head.Seq != links {
		t.Fatalf("since the middle: %d links from %d to %d, break %v; want 5 from 6 to %d", rep.Links, rep.From, rep.Head.Seq, rep.Break, links)
	}
	if rep, err = relay.VerifyChain(ctx, pool, time.Time{}, time.Minute, nil); err != nil || rep.Break == nil || rep.Break.Seq != 2 {
		t.Fatalf("from the start: err %v, break %v; want a break at link 2", err, rep.Break)
	}
}
