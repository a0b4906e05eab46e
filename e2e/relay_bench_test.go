package e2e

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for watermill-sql
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

const (
	rbBacklog      = 100_000          // events in the drain phase's backlog
	rbDrainTimeout = 60 * time.Second // longest a contender may take to drain it
	rbRate         = 200              // events/s in the latency phase
	rbWarmup       = time.Second      // at rbRate, not measured
	rbSteady       = 10 * time.Second // at rbRate, measured
	rbArrivalWait  = 10 * time.Second // longest wait for the last events to arrive
	rbSettle       = time.Second      // pause before the idle measurement
	rbIdle         = 5 * time.Second  // idle CPU measurement
	rbStopTimeout  = 40 * time.Second // longest a contender may take to stop
	rbRelayBatch   = 1000             // our relay's batch, as the tuned Forwarder's
	rbWMBatch      = 5000             // messages per INSERT for the watermill-sql backlog (3 parameters each)
	// rbForwarderTopic is the Forwarder's default topic (forwarder.Config and
	// forwarder.PublisherConfig default to it); watermill-sql stores it in
	// the table "watermill_forwarder_topic".
	rbForwarderTopic = "forwarder_topic"
)

// rbStream is the stream every event of the benchmark goes to.
var rbStream = events.StreamDocuments

