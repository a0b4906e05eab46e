package testenv

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/docuvault/docuvault/internal/events"
)

// Backlog writes n document.uploaded events straight into the outbox (one
// COPY, no audit rows), as a stopped relay would find them, and returns
// their ids in outbox order.
func Backlog(t testing.TB, db *pgxpool.Pool, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	rows := make([][]any, n)
	for i := range n {
		ev := SampleEvent(t)
		payload, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = ev.ID
		rows[i] = []any{ev.ID, ev.Stream(), ev.Type, ev.AggregateType, ev.AggregateID, ev.CorrelationID, string(payload), ev.OccurredAt}
	}
	_, err := db.CopyFrom(context.Background(), pgx.Identifier{"outbox"},
		[]string{"event_id", "stream", "event_type", "aggregate_type", "aggregate_id", "correlation_id", "payload", "created_at"},
		pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// SampleEvent is a document.uploaded event of a realistic size (~600 bytes
// encoded) for a new document.
func SampleEvent(t testing.TB) events.Envelope {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	ev, err := events.New(events.DocumentUploaded, "document", id, events.Anonymous, uuid.Must(uuid.NewV7()), nil, events.Document{
		ID: id, Title: "Quarterly report", Filename: "quarterly-report-2026-q3.pdf", ContentType: "application/pdf",
		SizeBytes: 1 << 20, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Status: "pending", StorageKey: "staging/" + id.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ev.OccurredAt = time.Now().UTC().Truncate(time.Microsecond)
	return ev
}
