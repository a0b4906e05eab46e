package httpapi

import (
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// listAudit serves GET /api/v1/audit: the recorded events, oldest audit
// row first, filtered by since/until (RFC 3339, occurred_at in
// [since, until)), document_id, type and correlation_id, a page at a time.
// The cursor is opaque: the base64url form of the last row's id; a client
// passes the same filters with it.
//
// A user sees the rows about their own resources (documents, topics,
// folders, cloud connections, their account), whoever acted: theirs, an
// administrator's or the pipeline's (store.AuditFilter.Scope). An
// administrator sees every row. Filtering by another owner's
// document_id finds nothing, like an id that does not exist.
func (s *server) listAudit(w http.ResponseWriter, r *http.Request) {
	f, limit, after, err := auditParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sc := scope(r.Context())
	f.Scope = &sc
	rows, err := store.AuditEvents(r.Context(), s.DB, f, after, limit+1)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	page := pageJSON[events.Envelope]{Items: make([]events.Envelope, 0, min(len(rows), limit))}
	if len(rows) > limit {
		rows = rows[:limit]
		c := auditCursor(rows[len(rows)-1].Seq)
		page.NextCursor = &c
	}
	for _, a := range rows {
		page.Items = append(page.Items, a.Event)
	}
	writeJSON(w, http.StatusOK, page)
}

func auditParams(r *http.Request) (f store.AuditFilter, limit int, after int64, err error) {
	q := r.URL.Query()
	limit = defaultPageSize
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxPageSize {
			return f, 0, 0, badRequest("invalid-parameter", "limit must be a whole number from 1 to %d", maxPageSize)
		}
		limit = n
	}
	if raw := q.Get("cursor"); raw != "" {
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(b) != 8 || int64(binary.BigEndian.Uint64(b)) < 0 || base64.RawURLEncoding.EncodeToString(b) != raw {
			return f, 0, 0, badRequest("invalid-cursor", "cursor is not one this API returned")
		}
		after = int64(binary.BigEndian.Uint64(b))
	}
	for name, t := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if raw := q.Get(name); raw != "" {
			if *t, err = time.Parse(time.RFC3339Nano, raw); err != nil {
				return f, 0, 0, badRequest("invalid-parameter", "%s must be an RFC 3339 time such as 2026-05-01T00:00:00Z", name)
			}
		}
	}
	if f.AggregateID, err = optionalUUID(r, "document_id"); err != nil {
		return f, 0, 0, err
	}
	if f.CorrelationID, err = optionalUUID(r, "correlation_id"); err != nil {
		return f, 0, 0, err
	}
	// Any type may be asked for (an unknown one matches nothing), but only
	// as text PostgreSQL can compare: not every byte string is.
	f.Type = q.Get("type")
	if len(f.Type) > 200 || !utf8.ValidString(f.Type) || strings.IndexFunc(f.Type, unicode.IsControl) >= 0 {
		return f, 0, 0, badRequest("invalid-parameter", "type must be an event type such as document.uploaded")
	}
	return f, limit, after, nil
}

func auditCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, uint64(seq)))
}