// BenchmarkRelay compares, in one run and on the same PostgreSQL and Redis,
// three ways of moving transactional-outbox entries to Redis Streams in
// Watermill's wire format:
//
//   - relay: our internal/relay, woken by store.Notifier after each commit;
//   - forwarder-default: Watermill's Forwarder (components/forwarder) reading
//     a watermill-sql PostgreSQL table with default settings (poll 1 s,
//     batch 100) and publishing with the stock watermill-redisstream
//     Publisher;
//   - forwarder-tuned: the same with PollInterval 10 ms and
//     SubscribeBatchSize 1000.
//
// For each, on a fresh database and Redis database:
//
//  1. drain: 100,000 events are written with the contender stopped, then it
//     is started and timed until XLEN of the stream reaches 100,000;
//  2. idle CPU: this process's CPU time (getrusage, user+sys) over 5 s with
//     the contender running and nothing to do, as % of one core (only one
//     contender runs at a time, so it is the contender's; PostgreSQL's and
//     Redis's own CPU is not included);
//  3. commit->stream latency at a steady 200 events/s, one event per
//     transaction: from the writer's return from COMMIT to the XREAD BLOCK
//     reply that carries the entry, matched by Watermill message UUID.
//
// It runs once whatever b.N is; the figures are printed, not asserted.
func BenchmarkRelay(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	ev, err := rbNewEvent()
	if err != nil {
		b.Fatal(err)
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	out := &strings.Builder{}
	report := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		fmt.Fprintln(out, line)
		fmt.Fprintln(os.Stdout, line)
	}
	report("DocuVault relay benchmark (%s): %d-event backlog, %d events/s for %v, %v idle; event payload %d bytes (%s); load average %s",
		time.Now().UTC().Format(time.RFC3339), rbBacklog, rbRate, rbSteady, rbIdle, len(payload), ev.Type, rbLoadAvg())

	contenders := []struct {
		name  string
		setup func(b *testing.B, db testenv.DB, redisURL string) rbSystem
	}{
		{"relay", rbRelaySystem},
		{"relay-1M-history", func(b *testing.B, db testenv.DB, redisURL string) rbSystem {
			rbHistory(b, db, rbHistoryEvents)
			return rbRelaySystem(b, db, redisURL)
		}},
		{"forwarder-default", func(b *testing.B, db testenv.DB, redisURL string) rbSystem {
			return rbForwarderSystem(b, db, redisURL, false)
		}},
		{"forwarder-tuned", func(b *testing.B, db testenv.DB, redisURL string) rbSystem {
			return rbForwarderSystem(b, db, redisURL, true)
		}},
	}
	results := map[string]*rbResult{}
	for _, c := range contenders {
		// A sub-benchmark per contender, so its database, Redis database
		// and connections are released (cleanups) before the next starts.
		b.Run(c.name, func(b *testing.B) {
			if b.N > 1 {
				b.Skip("run with -benchtime 1x")
			}
			res := rbRun(b, c.name, c.setup)
			results[c.name] = res
			report("%s", res.detail())
			b.ReportMetric(res.drainRate, "drain-events/s")
			b.ReportMetric(float64(res.p99)/float64(time.Millisecond), "p99-ms")
			b.ReportMetric(res.idleCPU, "idle-cpu-%")
		})
	}

	report("")
	report("%-18s %11s %11s %15s %10s %10s %10s %11s %9s %10s %12s", "contender", "backlog in", "drain ev/s", "deliv/unique",
		"p50", "p99", "max", "deliv/sent", "idle CPU", "idle tx/s", "writer p99")
	for _, c := range contenders {
		r := results[c.name]
		if r == nil {
			report("%-18s (did not run)", c.name)
			continue
		}
		drain := fmt.Sprintf("%.0f", r.drainRate)
		if r.drainTimedOut {
			drain += "*"
		}
		report("%-18s %11v %11s %15s %10v %10v %10v %11s %8.2f%% %10.1f %12v", r.name, r.insert.Round(time.Millisecond), drain,
			fmt.Sprintf("%d/%d", r.delivered, r.unique), r.p50, r.p99, r.max,
			fmt.Sprintf("%d/%d", r.latDelivered, r.latSent), r.idleCPU, r.idleTx, r.commit99)
	}
	report("backlog in: writing the backlog, contender stopped; drain: %d / time until XLEN reached it; p50 p99 max: commit->stream at %d events/s;",
		rbBacklog, rbRate)
	report("idle CPU: this process, %% of one core; idle tx/s: transactions in its database while idle (its polls); writer p99: the writers' BEGIN..COMMIT")
	if slices.ContainsFunc(slices.Collect(maps.Values(results)), func(r *rbResult) bool { return r.drainTimedOut }) {
		report("* drain not finished within %v: the rate is what was delivered in that time", rbDrainTimeout)
	}
	if ours, tuned := results["relay"], results["forwarder-tuned"]; ours != nil && tuned != nil && tuned.drainRate > 0 {
		report("drain rate relay / forwarder-tuned: %.1fx (target >= 5x)", ours.drainRate/tuned.drainRate)
	}
	if ours, hist := results["relay"], results["relay-1M-history"]; ours != nil && hist != nil && ours.drainRate > 0 {
		report("drain rate with %d events of history / without: %.2f; after the first entries: %.2f (the relay must not slow down as history grows; with history, the first batch starts with a full scan over the unvacuumed dead rows: %v vs %v)",
			rbHistoryEvents, hist.drainRate/ours.drainRate, hist.steadyRate/ours.steadyRate, hist.firstBatch.Round(time.Millisecond), ours.firstBatch.Round(time.Millisecond))
	}
	if ours := results["relay"]; ours != nil {
		report("relay commit->stream p99: %v (target <= 5ms)", ours.p99)
	}
	report("load average at the end: %s", rbLoadAvg())
	writeBenchOut(out.String())
}

// rbHistoryEvents is how many events pass through the outbox before the
// relay-1M-history contender runs.
const rbHistoryEvents = 1_000_000

// rbHistory puts n events through db's outbox the way the relay leaves them:
// written, then deleted, with no vacuum in between (the worst case for a
// table used as a queue: its heap and index hold n dead rows).
func rbHistory(b *testing.B, db testenv.DB, n int) {
	pool := testenv.Pool(b, db.AppURL)
	t0 := time.Now()
	for done := 0; done < n; done += 100_000 {
		testenv.Backlog(b, pool, min(100_000, n-done))
	}
	if _, err := pool.Exec(context.Background(), `delete from outbox`); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d events of history written and deleted in %v", n, time.Since(t0).Round(time.Millisecond))
}

