package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/tracing"
)

// documentJSON is a document as the API returns it.
type documentJSON struct {
	ID           uuid.UUID  `json:"id"`
	UserID       *uuid.UUID `json:"user_id"`
	TopicID      *uuid.UUID `json:"topic_id"`
	FolderID     *uuid.UUID `json:"folder_id"`
	Title        string     `json:"title"`
	Filename     string     `json:"filename"`
	ContentType  string     `json:"content_type"`
	SizeBytes    int64      `json:"size_bytes"`
	SHA256       string     `json:"sha256"`
	Status       string     `json:"status"`
	RejectReason *string    `json:"reject_reason"`
	DuplicateOf  *uuid.UUID `json:"duplicate_of"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	FinalizedAt  *time.Time `json:"finalized_at"`
	DeletedAt    *time.Time `json:"deleted_at"`
	Links        struct {
		Self    string `json:"self"`
		Content string `json:"content"`
	} `json:"links"`
}

func toDocumentJSON(d store.Document) documentJSON {
	out := documentJSON{
		ID: d.ID, UserID: d.UserID, TopicID: d.TopicID, FolderID: d.FolderID,
		Title: d.Title, Filename: d.Filename, ContentType: d.ContentType,
		SizeBytes: d.SizeBytes, SHA256: hex.EncodeToString(d.SHA256),
		Status: d.Status, RejectReason: d.RejectReason, DuplicateOf: d.DuplicateOf,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, FinalizedAt: d.FinalizedAt, DeletedAt: d.DeletedAt,
	}
	out.Links.Self = documentPath(d.ID)
	out.Links.Content = documentPath(d.ID) + "/content"
	return out
}

func documentPath(id uuid.UUID) string { return "/api/v1/documents/" + id.String() }

// maxFieldBytes bounds the text form fields of an upload.
const maxFieldBytes = 4096

// multipartSlack is what an upload body may carry beyond the file itself:
// boundaries, part headers and the text fields.
const multipartSlack = 64 << 10

// uploadForm is what the multipart body held besides the file.
type uploadForm struct {
	title    *string
	topicID  *uuid.UUID
	folderID *uuid.UUID
}

// bodyReader reads an upload's body under its stall policy, and
// remembers what an upload failure needs to be blamed on the client
// (truncated, oversized or too slow body) or on the object store.
//
// Each read may wait up to the stall timeout for the client, and no more
// than the client has earned: one stall timeout plus a second per
// minRate bytes it sent, minus the time already spent waiting for it. So
// a slow link may take as long as it needs, while a body that stalls, or
// trickles in a few bytes at a time (slow loris), is cut. Only time spent
// in Read counts: an upload waiting for the object store is not the
// client's fault.
type bodyReader struct {
	r        io.Reader
	rc       *http.ResponseController // nil: no deadlines (tests)
	stall    time.Duration
	minRate  int64
	deadline time.Time // the connection's read deadline as last set
	waited   time.Duration
	n        int64
	err      error // the first read error other than io.EOF
	eof      bool
	// tail is the body's last bytes, to tell a body that ends inside a
	// part from one that ends with the closing boundary.
	tail    [512]byte
	tailLen int
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	start := time.Now()
	if b.rc != nil {
		allow := min(b.stall, b.stall+time.Duration(b.n/b.minRate)*time.Second-b.waited)
		if allow <= 0 {
			b.err = errUploadTooSlow
			return 0, b.err
		}
		// Move the deadline only when it is off by more than a second (or a
		// quarter of a short stall timeout): setting it is not free.
		if d := start.Add(allow); d.Sub(b.deadline).Abs() > min(time.Second, b.stall/4) {
			b.deadline = d
			_ = b.rc.SetReadDeadline(d)
		}
	}
	n, err := b.r.Read(p)
	b.waited += time.Since(start)
	b.n += int64(n)
	b.keepTail(p[:n])
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = err
	}
	return n, err
}

func (b *bodyReader) keepTail(p []byte) {
	if len(p) >= len(b.tail) {
		b.tailLen = copy(b.tail[:], p[len(p)-len(b.tail):])
		return
	}
	keep := min(b.tailLen, len(b.tail)-len(p))
	copy(b.tail[:], b.tail[b.tailLen-keep:b.tailLen])
	b.tailLen = keep + copy(b.tail[keep:], p)
}

// endsInsidePart reports whether the body, read to its end, stopped after
// a part's boundary without a closing boundary: in a part's header, or
// right after a boundary line. Go's multipart reader takes both for a
// proper end (io.EOF), which would store an upload without the fields
// that were cut off. When the tail holds no boundary (a long epilogue),
// nothing can be told and the body is taken as whole.
func (b *bodyReader) endsInsidePart(boundary string) bool {
	tail := b.tail[:b.tailLen]
	i := bytes.LastIndex(tail, []byte("--"+boundary))
	if !b.eof || i < 0 {
		return false
	}
	return !bytes.HasPrefix(tail[i+2+len(boundary):], []byte("--"))
}

// maxPartHeaderBytes bounds a part's header (Go's multipart reader
// accepts 10 MiB, all held in memory).
const maxPartHeaderBytes = 16 << 10

// partHeaderGuard bounds what the multipart reader may read while it
// looks for the next part (the boundary line and the part's header); the
// part's content is not limited here.
type partHeaderGuard struct {
	r        io.Reader
	left     int // bytes NextPart may still read; < 0 outside NextPart
	exceeded bool
}

var errPartHeaderTooLarge = errors.New("multipart part header too large")

func (g *partHeaderGuard) Read(p []byte) (int, error) {
	if g.left < 0 {
		return g.r.Read(p)
	}
	if g.left == 0 {
		g.exceeded = true
		return 0, errPartHeaderTooLarge
	}
	if len(p) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= n
	return n, err
}

// nextPart is mr.NextPart with the part's header bounded. The budget adds
// the 4 KiB the multipart reader reads ahead.
func (g *partHeaderGuard) nextPart(mr *multipart.Reader) (*multipart.Part, error) {
	g.left = maxPartHeaderBytes + 4<<10
	defer func() { g.left = -1 }()
	return mr.NextPart()
}

// uploadDocument streams the file part to staging, then records the
// document, its audit row and its document.uploaded event in one
// transaction. Whatever fails after the bytes were staged removes them.
func (s *server) uploadDocument(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		s.fail(w, r, &apiError{status: http.StatusUnsupportedMediaType, typ: "unsupported-media-type",
			title: "Unsupported media type", detail: "send multipart/form-data with a boundary and a part named file"})
		return
	}
	idemKey, err := idempotencyKey(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	client := clientKey(s.clientAddr(r))
	if !s.uploads.acquire(client) {
		retryAfter(w, uploadRetryAfter)
		s.fail(w, r, tooManyUploads(s.Config.UploadConcurrencyPerClient))
		return
	}
	defer s.uploads.release(client)
	owner := Owner(ctx) // set: authenticate refuses a request without a token
	if idemKey != "" {
		if doc, err := store.DocumentByIdempotencyKey(ctx, s.DB, owner, idemKey); err == nil {
			s.replayUpload(w, doc)
			return
		} else if !errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, dbErr(err))
			return
		}
	}
	if r.ContentLength > s.Config.UploadMaxBytes+multipartSlack {
		s.fail(w, r, s.tooLarge())
		return
	}
	rc := http.NewResponseController(w)
	// The body may take hours: the answer's deadline is set once it is read
	// (or refused, by fail).
	_ = rc.SetWriteDeadline(time.Time{})
	body := &bodyReader{r: http.MaxBytesReader(w, r.Body, s.Config.UploadMaxBytes+multipartSlack), rc: rc,
		stall: s.Config.StallTimeout, minRate: s.Config.UploadMinRate}

	id := uuid.Must(uuid.NewV7())
	key := blob.StagingKey(id)
	staged := false
	committed := false
	defer func() {
		if staged && !committed {
			// Nothing refers to the staged bytes: remove them now. Should
			// that fail, the consumer's sweep removes them after the grace
			// period.
			if err := s.Blobs.Remove(context.WithoutCancel(ctx), key); err != nil {
				s.log(r).Warn("remove staged object", "key", key, "err", err)
			}
		}
	}()

	var form uploadForm
	var put blob.PutResult
	var filename, clientType string
	// multipart reads through a 4 KiB buffer unless given a larger one:
	// 64 KiB means far fewer reads (and system calls) for large files.
	buffered := bufio.NewReaderSize(body, 64<<10)
	guard := &partHeaderGuard{r: buffered, left: -1}
	mr := multipart.NewReader(guard, params["boundary"])
	for {
		part, err := guard.nextPart(mr)
		if err == io.EOF {
			break
		}
		if err != nil {
			if guard.exceeded {
				err = badRequest("invalid-multipart", "a part's header is larger than %d bytes", maxPartHeaderBytes)
			}
			s.fail(w, r, s.bodyError(body, err))
			return
		}
		switch name := part.FormName(); name {
		case "file":
			if staged {
				s.fail(w, r, badRequest("invalid-multipart", "the body has more than one part named file"))
				return
			}
			filename = sanitizeFilename(rawFilename(part))
			clientType = part.Header.Get("Content-Type")
			put, err = s.Blobs.Put(ctx, key, part, s.Config.UploadMaxBytes, "application/octet-stream")
			// Put takes a body cut short (io.ErrUnexpectedEOF) for its end
			// and stores it: whatever is refused below, remove that.
			staged = err == nil
			switch {
			case errors.Is(err, blob.ErrTooLarge):
				s.fail(w, r, s.tooLarge())
				return
			case body.err != nil:
				s.fail(w, r, s.bodyError(body, body.err))
				return
			case err != nil:
				s.fail(w, r, &unavailable{dependency: "object_storage", err: err})
				return
			}
			if put.Size == 0 {
				s.fail(w, r, badRequest("empty-file", "the file part is empty; DocuVault does not store empty documents"))
				return
			}
		case "title", "topic_id", "folder_id":
			if err := form.set(name, part); err != nil {
				s.fail(w, r, s.bodyError(body, err))
				return
			}
		case "":
			s.fail(w, r, badRequest("invalid-multipart", "a part has no form name"))
			return
		default:
			s.fail(w, r, badRequest("unknown-field", "unknown form field %q (expected file, title, topic_id, folder_id)", truncateRunes(name, 100)))
			return
		}
	}
	// Read what follows the closing boundary (an epilogue, usually
	// nothing) under the same policy, so that the whole body is read before
	// the read deadline is lifted.
	if _, err := io.Copy(io.Discard, buffered); err != nil {
		s.fail(w, r, s.bodyError(body, err))
		return
	}
	if body.endsInsidePart(params["boundary"]) {
		s.fail(w, r, badRequest("invalid-multipart", "the body ends inside a part, without the closing boundary"))
		return
	}
	if !staged {
		s.fail(w, r, badRequest("missing-file", "the body has no part named file"))
		return
	}
	// The body is read: what remains is ours to do, and the answer's to be
	// written in time.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(s.Config.ResponseTimeout))

	if owner == nil {
		s.fail(w, r, errAuthRequired) // unreachable: the middleware requires a principal
		return
	}
	// One round trip for the owner's quota and an earlier document with
	// the same content. Refuse up front what the quota cannot take.
	// Concurrent uploads may all pass this check: the charge when a
	// document becomes ready is atomic, and rejects (quota_exceeded)
	// whatever no longer fits then.
	q, dup, err := store.UploadChecks(ctx, s.DB, *owner, put.SHA256, s.Config.Quota)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	if ok, which := q.Fits(put.Size); !ok {
		s.fail(w, r, quotaExceeded(q, which, put.Size))
		return
	}

	doc := store.Document{
		ID: id, UserID: owner, TopicID: form.topicID, FolderID: form.folderID, Status: store.StatusPending,
		Filename: filename, ContentType: detectContentType(put.Head, clientType),
		SizeBytes: put.Size, SHA256: put.SHA256, StorageKey: key,
	}
	if form.title != nil {
		doc.Title = *form.title
	}
	if idemKey != "" {
		doc.IdempotencyKey = &idemKey
	}
	if put.ETag != "" {
		doc.StagingETag = &put.ETag
	}

	switch {
	case dup != nil && s.Config.DuplicatePolicy == "reject":
		s.fail(w, r, &apiError{status: http.StatusConflict, typ: "duplicate", title: "Duplicate document",
			detail: "a document with the same content exists", extra: map[string]any{"duplicate_of": *dup}})
		return
	case dup != nil:
		doc.DuplicateOf = dup
	}
	ev, err := events.New(events.DocumentUploaded, "document", doc.ID, requestActor(r), correlationID(r), nil, doc.EventData())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The client going away must not cancel the commit half-way: with the
	// bytes staged, finishing is cheaper than guessing.
	dbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	doc, err = store.InsertUpload(dbCtx, s.DB, doc, ev, s.origin(r))
	if errors.Is(err, store.ErrConflict) && idemKey != "" {
		// A concurrent request with the same key committed first.
		if first, err := store.DocumentByIdempotencyKey(ctx, s.DB, owner, idemKey); err == nil {
			s.replayUpload(w, first)
			return
		}
	}
	if err != nil {
		if outcomeUnknown(err) {
			// The rows may have committed: keep the staged bytes. The sweep
			// removes them after the grace period if no row refers to them.
			committed = true
		}
		s.fail(w, r, dbErr(err))
		return
	}
	committed = true
	s.Notifier.Poke()
	w.Header().Set("Location", documentPath(doc.ID))
	writeJSON(w, http.StatusAccepted, toDocumentJSON(doc))
}

// outcomeUnknown reports whether a failed write may still have committed:
// something was sent, and the server did not answer with an error of its
// own (the connection broke or timed out).
func outcomeUnknown(err error) bool {
	var pgErr *pgconn.PgError
	return !pgconn.SafeToRetry(err) && !errors.As(err, &pgErr) && !errors.Is(err, store.ErrConflict) &&
		!errors.Is(err, store.ErrUnknownTopic) && !errors.Is(err, store.ErrUnknownFolder)
}

// replayUpload answers a retried upload with the document the first
// request created.
func (s *server) replayUpload(w http.ResponseWriter, doc store.Document) {
	w.Header().Set("Location", documentPath(doc.ID))
	w.Header().Set("Idempotent-Replayed", "true")
	writeJSON(w, http.StatusAccepted, toDocumentJSON(doc))
}

// quotaExceeded is the 507 problem of an upload the owner's quota cannot
// take; which is the limit it breaks, "bytes" or "documents".
func quotaExceeded(q store.Quota, which string, size int64) error {
	detail := fmt.Sprintf("this upload of %d bytes would exceed the storage quota: %d of %d bytes used", size, q.UsedBytes, q.MaxBytes)
	limit, used := q.MaxBytes, q.UsedBytes
	if which == "documents" {
		detail = fmt.Sprintf("the document quota is reached: %d of %d documents", q.UsedDocuments, q.MaxDocuments)
		limit, used = q.MaxDocuments, q.UsedDocuments
	}
	return &apiError{status: http.StatusInsufficientStorage, typ: "quota-exceeded", title: "Quota exceeded", detail: detail,
		extra: map[string]any{"quota": which, "limit": limit, "used": used}}
}

func (s *server) tooLarge() error {
	return &apiError{status: http.StatusRequestEntityTooLarge, typ: "too-large", title: "Upload too large",
		detail: fmt.Sprintf("the file exceeds UPLOAD_MAX_BYTES (%d bytes)", s.Config.UploadMaxBytes)}
}

// bodyError blames a failed read on the client: an oversized body is 413,
// one that stalled or trickled is 408, anything else (truncated, malformed
// multipart) is 400.
func (s *server) bodyError(body *bodyReader, err error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) || errors.As(body.err, &maxErr) {
		return s.tooLarge()
	}
	if timedOut(body.err) {
		return requestTimeout(fmt.Sprintf("the upload sent nothing for %s, or less than %d bytes a second on average",
			s.Config.StallTimeout, s.Config.UploadMinRate))
	}
	var apiErr *apiError
	if errors.As(err, &apiErr) {
		return err
	}
	return badRequest("invalid-multipart", "the multipart body is malformed or truncated")
}

// set reads one text field.
func (f *uploadForm) set(name string, part *multipart.Part) error {
	b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
	if err != nil {
		return err
	}
	if len(b) > maxFieldBytes {
		return badRequest("invalid-field", "field %s is longer than %d bytes", name, maxFieldBytes)
	}
	v := string(b)
	switch name {
	case "title":
		if f.title != nil {
			return badRequest("invalid-multipart", "field title appears twice")
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return badRequest("invalid-field", "title must be UTF-8 text without NUL")
		}
		if utf8.RuneCountInString(v) > 1000 {
			return badRequest("invalid-field", "title is longer than 1000 characters")
		}
		f.title = &v
	case "topic_id", "folder_id":
		dst := &f.topicID
		if name == "folder_id" {
			dst = &f.folderID
		}
		if *dst != nil {
			return badRequest("invalid-multipart", "field %s appears twice", name)
		}
		if v == "" {
			return nil
		}
		id, err := parseUUID(v)
		if err != nil {
			return badRequest("invalid-field", "%s is not a UUID", name)
		}
		*dst = &id
	}
	return nil
}

// parseUUID accepts only the canonical 36-character form.
func parseUUID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.UUID{}, errors.New("not a canonical UUID")
	}
	return uuid.Parse(s)
}

// rawFilename is the filename parameter exactly as sent; multipart's
// FileName applies filepath.Base, which hides what sanitizeFilename must
// see and would keep a Windows path whole.
func rawFilename(part *multipart.Part) string {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// maxFilenameBytes is the longest filename kept (most file systems' limit).
const maxFilenameBytes = 255

// sanitizeFilename makes a client's filename safe to store and to send back
// in Content-Disposition: the last path element only (either separator),
// no control or bidirectional-override characters, valid UTF-8, at most
// maxFilenameBytes (keeping the extension), and never empty, "." or "..".
func sanitizeFilename(name string) string {
	name = strings.ToValidUTF8(name, "\uFFFD")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		switch {
		case unicode.IsControl(r), r == '\uFFFD':
			return '_'
		case unicode.Is(unicode.Bidi_Control, r), r == '\u200B', r == '\uFEFF':
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if len(name) > maxFilenameBytes {
		ext := ""
		if i := strings.LastIndexByte(name, '.'); i > 0 && len(name)-i <= 16 {
			ext = name[i:]
		}
		name = strings.TrimRightFunc(truncateBytes(name[:len(name)-len(ext)], maxFilenameBytes-len(ext)), unicode.IsSpace) + ext
	}
	if name == "" || strings.Trim(name, ".") == "" {
		return "document"
	}
	return name
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func truncateRunes(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// detectContentType decides the stored content type from the bytes. The
// client's claim is used only to refine a generic detection (office
// formats are zip archives, many text formats are text/plain), and never
// to claim an active type such as HTML or SVG that a browser would render.
func detectContentType(head []byte, claimed string) string {
	detected := http.DetectContentType(head)
	generic := detected == "application/octet-stream" || detected == "application/zip" ||
		strings.HasPrefix(detected, "text/plain")
	if !generic || claimed == "" {
		return detected
	}
	mt, _, err := mime.ParseMediaType(claimed)
	if err != nil || len(mt) > 255 || !plainMediaType.MatchString(mt) {
		return detected
	}
	switch {
	case strings.HasPrefix(mt, "text/html"), strings.Contains(mt, "xml"), strings.Contains(mt, "javascript"),
		mt == "application/octet-stream", strings.HasPrefix(mt, "multipart/"):
		return detected
	case detected == "application/zip" && !(strings.HasPrefix(mt, "application/vnd.") || mt == "application/epub+zip"):
		return detected
	case strings.HasPrefix(detected, "text/plain") && !strings.HasPrefix(mt, "text/"):
		return detected
	}
	return mt
}

// plainMediaType is a media type the document events' schema accepts
// (common.v1.json#/$defs/document/properties/content_type).
var plainMediaType = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$`)

