package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/httpapi"
	"github.com/docuvault/docuvault/internal/store"
)

type auditPage struct {
	Items      []events.Envelope `json:"items"`
	NextCursor *string           `json:"next_cursor"`
}

func getAudit(t *testing.T, base string, q url.Values) (int, string, auditPage) {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/audit?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page auditPage
	_ = json.NewDecoder(resp.Body).Decode(&page)
	return resp.StatusCode, resp.Header.Get("Content-Type"), page
}

// allAudit follows next_cursor from the first page to the last and returns
// the ids in the order served.
func allAudit(t *testing.T, base string, q url.Values) []uuid.UUID {
	t.Helper()
	var ids []uuid.UUID
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
		status, _, page := getAudit(t, base, q)
		if status != 200 {
			t.Fatalf("GET audit %v: %d", q, status)
		}
		for _, ev := range page.Items {
			ids = append(ids, ev.ID)
		}
		if page.NextCursor == nil {
			return ids
		}
		q.Set("cursor", *page.NextCursor)
	}
}

func TestAuditListsHistoryInPagesAndFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, httpapi.Config{})
	docA, docB, corr1, corr2 := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var evs []events.Envelope
	err := store.WithTx(context.Background(), e.admin, func(tx pgx.Tx) error {
		// The events are about two documents of the env's default user,
		// whom the requests act for.
		for _, doc := range []uuid.UUID{docA, docB} {
			if _, err := tx.Exec(context.Background(), `insert into documents (id, user_id, filename, content_type, size_bytes, sha256, status, storage_key)
				values ($1, $2, 'a.pdf', 'application/pdf', 1, $3, 'pending', $4)`, doc, e.user, make([]byte, 32), "staging/"+doc.String()); err != nil {
				return err
			}
		}
		for i := range 23 {
			typ, doc, corr := events.DocumentUploaded, docA, corr1
			if i%3 == 1 {
				typ = events.DocumentFinalized
			}
			if i%2 == 1 {
				doc, corr = docB, corr2
			}
			ev, err := events.New(typ, "document", doc, events.Anonymous, corr, nil, map[string]int{"n": i})
			if err != nil {
				return err
			}
			// Not in id order, so a since filter cannot pass by accident.
			ev.OccurredAt = start.Add(time.Duration((i*7)%23) * time.Minute)
			if err := store.Record(context.Background(), tx, ev, store.Origin{}); err != nil {
				return err
			}
			evs = append(evs, ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := func(keep func(events.Envelope) bool) []uuid.UUID {
		var ids []uuid.UUID
		for _, ev := range evs {
			if keep(ev) {
				ids = append(ids, ev.ID)
			}
		}
		return ids
	}
	since, until := start.Add(5*time.Minute), start.Add(15*time.Minute)
	for _, c := range []struct {
		name string
		q    url.Values
		want []uuid.UUID
	}{
		{"all", url.Values{"limit": {"4"}}, want(func(events.Envelope) bool { return true })},
		{"default page", url.Values{}, want(func(events.Envelope) bool { return true })},
		{"since", url.Values{"limit": {"3"}, "since": {since.Format(time.RFC3339)}},
			want(func(ev events.Envelope) bool { return !ev.OccurredAt.Before(since) })},
		{"since until", url.Values{"limit": {"2"}, "since": {since.Format(time.RFC3339)}, "until": {until.Format(time.RFC3339)}},
			want(func(ev events.Envelope) bool { return !ev.OccurredAt.Before(since) && ev.OccurredAt.Before(until) })},
		{"document", url.Values{"limit": {"5"}, "document_id": {docB.String()}},
			want(func(ev events.Envelope) bool { return ev.AggregateID == docB })},
		{"type", url.Values{"limit": {"1"}, "type": {events.DocumentFinalized}},
			want(func(ev events.Envelope) bool { return ev.Type == events.DocumentFinalized })},
		{"correlation and type", url.Values{"correlation_id": {corr1.String()}, "type": {events.DocumentUploaded}},
			want(func(ev events.Envelope) bool { return ev.CorrelationID == corr1 && ev.Type == events.DocumentUploaded })},
		{"none", url.Values{"type": {"nothing.happened"}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := allAudit(t, e.srv.URL, c.q)
			if len(got) != len(c.want) {
				t.Fatalf("%d events; want %d", len(got), len(c.want))
			}
			for i := range c.want {
				if got[i] != c.want[i] {
					t.Fatalf("event %d is %s; want %s", i, got[i], c.want[i])
				}
			}
		})
	}

	// An item is the envelope as it was recorded.
	_, _, page := getAudit(t, e.srv.URL, url.Values{"limit": {"1"}})
	got, rec := page.Items[0], evs[0]
	if got.ID != rec.ID || got.Type != rec.Type || got.Version != events.Version || !got.OccurredAt.Equal(rec.OccurredAt) ||
		got.AggregateType != "document" || got.AggregateID != rec.AggregateID || got.CorrelationID != rec.CorrelationID ||
		got.Actor.Type != "anonymous" || string(got.Data) != `{"n":0}` {
		t.Errorf("item %+v; want %+v", got, rec)
	}

	for _, q := range []url.Values{
		{"cursor": {"not-a-cursor"}},
		{"cursor": {"AAAAAAAAAAAAAAAAAAAAAA"}}, // a documents cursor: 16 bytes
		{"limit": {"0"}},
		{"limit": {"201"}},
		{"limit": {"ten"}},
		{"since": {"yesterday"}},
		{"until": {"2026-03-01"}},
		{"document_id": {"abc"}},
		{"correlation_id": {"abc"}},
	} {
		status, ct, _ := getAudit(t, e.srv.URL, q)
		if status != 400 || ct != "application/problem+json" {
			t.Errorf("%v: %d %s; want 400 problem", q, status, ct)
		}
	}
}