// rbSystem is one contender on its own database and Redis database.
type rbSystem struct {
	// backlog writes evs as fast as it can, with the contender stopped.
	backlog func(ctx context.Context, evs []events.Envelope) error
	// start starts the contender in the background; stop stops it and
	// waits until it has stopped.
	start func(b *testing.B) (stop func() error)
	// write commits ev in a transaction of its own and returns the time
	// right after the commit.
	write func(ctx context.Context, ev events.Envelope) (time.Time, error)
	// discard deletes what is still to be relayed (contender stopped), for
	// a drain that did not finish in time.
	discard func(ctx context.Context) (int64, error)
}

// rbResult is one contender's figures.
type rbResult struct {
	name          string
	insert        time.Duration // writing the backlog
	drain         time.Duration // from start to the last backlog entry in the stream
	drainRate     float64       // events/s
	drainTimedOut bool
	firstBatch    time.Duration // from start to the first entries in the stream
	steadyRate    float64       // events/s after the first entries arrived
	delivered     int64         // XLEN after the drain
	unique        int           // distinct message UUIDs among them
	undelivered   int64         // backlog left (and discarded) when the drain timed out
	idleCPU       float64       // % of one core
	idleTx        float64       // transactions/s in the contender's database while idle
	p50, p99, max time.Duration
	latSent       int // events committed in the measured latency window
	latDelivered  int // of which arrived
	early         int // arrived before the writer had returned from COMMIT
	latFailed     int // writes that failed or were skipped
	// commit50 and commit99 are how long the writers' transactions took
	// (BEGIN to COMMIT's reply) in the measured window: a baseline for the
	// database's round trips and WAL flushes on this machine at the time.
	commit50, commit99 time.Duration
}

func (r *rbResult) detail() string {
	s := fmt.Sprintf("%s: backlog of %d written in %v; drained in %v = %.0f events/s (first entries after %v, then %.0f events/s; XLEN %d, %d unique)",
		r.name, rbBacklog, r.insert.Round(time.Millisecond), r.drain.Round(time.Millisecond), r.drainRate,
		r.firstBatch.Round(time.Millisecond), r.steadyRate, r.delivered, r.unique)
	if r.drainTimedOut {
		s += fmt.Sprintf(" TIMED OUT, the %d undelivered discarded", r.undelivered)
	}
	s += fmt.Sprintf("; idle: CPU %.2f%% of a core, %.1f transactions/s in its database; commit->stream at %d/s: p50 %v p99 %v max %v (%d/%d delivered",
		r.idleCPU, r.idleTx, rbRate, r.p50, r.p99, r.max, r.latDelivered, r.latSent)
	if r.early > 0 {
		s += fmt.Sprintf(", %d seen before COMMIT returned", r.early)
	}
	if r.latFailed > 0 {
		s += fmt.Sprintf(", %d writes failed or skipped", r.latFailed)
	}
	return s + fmt.Sprintf("; the writers' own BEGIN..COMMIT took p50 %v p99 %v)", r.commit50, r.commit99)
}

