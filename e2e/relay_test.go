package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/testenv"
)

// relayEnv is a fresh database and Redis database for relay processes.
func relayEnv(t *testing.T) (testenv.Env, *pgxpool.Pool, *redis.Client) {
	t.Helper()
	db := testenv.NewDB(t)
	env := testenv.ServiceEnv(t, db, testenv.S3Settings())
	return env, testenv.Pool(t, db.AppURL), testenv.RedisClient(t, env["REDIS_URL"])
}

// waitLog waits (bounded) for a log line of p containing msg.
func (p *proc) waitLog(msg string, timeout time.Duration) {
	p.t.Helper()
	eventually(p.t, timeout, p.name+" to log "+msg, func() bool { return strings.Contains(p.Log(), `"msg":"`+msg) })
}

func outboxRows(t *testing.T, db *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `select count(*) from outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// onStream counts each event id on the documents stream.
func onStream(t *testing.T, rdb *redis.Client) map[uuid.UUID]int {
	t.Helper()
	entries, err := rdb.XRange(context.Background(), events.StreamDocuments, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]int{}
	for _, e := range entries {
		msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
		if err != nil {
			t.Fatal(err)
		}
		out[uuid.MustParse(msg.UUID)]++
	}
	return out
}

// metric returns the text of the metric lines of name at addr's /metrics.
func metric(t testing.TB, addr, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var lines []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, name) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// The leader relay is SIGKILLed in the middle of draining a backlog, three
// times: each time the standby takes over within seconds, nothing is lost,
// and the duplicates are at most the one batch each killed leader had in
// flight.
func TestRelayLeaderKilledStandbyTakesOver(t *testing.T) {
	t.Parallel()
	env, db, rdb := relayEnv(t)
	const backlog, batch, kills = 60000, 1000, 3
	ids := testenv.Backlog(t, db, backlog)

	leader := start(t, "relay", env)
	leader.waitLog("leading", 30*time.Second)
	for round := range kills {
		standby := start(t, "relay", env)
		standby.waitLog("standby", 30*time.Second)
		addr := standby.addr("metrics")
		if m := metric(t, addr, "docuvault_relay_leader "); m != "docuvault_relay_leader 0" {
			t.Errorf("standby reports %q; want docuvault_relay_leader 0", m)
		}
		// Kill the leader while it is draining.
		eventually(t, 30*time.Second, "the leader to publish", func() bool {
			n, _ := rdb.XLen(context.Background(), events.StreamDocuments).Result()
			return n >= int64(round+1)*10000
		})
		leader.kill()
		killed := time.Now()
		if outboxRows(t, db) == 0 {
			t.Fatal("the leader drained everything before it was killed; nothing to take over")
		}
		standby.waitLog("leading", 30*time.Second)
		takeover := time.Since(killed)
		t.Logf("kill %d: the standby took over %v after the leader's SIGKILL", round+1, takeover.Round(time.Millisecond))
		if takeover > 10*time.Second {
			t.Errorf("standby took over after %v; want within a few seconds", takeover)
		}
		if m := metric(t, addr, "docuvault_relay_leader "); m != "docuvault_relay_leader 1" {
			t.Errorf("new leader reports %q; want docuvault_relay_leader 1", m)
		}
		leader = standby
	}
	eventually(t, 60*time.Second, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })

	got := onStream(t, rdb)
	dups := 0
	for _, id := range ids {
		if got[id] == 0 {
			t.Errorf("event %s lost", id)
		}
		dups += got[id] - 1
	}
	t.Logf("%d duplicates after %d kills (batch size %d)", dups, kills, batch)
	if dups > kills*batch {
		t.Errorf("%d duplicates; want at most one batch per kill (%d)", dups, kills*batch)
	}
	leader.stop()
}

// SIGTERM in the middle of draining: the relay finishes and records its
// batch, exits 0, and a restarted relay sends nothing twice. Its metrics
// describe what it did.
func TestRelayStoppedSendsNothingTwice(t *testing.T) {
	t.Parallel()
	env, db, rdb := relayEnv(t)
	const backlog = 30000
	ids := testenv.Backlog(t, db, backlog)

	r := start(t, "relay", env)
	addr := r.addr("metrics")
	eventually(t, 30*time.Second, "the relay to publish", func() bool {
		n, _ := rdb.XLen(context.Background(), events.StreamDocuments).Result()
		return n >= 2000
	})
	for _, want := range []string{
		"docuvault_relay_leader 1",
		"docuvault_relay_events_published_total{stream=\"docuvault.documents\"}",
		"docuvault_relay_batch_size_count",
		"docuvault_relay_publish_seconds_count",
		"docuvault_relay_event_age_seconds_count",
		"docuvault_outbox_backlog",
		"docuvault_outbox_oldest_age_seconds",
	} {
		name, _, _ := strings.Cut(want, " ")
		name, _, _ = strings.Cut(name, "{")
		if m := metric(t, addr, name); !strings.Contains(m, want) {
			t.Errorf("metrics: want %q, got %q", want, m)
		}
	}
	r.stop() // exit status 0 is checked
	left := outboxRows(t, db)
	n, _ := rdb.XLen(context.Background(), events.StreamDocuments).Result()
	if int(n)+left != backlog {
		t.Fatalf("after SIGTERM: %d on the stream + %d in the outbox; want exactly %d (nothing twice, nothing lost)", n, left, backlog)
	}
	if left == 0 {
		t.Log("the relay drained everything before SIGTERM; the restart has nothing to do")
	}

	start(t, "relay", env).waitLog("leading", 30*time.Second)
	eventually(t, 60*time.Second, "the outbox to drain", func() bool { return outboxRows(t, db) == 0 })
	got := onStream(t, rdb)
	for _, id := range ids {
		if got[id] != 1 {
			t.Fatalf("event %s on the stream %d times; want once", id, got[id])
		}
	}
}
