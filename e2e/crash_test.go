package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/docuvault/docuvault/internal/testenv"
)

// Uploads acknowledged while the relay and the consumer are SIGKILLed and
// restarted all end ready, each finalised exactly once in effect.
func TestKilledRelayAndConsumerLoseNothing(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	const uploads = 30

	var mu sync.Mutex
	var ids []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range uploads {
			content := make([]byte, 20<<10+i)
			_, _ = rand.Read(content)
			resp, body := upload(t, st.client, st.base, fmt.Sprintf("doc-%d.bin", i), content, nil, nil)
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("upload %d: %d %s", i, resp.StatusCode, body)
				continue
			}
			var doc document
			_ = json.Unmarshal(body, &doc)
			mu.Lock()
			ids = append(ids, doc.ID)
			mu.Unlock()
			time.Sleep(40 * time.Millisecond) // spread the uploads over the kills
		}
	}()

	// Kill and restart both workers a few times while uploads go on.
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		st.relay.kill()
		st.consumer.kill()
		st.relay = start(t, "relay", st.env)
		st.consumer = start(t, "consumer", st.env)
		st.relay.addr("metrics")
		st.consumer.addr("metrics")
	}
	<-done
	if len(ids) != uploads {
		t.Fatalf("%d uploads acknowledged; want %d", len(ids), uploads)
	}

	// A killed consumer's pending entries are claimed after the idle
	// timeout, so allow for it.
	for _, id := range ids {
		st.waitStatusWithin(t, id, "ready", 150*time.Second)
	}
	var finalized, docs int
	ctx := context.Background()
	if err := st.db.QueryRow(ctx, `select count(*), count(distinct aggregate_id) from audit_log where action = 'document.finalized'`).Scan(&finalized, &docs); err != nil {
		t.Fatal(err)
	}
	if finalized != uploads || docs != uploads {
		t.Errorf("%d finalized events for %d documents; want exactly one each for %d", finalized, docs, uploads)
	}
	st.api.stop()
	st.relay.stop()
	st.consumer.stop()
}

// Redis restarted empty loses the consumer groups: the consumer must not
// spin on NOGROUP forever (as the stock subscriber does) but subscribe
// again, re-creating its groups, and finalise new uploads.
func TestConsumerResubscribesWhenRedisLosesItsGroup(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	rdb := testenv.RedisClient(t, st.env["REDIS_URL"])
	resp, body := upload(t, st.client, st.base, "a.pdf", []byte("%PDF-1.4 before"), nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	var doc document
	_ = json.Unmarshal(body, &doc)
	st.waitStatus(t, doc.ID, "ready")

	if err := rdb.FlushDB(context.Background()).Err(); err != nil { // what a restart without persistence does
		t.Fatal(err)
	}
	st.consumer.waitLog("Redis lost the consumer groups", 30*time.Second)
	select {
	case <-st.consumer.done:
		t.Fatalf("consumer exited (%v) after losing its groups; want it to subscribe again", st.consumer.err)
	default:
	}
	resp, body = upload(t, st.client, st.base, "b.pdf", []byte("%PDF-1.4 after"), nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	_ = json.Unmarshal(body, &doc)
	st.waitStatus(t, doc.ID, "ready")
	st.api.stop()
	st.relay.stop()
	st.consumer.stop()
}