// rbRun measures one contender: drain, idle CPU, latency.
func rbRun(b *testing.B, name string, setup func(b *testing.B, db testenv.DB, redisURL string) rbSystem) *rbResult {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	db := testenv.NewDB(b)
	redisURL := testenv.Redis(b)
	rdb := testenv.RedisClient(b, redisURL)
	sys := setup(b, db, redisURL)
	res := &rbResult{name: name}

	// 1. Drain a backlog written with the contender stopped.
	backlog := make([]events.Envelope, rbBacklog)
	for i := range backlog {
		ev, err := rbNewEvent()
		if err != nil {
			b.Fatal(err)
		}
		backlog[i] = ev
	}
	t0 := time.Now()
	if err := sys.backlog(ctx, backlog); err != nil {
		b.Fatalf("%s: write backlog: %v", name, err)
	}
	res.insert = time.Since(t0)
	backlog = nil

	stop := sys.start(b)
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	t0 = time.Now()
	deadline := t0.Add(rbDrainTimeout)
	var t1 time.Time // when the first entries arrived, and how many
	var n1 int64
	for {
		n, err := rdb.XLen(ctx, rbStream).Result()
		if err != nil {
			b.Fatalf("%s: XLEN: %v", name, err)
		}
		if n > 0 && t1.IsZero() {
			t1, n1 = time.Now(), n
			res.firstBatch = t1.Sub(t0)
		}
		if n >= rbBacklog {
			res.drain = time.Since(t0)
			if d := time.Since(t1); d > 0 && n1 < rbBacklog {
				res.steadyRate = float64(rbBacklog-n1) / d.Seconds()
			}
			break
		}
		if time.Now().After(deadline) {
			res.drain = time.Since(t0)
			res.drainTimedOut = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	n, err := rdb.XLen(ctx, rbStream).Result()
	if err != nil {
		b.Fatal(err)
	}
	res.delivered = n
	res.drainRate = float64(min(n, rbBacklog)) / res.drain.Seconds()
	if res.drainTimedOut {
		// The rest of the backlog would still be draining during the
		// next phases: stop, drop it, start again.
		stopped = true
		if err := stop(); err != nil {
			b.Fatalf("%s: stop: %v", name, err)
		}
		if res.delivered, err = rdb.XLen(ctx, rbStream).Result(); err != nil {
			b.Fatal(err)
		}
		res.undelivered = max(0, rbBacklog-res.delivered)
		if _, err := sys.discard(ctx); err != nil {
			b.Fatalf("%s: discard the backlog left: %v", name, err)
		}
		stop, stopped = sys.start(b), false
	}
	if res.unique, err = rbUniqueIDs(ctx, rdb); err != nil {
		b.Fatalf("%s: read the stream: %v", name, err)
	}

	// 2. Idle CPU of this process with the contender running.
	// Transactions in its database show how often it polls; the server
	// publishes a backend's counts at most once a second, so this is
	// approximate.
	admin := testenv.AdminConn(b, "")
	dbTx := func() int64 {
		var n int64
		if err := admin.QueryRow(ctx, `select xact_commit + xact_rollback from pg_stat_database where datname = $1`, db.Name).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	time.Sleep(rbSettle)
	tx0, cpu0, wall0 := dbTx(), rbCPUTime(b), time.Now()
	time.Sleep(rbIdle)
	cpu1, wall1, tx1 := rbCPUTime(b), time.Now(), dbTx()
	res.idleCPU = 100 * float64(cpu1-cpu0) / float64(wall1.Sub(wall0))
	res.idleTx = float64(tx1-tx0) / wall1.Sub(wall0).Seconds()

	// 3. commit->stream latency at a steady rate, after a warm-up.
	readCtx, stopReading := context.WithCancel(ctx)
	reader, err := rbStartReader(readCtx, rdb)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	rbSteadyWrites(ctx, sys.write, rbWarmup)
	sent, took, failed := rbSteadyWrites(ctx, sys.write, rbSteady)
	res.latFailed = failed
	if len(took) > 0 {
		slices.Sort(took)
		res.commit50, res.commit99 = rbPct(took, 0.50), rbPct(took, 0.99)
	}
	res.latSent = len(sent)
	waitUntil := time.Now().Add(rbArrivalWait)
	for !reader.hasAll(sent) && time.Now().Before(waitUntil) {
		time.Sleep(10 * time.Millisecond)
	}
	stopReading()
	arrived, readErr := reader.wait()
	if readErr != nil {
		b.Errorf("%s: stream reader: %v", name, readErr)
	}
	var lat []time.Duration
	for id, committed := range sent {
		at, ok := arrived[id]
		if !ok {
			continue
		}
		d := at.Sub(committed)
		if d < 0 {
			// The entry was read before the writer got COMMIT's reply
			// (another commit's NOTIFY or a poll found it first): its
			// latency is under the resolution of this method.
			res.early++
			d = 0
		}
		lat = append(lat, d)
	}
	res.latDelivered = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		res.p50, res.p99, res.max = rbPct(lat, 0.50), rbPct(lat, 0.99), rbPct(lat, 1)
	}

	stopped = true
	if err := stop(); err != nil {
		b.Errorf("%s: stop: %v", name, err)
	}
	return res
}

// rbRelaySystem is our relay: writers record events with store.Record and
// poke a store.Notifier after the commit; the relay has its own pool, as
// the relay process has.
func rbRelaySystem(b *testing.B, db testenv.DB, redisURL string) rbSystem {
	log := testenv.Logger(b)
	writers := testenv.Pool(b, db.AppURL)
	relayPool := testenv.Pool(b, db.AppURL)
	rdb := testenv.RedisClient(b, redisURL)
	notifier := store.NewNotifier(writers, log)
	return rbSystem{
		backlog: func(ctx context.Context, evs []events.Envelope) error {
			// One COPY, the columns store.Record writes to the outbox.
			rows := make([][]any, len(evs))
			for i, ev := range evs {
				payload, err := json.Marshal(ev)
				if err != nil {
					return err
				}
				rows[i] = []any{ev.ID, ev.Stream(), ev.Type, ev.AggregateType, ev.AggregateID, ev.CorrelationID, string(payload), ev.OccurredAt}
			}
			n, err := writers.CopyFrom(ctx, pgx.Identifier{"outbox"},
				[]string{"event_id", "stream", "event_type", "aggregate_type", "aggregate_id", "correlation_id", "payload", "created_at"},
				pgx.CopyFromRows(rows))
			if err == nil && n != int64(len(evs)) {
				err = fmt.Errorf("copied %d rows of %d", n, len(evs))
			}
			return err
		},
		start: func(b *testing.B) func() error {
			ctx, cancel := context.WithCancel(context.Background())
			r := relay.New(relay.Config{BatchSize: rbRelayBatch}, log, relayPool, relay.StreamPublisher{Redis: rdb})
			runDone := make(chan error, 1)
			notifyDone := make(chan struct{})
			go func() { runDone <- r.Run(ctx) }()
			go func() {
				defer close(notifyDone)
				notifier.Run(ctx)
			}()
			return func() error {
				cancel()
				<-notifyDone
				select {
				case err := <-runDone:
					return err
				case <-time.After(rbStopTimeout):
					return fmt.Errorf("relay did not stop within %v", rbStopTimeout)
				}
			}
		},
		write: func(ctx context.Context, ev events.Envelope) (time.Time, error) {
			err := store.WithTx(ctx, writers, func(tx pgx.Tx) error {
				return store.Record(ctx, tx, ev, store.Origin{})
			})
			committed := time.Now()
			if err != nil {
				return committed, err
			}
			notifier.Poke()
			return committed, nil
		},
		discard: func(ctx context.Context) (int64, error) {
			tag, err := writers.Exec(ctx, `delete from outbox`)
			return tag.RowsAffected(), err
		},
	}
}

// rbForwarderSystem is Watermill's Forwarder from a watermill-sql table to
// the stock redisstream Publisher. Writers publish through
// forwarder.NewPublisher wrapping a watermill-sql Publisher on their
// transaction, as its documentation shows for an outbox. tuned sets the
// subscriber's PollInterval to 10 ms and its batch to 1000; everything else
// is default.
func rbForwarderSystem(b *testing.B, db testenv.DB, redisURL string, tuned bool) rbSystem {
	logger := watermill.NewSlogLogger(testenv.Logger(b))
	open := func(dsn string) *sql.DB {
		d, err := sql.Open("pgx", dsn)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		return d
	}
	schema := wmsql.DefaultPostgreSQLSchema{}
	subCfg := wmsql.SubscriberConfig{OffsetsAdapter: wmsql.DefaultPostgreSQLOffsetsAdapter{}}
	if tuned {
		schema.SubscribeBatchSize = 1000
		subCfg.PollInterval = 10 * time.Millisecond
	}
	subCfg.SchemaAdapter = schema
	// The tables are created by the migration role (the runtime role may
	// not CREATE); its default privileges give the runtime role DML on them.
	migrator := open(db.MigrateURL)
	initSub, err := wmsql.NewSubscriber(wmsql.BeginnerFromStdSQL(migrator), subCfg, logger)
	if err != nil {
		b.Fatal(err)
	}
	if err := initSub.SubscribeInitialize(rbForwarderTopic); err != nil {
		b.Fatalf("watermill-sql schema: %v", err)
	}
	_ = initSub.Close()
	_ = migrator.Close()

	writers := open(db.AppURL)
	forwarderDB := open(db.AppURL) // the Forwarder's own pool, as a separate process would have
	redisOpts, err := redis.ParseURL(redisURL)
	if err != nil {
		b.Fatal(err)
	}
	return rbSystem{
		backlog: func(ctx context.Context, evs []events.Envelope) error {
			sqlPub, err := wmsql.NewPublisher(wmsql.BeginnerFromStdSQL(writers), wmsql.PublisherConfig{SchemaAdapter: schema}, logger)
			if err != nil {
				return err
			}
			pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{})
			// One multi-row INSERT (one transaction) per batch.
			for batch := range slices.Chunk(evs, rbWMBatch) {
				msgs := make([]*message.Message, len(batch))
				for i, ev := range batch {
					if msgs[i], err = rbMessage(ev); err != nil {
						return err
					}
					msgs[i].SetContext(ctx)
				}
				if err := pub.Publish(rbStream, msgs...); err != nil {
					return err
				}
			}
			return sqlPub.Close()
		},
		start: func(b *testing.B) func() error {
			// Its own client: redisstream.Publisher.Close closes it.
			pubClient := redis.NewClient(redisOpts)
			pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: pubClient}, logger)
			if err != nil {
				b.Fatal(err)
			}
			sub, err := wmsql.NewSubscriber(wmsql.BeginnerFromStdSQL(forwarderDB), subCfg, logger)
			if err != nil {
				b.Fatal(err)
			}
			f, err := forwarder.NewForwarder(sub, pub, logger, forwarder.Config{})
			if err != nil {
				b.Fatal(err)
			}
			runDone := make(chan error, 1)
			go func() { runDone <- f.Run(context.Background()) }()
			select {
			case <-f.Running():
			case err := <-runDone:
				b.Fatalf("forwarder stopped at start: %v", err)
			case <-time.After(30 * time.Second):
				b.Fatal("forwarder not running after 30 s")
			}
			return func() error {
				errs := []error{f.Close()}
				select {
				case err := <-runDone:
					errs = append(errs, err)
				case <-time.After(rbStopTimeout):
					errs = append(errs, fmt.Errorf("forwarder did not stop within %v", rbStopTimeout))
				}
				return errors.Join(append(errs, pub.Close())...)
			}
		},
		write: func(ctx context.Context, ev events.Envelope) (time.Time, error) {
			tx, err := writers.BeginTx(ctx, nil)
			if err != nil {
				return time.Now(), err
			}
			sqlPub, err := wmsql.NewPublisher(wmsql.TxFromStdSQL(tx), wmsql.PublisherConfig{SchemaAdapter: schema}, logger)
			if err == nil {
				var msg *message.Message
				if msg, err = rbMessage(ev); err == nil {
					msg.SetContext(ctx)
					err = forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{}).Publish(rbStream, msg)
				}
			}
			if err != nil {
				_ = tx.Rollback()
				return time.Now(), err
			}
			err = tx.Commit()
			return time.Now(), err
		},
		discard: func(ctx context.Context) (int64, error) {
			res, err := writers.ExecContext(ctx, `delete from `+schema.MessagesTable(rbForwarderTopic))
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		},
	}
}