// idempotencyKey validates the Idempotency-Key header: 1-255 visible ASCII
// characters.
func idempotencyKey(r *http.Request) (string, error) {
	values := r.Header.Values("Idempotency-Key")
	if len(values) == 0 {
		return "", nil
	}
	if len(values) > 1 {
		return "", badRequest("invalid-idempotency-key", "send one Idempotency-Key header")
	}
	k := values[0]
	if len(k) == 0 || len(k) > 255 {
		return "", badRequest("invalid-idempotency-key", "Idempotency-Key must be 1 to 255 characters")
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return "", badRequest("invalid-idempotency-key", "Idempotency-Key must be visible ASCII")
		}
	}
	return k, nil
}

// correlationID is the request's X-Correlation-ID when it is a UUID, or a
// new one.
func correlationID(r *http.Request) uuid.UUID {
	if id, err := parseUUID(r.Header.Get("X-Correlation-ID")); err == nil {
		return id
	}
	return uuid.Must(uuid.NewV7())
}

// origin is the audit context of a request: its client (clientAddr),
// request id and span (tracing.Middleware).
func (s *server) origin(r *http.Request) store.Origin {
	ctx := r.Context()
	// A header value may hold any byte but the ones net/http refuses;
	// PostgreSQL text holds UTF-8 without NUL only.
	ua := strings.ToValidUTF8(strings.ReplaceAll(r.UserAgent(), "\x00", ""), "\uFFFD")
	o := store.Origin{UserAgent: ua, RequestID: tracing.RequestID(ctx), Traceparent: tracing.Traceparent(ctx)}
	if ip := s.clientAddr(r); ip.IsValid() {
		o.ClientIP = &ip
	}
	return o
}

