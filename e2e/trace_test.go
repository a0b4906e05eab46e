package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/testenv"
	"github.com/docuvault/docuvault/internal/tracing"
)

// TestTraceContextFollowsAnUpload uploads one document with an
// X-Request-ID and a traceparent, to an owner with an active WebDAV
// connection, through the real binaries: upload -> document.finalized ->
// cloud_sync.completed. Every event of the document, on
// docuvault.documents and on docuvault.audit, has the upload's correlation
// id, request id and trace id (each written by a span of its own), the
// causation chain links them in order, the audit rows hold the same
// traceparents, and the consumer's log line about the document names the
// request and trace.
func TestTraceContextFollowsAnUpload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dav := testenv.StartWebDAV(t, "docuvault", "dav-password")
	st := startStack(t)
	f := st.flow(t)
	f.connectWebDAV(dav, "traced dav")

	traceID, parentID := randomHex(t, 16), randomHex(t, 8)
	const requestID = "e2e-upload-7f3a"
	content := make([]byte, 32<<10)
	_, _ = rand.Read(content)
	resp, body := upload(t, st.client, st.base, "traced.pdf", content, nil, http.Header{
		"X-Request-Id": {requestID},
		"Traceparent":  {"00-" + traceID + "-" + parentID + "-01"},
	})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	requestSpan := resp.Header.Get("traceparent")
	if resp.Header.Get("X-Request-ID") != requestID || tracing.TraceIDOf(requestSpan) != traceID || strings.Contains(requestSpan, parentID) {
		t.Fatalf("response X-Request-ID %q, traceparent %q; want %s and a span of its own in trace %s",
			resp.Header.Get("X-Request-ID"), requestSpan, requestID, traceID)
	}
	var doc struct{ ID string }
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	f.waitDocument(doc.ID, "ready and copied", func(d flowDocument) bool {
		return d.Status == "ready" && len(d.CloudSync) == 1 && d.CloudSync[0].Status == "synced"
	})

	// The document's events as the relay published them, on both streams.
	want := []string{events.DocumentUploaded, events.DocumentFinalized, events.CloudSyncCompleted}
	rdb := testenv.RedisClient(t, st.env["REDIS_URL"])
	type published struct {
		env events.Envelope
		md  message.Metadata
	}
	read := func(stream string) map[string]published {
		byType := map[string]published{}
		entries, err := rdb.XRange(ctx, stream, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(e.Values)
			if err != nil {
				t.Fatalf("%s %s: %v", stream, e.ID, err)
			}
			var env events.Envelope
			if err := json.Unmarshal(msg.Payload, &env); err != nil {
				t.Fatalf("%s %s: %v", stream, e.ID, err)
			}
			if env.AggregateID.String() != doc.ID {
				continue
			}
			if prev, dup := byType[env.Type]; dup && prev.env.ID != env.ID {
				t.Errorf("%s: two %s events for one upload (%s, %s)", stream, env.Type, prev.env.ID, env.ID)
			}
			byType[env.Type] = published{env: env, md: msg.Metadata}
		}
		return byType
	}
	var own, audit map[string]published
	eventually(t, 30*time.Second, "the document's events on both streams", func() bool {
		own, audit = read(events.StreamDocuments), read(events.StreamAudit)
		return len(own) == len(want) && len(audit) == len(want)
	})

	uploaded := own[events.DocumentUploaded].env
	corr := uploaded.CorrelationID
	spans := map[string]string{} // span id -> the event it wrote
	var cause *uuid.UUID
	for _, typ := range want {
		p, ok := own[typ]
		if !ok {
			t.Fatalf("no %s on %s: %v", typ, events.StreamDocuments, own)
		}
		ev, md := p.env, p.md
		where := events.StreamDocuments + " " + typ
		if ev.CorrelationID != corr || md.Get(events.MetaCorrelationID) != corr.String() {
			t.Errorf("%s: correlation id %s (metadata %q); want the upload's %s", where, ev.CorrelationID, md.Get(events.MetaCorrelationID), corr)
		}
		if (cause == nil) != (ev.CausationID == nil) || (cause != nil && *ev.CausationID != *cause) {
			t.Errorf("%s: causation id %v; want %v", where, ev.CausationID, cause)
		}
		id := ev.ID
		cause = &id
		tp := md.Get(events.MetaTraceparent)
		if md.Get(events.MetaRequestID) != requestID || tracing.TraceIDOf(tp) != traceID {
			t.Errorf("%s: metadata request_id %q, traceparent %q; want %s in trace %s", where, md.Get(events.MetaRequestID), tp, requestID, traceID)
		}
		if typ == events.DocumentUploaded && tp != requestSpan {
			t.Errorf("%s: traceparent %q; want the request's span %q", where, tp, requestSpan)
		}
		if len(tp) == 55 {
			span := tp[36:52]
			if other, dup := spans[span]; dup || span == parentID {
				t.Errorf("%s: span %s also wrote %q (or is the caller's)", where, span, other)
			}
			spans[span] = typ
		}
		if md.Get(events.MetaClientIP) != "" || md.Get(events.MetaUserAgent) != "" {
			t.Errorf("%s: client metadata on the event's own stream: %v", where, md)
		}

		// The audit stream has the same event and trace context, plus the
		// client of the API's event.
		a, ok := audit[typ]
		if !ok {
			t.Fatalf("no %s on %s", typ, events.StreamAudit)
		}
		where = events.StreamAudit + " " + typ
		if a.env.ID != ev.ID || a.md.Get(events.MetaCorrelationID) != corr.String() ||
			a.md.Get(events.MetaRequestID) != requestID || a.md.Get(events.MetaTraceparent) != tp {
			t.Errorf("%s: event %s metadata %v; want event %s, correlation %s, request %s, traceparent %s",
				where, a.env.ID, a.md, ev.ID, corr, requestID, tp)
		}
		if client := a.md.Get(events.MetaClientIP) != ""; client != (typ == events.DocumentUploaded) {
			t.Errorf("%s: metadata %v; want client_ip only on the API's event", where, a.md)
		}

		// The audit row holds them too.
		var rowRequestID, rowTraceparent *string
		if err := st.db.QueryRow(ctx, `select request_id, traceparent from audit_log where event_id = $1`, ev.ID).Scan(&rowRequestID, &rowTraceparent); err != nil {
			t.Fatalf("audit row of %s: %v", typ, err)
		}
		if rowRequestID == nil || *rowRequestID != requestID || rowTraceparent == nil || *rowTraceparent != tp {
			t.Errorf("audit row of %s: request_id %v, traceparent %v; want %s, %s", typ, ptrString(rowRequestID), ptrString(rowTraceparent), requestID, tp)
		}
	}

	// No event of the correlation is without the request id.
	rows, err := st.db.Query(ctx, `select action, coalesce(request_id, ''), coalesce(traceparent, '') from audit_log where correlation_id = $1`, corr)
	if err != nil {
		t.Fatal(err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Action, RequestID, Traceparent string }])
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(want) {
		t.Errorf("%d audit rows of correlation %s; want %d", len(all), corr, len(want))
	}
	for _, r := range all {
		if r.RequestID != requestID || tracing.TraceIDOf(r.Traceparent) != traceID {
			t.Errorf("audit row %s: request_id %q, traceparent %q", r.Action, r.RequestID, r.Traceparent)
		}
	}

	// The consumer's log line about the document names the request and
	// the trace.
	eventually(t, 10*time.Second, "the consumer's 'document ready' line with the request and trace", func() bool {
		for line := range strings.Lines(st.consumer.Log()) {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "document ready" && rec["document_id"] == doc.ID {
				return rec["request_id"] == requestID && rec["trace_id"] == traceID &&
					rec["correlation_id"] == corr.String() && rec["event_id"] == uploaded.ID.String()
			}
		}
		return false
	})
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ptrString(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}