// rbNewEvent is a document.uploaded event as the API writes it.
func rbNewEvent() (events.Envelope, error) {
	id, owner := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	sum := sha256.Sum256(id[:])
	doc := events.Document{
		ID:          id,
		UserID:      &owner,
		Title:       "Invoice 2025-0142",
		Filename:    "invoice-2025-0142.pdf",
		ContentType: "application/pdf",
		SizeBytes:   1_843_201,
		SHA256:      hex.EncodeToString(sum[:]),
		Status:      "pending",
		StorageKey:  blob.StagingKey(id),
	}
	return events.New(events.DocumentUploaded, "document", id, events.Actor{Type: "user", ID: &owner}, uuid.Must(uuid.NewV7()), nil, doc)
}

// rbMessage is the Watermill message of ev as relay.Message makes it: the
// event id as UUID, the envelope as payload, the same metadata.
func rbMessage(ev events.Envelope) (*message.Message, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(ev.ID.String(), payload)
	msg.Metadata.Set(events.MetaType, ev.Type)
	msg.Metadata.Set(events.MetaVersion, strconv.Itoa(ev.Version))
	msg.Metadata.Set(events.MetaAggregateID, ev.AggregateID.String())
	msg.Metadata.Set(events.MetaCorrelationID, ev.CorrelationID.String())
	return msg, nil
}