func (s *server) getDocument(w http.ResponseWriter, r *http.Request) {
	doc, err := s.documentFromPath(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := s.withCloudSync(r, toDocumentJSON(doc)) // + "cloud_sync" (cloud.go)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// documentFromPath loads the document named by {id} if it is in the
// request's scope; deleted documents and other owners' are not found.
func (s *server) documentFromPath(r *http.Request) (store.Document, error) {
	id, err := pathID(r)
	if err != nil {
		return store.Document{}, err
	}
	doc, err := store.DocumentIn(r.Context(), s.DB, scope(r.Context()), id)
	if err != nil {
		return doc, dbErr(err)
	}
	if doc.Status == store.StatusDeleted {
		return doc, store.ErrNotFound
	}
	return doc, nil
}

func pathID(r *http.Request) (uuid.UUID, error) {
	id, err := parseUUID(chi.URLParam(r, "id"))
	if err != nil {
		return id, &apiError{status: http.StatusNotFound, typ: "not-found", title: "Not found",
			detail: "the id in the path is not a UUID"}
	}
	return id, nil
}

// Page sizes of list endpoints.
const (
	defaultPageSize = 50
	maxPageSize     = 200
)

type listParams struct {
	limit int
	after *uuid.UUID
}

// pageParams reads limit and cursor. The cursor is opaque to clients: the
// base64url form of the last id of the previous page.
func pageParams(r *http.Request) (listParams, error) {
	p := listParams{limit: defaultPageSize}
	q := r.URL.Query()
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxPageSize {
			return p, badRequest("invalid-parameter", "limit must be a whole number from 1 to %d", maxPageSize)
		}
		p.limit = n
	}
	if raw := q.Get("cursor"); raw != "" {
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(b) != 16 || base64.RawURLEncoding.EncodeToString(b) != raw {
			return p, badRequest("invalid-cursor", "cursor is not one this API returned")
		}
		id, _ := uuid.FromBytes(b)
		p.after = &id
	}
	return p, nil
}

func cursorFor(id uuid.UUID) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// pageJSON is one page of a list endpoint.
type pageJSON[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// newPage turns rows (fetched with limit+1, to learn whether more follow)
// into a page of at most limit items and the cursor of the next page.
func newPage[R, T any](rows []R, limit int, id func(R) uuid.UUID, toJSON func(R) T) pageJSON[T] {
	page := pageJSON[T]{Items: make([]T, 0, min(len(rows), limit))}
	if len(rows) > limit {
		rows = rows[:limit]
		c := cursorFor(id(rows[len(rows)-1]))
		page.NextCursor = &c
	}
	for _, r := range rows {
		page.Items = append(page.Items, toJSON(r))
	}
	return page
}

func optionalUUID(r *http.Request, name string) (*uuid.UUID, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return nil, nil
	}
	id, err := parseUUID(raw)
	if err != nil {
		return nil, badRequest("invalid-parameter", "%s is not a UUID", name)
	}
	return &id, nil
}

func (s *server) listDocuments(w http.ResponseWriter, r *http.Request) {
	page, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f := store.DocumentFilter{Status: r.URL.Query().Get("status"), After: page.after, Limit: page.limit + 1}
	switch f.Status {
	case "", store.StatusPending, store.StatusReady, store.StatusRejected:
	default:
		s.fail(w, r, badRequest("invalid-parameter", "status must be pending, ready or rejected"))
		return
	}
	if f.TopicID, err = optionalUUID(r, "topic_id"); err != nil {
		s.fail(w, r, err)
		return
	}
	if f.FolderID, err = optionalUUID(r, "folder_id"); err != nil {
		s.fail(w, r, err)
		return
	}
	docs, err := store.ListDocuments(r.Context(), s.DB, scope(r.Context()), f)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, newPage(docs, page.limit, func(d store.Document) uuid.UUID { return d.ID }, toDocumentJSON))
}

