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
			resp, body := upload(t, st.base, fmt.Sprintf("doc-%d.bin", i), content, nil, nil)
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
		st.waitStatusWithin(t, id, "ready", 90*time.Second)
	}
	var finalized, docs int
	ctx := context.Background()
	if err := st.db.QueryRow(ctx, `select count(*), count(distinct aggregate_id) from outbox where event_type = 'document.finalized'`).Scan(&finalized, &docs); err != nil {
		t.Fatal(err)
	}
	if finalized != uploads || docs != uploads {
		t.Errorf("%d finalized events for %d documents; want exactly one each for %d", finalized, docs, uploads)
	}
	st.api.stop()
	st.relay.stop()
	st.consumer.stop()
}