// rbSteadyWrites writes one event per transaction at rbRate for d and
// returns the commit time of each event by message UUID, how long each
// transaction took, and how many writes failed or were skipped (too many
// in flight).
func rbSteadyWrites(ctx context.Context, write func(context.Context, events.Envelope) (time.Time, error), d time.Duration) (map[string]time.Time, []time.Duration, int) {
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var took []time.Duration
	failed := 0
	var wg sync.WaitGroup
	inFlight := make(chan struct{}, 64)
	tick := time.NewTicker(time.Second / rbRate)
	defer tick.Stop()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
			continue
		case <-tick.C:
		}
		ev, err := rbNewEvent()
		if err != nil {
			panic(err)
		}
		select {
		case inFlight <- struct{}{}:
		default:
			mu.Lock()
			failed++
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inFlight }()
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			begun := time.Now()
			committed, err := write(wctx, ev)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			sent[ev.ID.String()] = committed
			took = append(took, committed.Sub(begun))
		}()
	}
	wg.Wait()
	return sent, took, failed
}

// rbReader records when each entry of rbStream arrives (XREAD BLOCK).
type rbReader struct {
	mu      sync.Mutex
	arrived map[string]time.Time
	done    chan struct{}
	err     error
}

// rbStartReader reads the entries added to rbStream from now on until ctx
// is cancelled.
func rbStartReader(ctx context.Context, rdb *redis.Client) (*rbReader, error) {
	last := "0-0"
	tail, err := rdb.XRevRangeN(ctx, rbStream, "+", "-", 1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("stream tail: %w", err)
	}
	if len(tail) == 1 {
		last = tail[0].ID
	}
	r := &rbReader{arrived: map[string]time.Time{}, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ctx.Err() == nil {
			streams, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{rbStream, last}, Count: 1000, Block: 100 * time.Millisecond}).Result()
			now := time.Now()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				if ctx.Err() == nil {
					r.err = err
				}
				return
			}
			r.mu.Lock()
			for _, s := range streams {
				for _, m := range s.Messages {
					last = m.ID
					if id, ok := m.Values[redisstream.UUIDHeaderKey].(string); ok {
						if _, seen := r.arrived[id]; !seen {
							r.arrived[id] = now
						}
					}
				}
			}
			r.mu.Unlock()
		}
	}()
	return r, nil
}