// getContent streams a ready document's bytes, with ETag and Range support.
func (s *server) getContent(w http.ResponseWriter, r *http.Request) {
	doc, err := s.documentFromPath(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if doc.Status != store.StatusReady {
		s.fail(w, r, &apiError{status: http.StatusConflict, typ: "not-ready", title: "Document not ready",
			detail: "the document is " + doc.Status + "; its content is available once it is ready",
			extra:  map[string]any{"document_status": doc.Status}})
		return
	}
	obj, _, err := s.Blobs.Open(r.Context(), doc.StorageKey)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			s.log(r).Error("ready document has no object", "document_id", doc.ID, "key", doc.StorageKey)
		}
		s.fail(w, r, &unavailable{dependency: "object_storage", err: err})
		return
	}
	defer obj.Close()
	h := w.Header()
	h.Set("Content-Type", doc.ContentType)
	h.Set("ETag", `"`+hex.EncodeToString(doc.SHA256)+`"`)
	h.Set("Content-Disposition", contentDisposition(doc.Filename))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox")
	h.Set("Cache-Control", "private, no-cache")
	modTime := doc.CreatedAt
	if doc.FinalizedAt != nil {
		modTime = *doc.FinalizedAt
	}
	http.ServeContent(newDownloadWriter(w, r, s.Config.StallTimeout), r, "", modTime, obj)
}

// contentDisposition is an RFC 6266 attachment header: an ASCII fallback
// filename plus filename* (RFC 8187) for the UTF-8 original.
func contentDisposition(name string) string {
	fallback := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' || r == '%' || r == ';' {
			return '_'
		}
		return r
	}, name)
	v := `attachment; filename="` + fallback + `"`
	if fallback != name {
		v += "; filename*=UTF-8''" + rfc8187Escape(name)
	}
	return v
}

func rfc8187Escape(s string) string {
	const attrChar = "!#$&+-.^_`|~"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(attrChar, c) >= 0) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// deleteDocument soft-deletes a document with its audit row and a
// document.deleted event; the consumer then removes the object.
func (s *server) deleteDocument(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := r.Context()
	err = store.WithTx(ctx, s.DB, func(tx pgx.Tx) error {
		doc, err := store.DeleteDocument(ctx, tx, scope(ctx), id)
		if err != nil {
			return err
		}
		ev, err := events.New(events.DocumentDeleted, "document", doc.ID, requestActor(r), correlationID(r), nil, doc.EventData())
		if err != nil {
			return err
		}
		return store.Record(ctx, tx, ev, s.origin(r))
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	s.Notifier.Poke()
	w.WriteHeader(http.StatusNoContent)
}
