// Package tracing ties every event to the HTTP request that caused it: the
// request id and a W3C Trace Context travel from the request through the
// outbox, the stream metadata and every follow-up event, and into the logs,
// so one upload can be followed from its request to its cloud copies
// (docs/events.md, "Tracing an upload").
//
// A context carries the request id and the current span's
// OpenTelemetry trace.SpanContext. Only the ids travel: no span is
// recorded or exported, so no OpenTelemetry SDK is needed, and one can be
// added later without changing what is stored. Every unit of work that
// writes events (an HTTP request, a consumer's handling of a message, a
// cloud sync attempt) gets its own span id under the trace of what caused
// it, and its events carry that span as their traceparent.
package tracing

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/docuvault/docuvault/internal/events"
)

// HTTP headers. HeaderRequestID is read from requests (when well-formed)
// and set on every response; HeaderTraceparent is read from requests and
// set on every response to the request's own span.
const (
	HeaderRequestID   = "X-Request-ID"
	HeaderTraceparent = "traceparent"
)

// MaxRequestIDLen is the longest request id accepted from a client.
const MaxRequestIDLen = 128

// ValidRequestID reports whether id is a well-formed request id: 1 to
// MaxRequestIDLen characters, each an ASCII letter, digit, '.', '_', ':'
// or '-'. That covers UUIDs, hex, ULIDs and the ids of common proxies,
// and keeps ids safe in headers, logs and the audit log.
func ValidRequestID(id string) bool {
	if len(id) == 0 || len(id) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// NewRequestID returns a new request id: a UUIDv7.
func NewRequestID() string { return uuid.Must(uuid.NewV7()).String() }

type requestIDKey struct{}

// WithRequestID returns ctx carrying request id id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID is the request id ctx carries, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// Continue returns ctx with a new span: a child of the span traceparent
// names (the same trace id and flags, a new span id) when traceparent is a
// valid W3C traceparent, otherwise the root of a new trace.
func Continue(ctx context.Context, traceparent string) context.Context {
	return trace.ContextWithSpanContext(ctx, child(parse(traceparent)))
}

// Child returns the traceparent of a new span under the one traceparent
// names, or of the root of a new trace when traceparent is not valid.
func Child(traceparent string) string {
	return format(child(parse(traceparent)))
}

// Traceparent is the W3C traceparent of ctx's span, or "" when ctx has
// none.
func Traceparent(ctx context.Context) string {
	return format(trace.SpanContextFromContext(ctx))
}

// TraceID is the trace id of ctx's span (32 hex digits), or "".
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// TraceIDOf is the trace id of traceparent (32 hex digits), or "" when it
// is not a valid traceparent.
func TraceIDOf(traceparent string) string {
	if sc := parse(traceparent); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// parse reads a traceparent as the W3C Trace Context specification (and
// OpenTelemetry's propagator) does: version 00 is exactly
// 00-{32 lowercase hex trace id}-{16 lowercase hex parent id}-{2 hex flags},
// with neither id all zeros; anything else gives an invalid SpanContext.
func parse(traceparent string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{HeaderTraceparent: traceparent})
	return trace.SpanContextFromContext(ctx)
}

// format is the traceparent of sc, or "" when sc is invalid. Trace state
// is not carried.
func format(sc trace.SpanContext) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier)
	return carrier[HeaderTraceparent]
}

// child is a new span under parent, or the root of a new trace when parent
// is invalid. A new trace is sampled: DocuVault keeps the trace of every
// request (in its logs and audit log).
func child(parent trace.SpanContext) trace.SpanContext {
	cfg := trace.SpanContextConfig{TraceID: parent.TraceID(), TraceFlags: parent.TraceFlags(), SpanID: newSpanID()}
	if !parent.IsValid() {
		cfg.TraceID, cfg.TraceFlags = newTraceID(), trace.FlagsSampled
	}
	return trace.NewSpanContext(cfg)
}

func newTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		_, _ = rand.Read(id[:])
	}
	return id
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		_, _ = rand.Read(id[:])
	}
	return id
}

// Middleware gives every request a request id and a span, in its context
// and in the response headers (set before the handler runs, so every
// response has them, errors and 404s included):
//
//   - the request id is the request's X-Request-ID when it has exactly one
//     and it is well-formed (ValidRequestID), otherwise a new one;
//   - the span continues the trace of the request's traceparent when it
//     has exactly one valid one, otherwise it starts a new trace. Its
//     traceparent is returned in the response's traceparent header.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := single(r.Header, HeaderRequestID)
		if !ValidRequestID(id) {
			id = NewRequestID()
		}
		ctx := Continue(WithRequestID(r.Context(), id), single(r.Header, HeaderTraceparent))
		w.Header().Set(HeaderRequestID, id)
		w.Header().Set(HeaderTraceparent, Traceparent(ctx))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// single is the value of header key when the request has exactly one.
func single(h http.Header, key string) string {
	if vs := h.Values(key); len(vs) == 1 {
		return vs[0]
	}
	return ""
}

// MessageContext is the context for handling msg: msg's context with the
// request id of its metadata (unchanged, when it has one) and a new span
// continuing the trace of its traceparent (a new trace when it has none).
// The events a handler writes carry both.
func MessageContext(msg *message.Message) context.Context {
	ctx := msg.Context()
	if id := msg.Metadata.Get(events.MetaRequestID); id != "" {
		ctx = WithRequestID(ctx, id)
	}
	return Continue(ctx, msg.Metadata.Get(events.MetaTraceparent))
}

// Attrs are the slog attributes that tie a log line to ctx's request and
// trace: request_id and trace_id, those ctx has.
func Attrs(ctx context.Context) []any {
	var attrs []any
	if id := RequestID(ctx); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	if id := TraceID(ctx); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	return attrs
}

// EventAttrs are the slog attributes of a log line about handling ev in
// ctx: event_id, type and correlation_id, then Attrs(ctx).
func EventAttrs(ctx context.Context, ev events.Envelope) []any {
	return append([]any{slog.String("event_id", ev.ID.String()), slog.String("type", ev.Type),
		slog.String("correlation_id", ev.CorrelationID.String())}, Attrs(ctx)...)
}

// MessageAttrs are the slog attributes of a log line about msg, from its
// UUID and metadata: event_id, type, correlation_id, request_id and
// trace_id (of its traceparent), those it has.
func MessageAttrs(msg *message.Message) []any {
	attrs := []any{slog.String("event_id", msg.UUID)}
	for _, k := range []string{events.MetaType, events.MetaCorrelationID, events.MetaRequestID} {
		if v := msg.Metadata.Get(k); v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	if id := TraceIDOf(msg.Metadata.Get(events.MetaTraceparent)); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	return attrs
}