// hasAll reports whether every id of sent has arrived.
func (r *rbReader) hasAll(sent map[string]time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range sent {
		if _, ok := r.arrived[id]; !ok {
			return false
		}
	}
	return true
}

// wait waits for the reader to stop (its context cancelled) and returns
// what it saw.
func (r *rbReader) wait() (map[string]time.Time, error) {
	<-r.done
	return r.arrived, r.err
}

// rbUniqueIDs counts the distinct message UUIDs in rbStream.
func rbUniqueIDs(ctx context.Context, rdb *redis.Client) (int, error) {
	seen := make(map[string]struct{}, rbBacklog)
	start := "-"
	for {
		entries, err := rdb.XRangeN(ctx, rbStream, start, "+", 10_000).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		for _, e := range entries {
			if id, ok := e.Values[redisstream.UUIDHeaderKey].(string); ok {
				seen[id] = struct{}{}
			}
		}
		if len(entries) < 10_000 {
			return len(seen), nil
		}
		start = "(" + entries[len(entries)-1].ID
	}
}

// rbCPUTime is this process's CPU time so far, user and system.
func rbCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rbPct(sorted []time.Duration, p float64) time.Duration {
	return sorted[int(float64(len(sorted)-1)*p)].Round(10 * time.Microsecond)
}

// rbLoadAvg is the machine's 1, 5 and 15 minute load averages, to judge
// the noise of a run.
func rbLoadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
