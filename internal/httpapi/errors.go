package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/docuvault/docuvault/internal/problem"
	"github.com/docuvault/docuvault/internal/store"
)

// apiError is a client error decided by a handler: the status, the stable
// problem type and a human detail. Extra members go into the problem.
type apiError struct {
	status int
	typ    string
	title  string
	detail string
	extra  map[string]any
}

func (e *apiError) Error() string { return e.typ + ": " + e.detail }

func badRequest(typ, format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, typ: typ, title: "Bad request", detail: fmt.Sprintf(format, args...)}
}

// unavailable marks err as a dependency outage: 503 naming the dependency.
type unavailable struct {
	dependency string
	err        error
}

func (u *unavailable) Error() string { return u.dependency + ": " + u.err.Error() }
func (u *unavailable) Unwrap() error { return u.err }

// dbErr classifies an error from PostgreSQL: a server-side error stays as
// is (it is a bug or a constraint the table maps), anything else (refused
// connection, timeout, closed pool) is an outage.
func dbErr(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	var apiErr *apiError
	switch {
	case errors.As(err, &pgErr), errors.As(err, &apiErr),
		errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict),
		errors.Is(err, store.ErrUnknownTopic), errors.Is(err, store.ErrUnknownFolder),
		errors.Is(err, store.ErrCycle), errors.Is(err, store.ErrNotEmpty),
		errors.Is(err, context.Canceled):
		return err
	}
	return &unavailable{dependency: "postgres", err: err}
}

// errorTable maps the store's errors to problems, once for every handler.
var errorTable = []struct {
	err    error
	status int
	typ    string
	title  string
	detail string
}{
	{store.ErrNotFound, http.StatusNotFound, "not-found", "Not found", "no such resource"},
	{store.ErrUnknownTopic, http.StatusUnprocessableEntity, "unknown-topic", "Unknown topic", "topic_id names no topic of yours"},
	{store.ErrUnknownFolder, http.StatusUnprocessableEntity, "unknown-folder", "Unknown folder", "folder_id or parent_id names no folder of yours"},
	{store.ErrCycle, http.StatusConflict, "folder-cycle", "Folder cycle", "a folder cannot be moved under itself or one of its subfolders"},
	{store.ErrNotEmpty, http.StatusConflict, "folder-not-empty", "Folder not empty", "delete or move the subfolders first"},
	{store.ErrConflict, http.StatusConflict, "conflict", "Conflict", "a resource with that name already exists"},
}

// fail writes err as a problem. Unknown errors are logged and answered 500
// without their text. The problem gets ResponseTimeout to be written,
// however long the request took (an upload refused after its body).
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.Config.ResponseTimeout))
	var apiErr *apiError
	if errors.As(err, &apiErr) {
		d := problem.New(apiErr.status, apiErr.typ, apiErr.title, apiErr.detail)
		d.Extra = apiErr.extra
		problem.Write(w, r, d)
		return
	}
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		problem.Write(w, r, problem.New(http.StatusRequestEntityTooLarge, "too-large", "Request too large",
			fmt.Sprintf("the request body exceeds %d bytes", maxErr.Limit)))
		return
	}
	var down *unavailable
	if errors.As(err, &down) {
		s.log(r).Error("dependency unavailable", "dependency", down.dependency, "err", down.err)
		w.Header().Set("Retry-After", "5")
		problem.Write(w, r, problem.New(http.StatusServiceUnavailable, "dependency-unavailable", "Service unavailable",
			down.dependency+" is unavailable; nothing was stored, retry later"))
		return
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			problem.Write(w, r, problem.New(e.status, e.typ, e.title, e.detail))
			return
		}
	}
	if errors.Is(err, context.Canceled) {
		// The client went away; nobody reads the answer.
		return
	}
	s.log(r).Error("request failed", "err", err, "method", r.Method, "path", r.URL.Path)
	problem.Write(w, r, problem.New(http.StatusInternalServerError, "internal", "Internal error",
		"the server failed; the request id identifies it in the logs"))
}

// maxJSONBody bounds JSON request bodies.
const maxJSONBody = 64 << 10

// decodeJSON reads one JSON object into v, refusing unknown fields, wrong
// types, trailing data and bodies over maxJSONBody.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
		return &apiError{status: http.StatusUnsupportedMediaType, typ: "unsupported-media-type", title: "Unsupported media type",
			detail: "send application/json"}
	}
	if r.ContentLength > maxJSONBody {
		// Refused before a byte of it is read.
		return &http.MaxBytesError{Limit: maxJSONBody}
	}
	// The deadlines middleware bounds the time the body takes to arrive.
	body := &readErrors{r: http.MaxBytesReader(w, r.Body, maxJSONBody)}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case body.err != nil:
			// Too large, too slow, truncated or badly framed: not a JSON
			// matter, and the reader's text (addresses) is no client's.
			return bodyReadError(body.err)
		case errors.As(err, &typeErr):
			return badRequest("invalid-json", "field %q must be a %s", typeErr.Field, typeErr.Type)
		case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("invalid-json", "the body is not valid JSON")
		case errors.Is(err, io.EOF):
			return badRequest("invalid-json", "the body is empty; send a JSON object")
		default:
			// Unknown fields: "json: unknown field \"x\"".
			return badRequest("invalid-json", "%s", trimJSONPrefix(err.Error()))
		}
	}
	// Nothing but white space may follow, up to the end of the body (More
	// would take a stray '}' or ']' for the end).
	if _, err := dec.Token(); err != io.EOF {
		if body.err != nil {
			return bodyReadError(body.err)
		}
		return badRequest("invalid-json", "the body holds more than one JSON value")
	}
	// The body is read to its end: lift the read deadline, which would
	// otherwise cancel the request's context should the handler take
	// longer than it.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	return nil
}

// readErrors remembers the first read error other than io.EOF.
type readErrors struct {
	r   io.Reader
	err error
}

func (e *readErrors) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

func isJSON(ct string) bool {
	return ct == "application/json" || len(ct) > 16 && ct[:16] == "application/json" && (ct[16] == ';' || ct[16] == ' ')
}

func trimJSONPrefix(s string) string {
	const p = "json: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
