package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/tracing"
)

var traceparentShape = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$`)

// parts splits a traceparent the middleware wrote into trace id, span id
// and flags, failing on any other shape.
func parts(t *testing.T, tp string) (traceID, spanID, flags string) {
	t.Helper()
	m := traceparentShape.FindStringSubmatch(tp)
	if m == nil {
		t.Fatalf("traceparent %q is not 00-{trace id}-{span id}-{flags}", tp)
	}
	return m[1], m[2], m[3]
}

// serve sends a request with header through tracing.Middleware and
// returns the response and what the handler saw in its context.
func serve(t *testing.T, header http.Header) (resp *http.Response, requestID, traceparent string) {
	t.Helper()
	h := tracing.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requestID, traceparent = tracing.RequestID(r.Context()), tracing.Traceparent(r.Context())
		http.NotFound(w, r)
	}))
	req := httptest.NewRequest(http.MethodGet, "/anything", nil)
	req.Header = header
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result(), requestID, traceparent
}

func TestMiddlewareHonoursAWellFormedRequestID(t *testing.T) {
	for _, id := range []string{
		"a",
		"0196f3c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f",
		"01HZX3J5Q2W7K9M4N6P8R0T2V4",
		"edge.proxy-1:req_42",
		strings.Repeat("x", tracing.MaxRequestIDLen),
	} {
		resp, got, _ := serve(t, http.Header{"X-Request-Id": {id}})
		if got != id || resp.Header.Get(tracing.HeaderRequestID) != id {
			t.Errorf("request id %q: handler saw %q, response says %q", id, got, resp.Header.Get(tracing.HeaderRequestID))
		}
	}
}

func TestMiddlewareReplacesAMalformedRequestID(t *testing.T) {
	for name, values := range map[string][]string{
		"missing":    nil,
		"empty":      {""},
		"too long":   {strings.Repeat("x", tracing.MaxRequestIDLen+1)},
		"space":      {"req 1"},
		"slash":      {"host/abc-000001"},
		"newline":    {"req\nforged log line"},
		"non-ascii":  {"réq"},
		"two values": {"req-1", "req-2"},
	} {
		resp, got, _ := serve(t, http.Header{"X-Request-Id": values})
		if _, err := uuid.Parse(got); err != nil || !tracing.ValidRequestID(got) || (len(values) > 0 && got == values[0]) {
			t.Errorf("%s: handler saw request id %q; want a new UUID", name, got)
		}
		if resp.Header.Get(tracing.HeaderRequestID) != got {
			t.Errorf("%s: response says %q; handler saw %q", name, resp.Header.Get(tracing.HeaderRequestID), got)
		}
	}
	// Two requests without one get two ids.
	_, a, _ := serve(t, http.Header{})
	_, b, _ := serve(t, http.Header{})
	if a == b {
		t.Errorf("two requests got the same request id %q", a)
	}
}

func TestMiddlewareContinuesAValidTraceparent(t *testing.T) {
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, flags := range []string{"00", "01"} {
		in := "00-" + traceID + "-" + parentID + "-" + flags
		resp, _, got := serve(t, http.Header{"Traceparent": {in}})
		tid, sid, f := parts(t, got)
		if tid != traceID || f != flags {
			t.Errorf("%s: the request's span is %s; want trace %s, flags %s", in, got, traceID, flags)
		}
		if sid == parentID {
			t.Errorf("%s: the request reuses the caller's span id", in)
		}
		if resp.Header.Get(tracing.HeaderTraceparent) != got {
			t.Errorf("%s: response traceparent %q; the request's span is %q", in, resp.Header.Get(tracing.HeaderTraceparent), got)
		}
	}
	// Each request gets its own span under the same trace.
	in := "00-" + traceID + "-" + parentID + "-01"
	_, _, a := serve(t, http.Header{"Traceparent": {in}})
	_, _, b := serve(t, http.Header{"Traceparent": {in}})
	if _, sa, _ := parts(t, a); strings.Contains(b, sa) {
		t.Errorf("two requests share span %s", sa)
	}
}

func TestMiddlewareStartsANewTraceForAnInvalidTraceparent(t *testing.T) {
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for name, values := range map[string][]string{
		"missing":            nil,
		"empty":              {""},
		"upper-case hex":     {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
		"zero trace id":      {"00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		"zero parent id":     {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"},
		"short trace id":     {"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"},
		"version ff":         {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"extra field for 00": {valid + "-00"},
		"not hex":            {"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"},
		"garbage":            {"hello"},
		"two values":         {valid, valid},
	} {
		resp, _, got := serve(t, http.Header{"Traceparent": values})
		tid, _, flags := parts(t, got)
		if tid == "4bf92f3577b34da6a3ce929d0e0e4736" || flags != "01" {
			t.Errorf("%s: the request's span is %s; want a new sampled trace", name, got)
		}
		if resp.Header.Get(tracing.HeaderTraceparent) != got {
			t.Errorf("%s: response traceparent %q; the request's span is %q", name, resp.Header.Get(tracing.HeaderTraceparent), got)
		}
	}
	_, _, a := serve(t, http.Header{})
	_, _, b := serve(t, http.Header{})
	if ta, _, _ := parts(t, a); strings.Contains(b, ta) {
		t.Errorf("two requests without a traceparent share trace %s", ta)
	}
}

func TestMessageContextContinuesTheMessagesTrace(t *testing.T) {
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	msg := message.NewMessage(uuid.NewString(), nil)
	msg.Metadata.Set(events.MetaRequestID, "req-1")
	msg.Metadata.Set(events.MetaTraceparent, parent)
	ctx := tracing.MessageContext(msg)
	tid, sid, flags := parts(t, tracing.Traceparent(ctx))
	if tracing.RequestID(ctx) != "req-1" || tid != "4bf92f3577b34da6a3ce929d0e0e4736" || sid == "00f067aa0ba902b7" || flags != "01" {
		t.Errorf("request id %q, span %s; want req-1 and a child of %s", tracing.RequestID(ctx), tracing.Traceparent(ctx), parent)
	}

	// A message without them: no request id, a new trace.
	ctx = tracing.MessageContext(message.NewMessage(uuid.NewString(), nil))
	if tracing.RequestID(ctx) != "" {
		t.Errorf("request id %q; want none", tracing.RequestID(ctx))
	}
	parts(t, tracing.Traceparent(ctx))

	if got := tracing.Traceparent(context.Background()); got != "" {
		t.Errorf("a bare context has traceparent %q", got)
	}
	if tid, sid, _ := parts(t, tracing.Child(parent)); tid != "4bf92f3577b34da6a3ce929d0e0e4736" || sid == "00f067aa0ba902b7" {
		t.Errorf("Child(%s) = %s", parent, tracing.Child(parent))
	}
	if tracing.TraceIDOf(parent) != "4bf92f3577b34da6a3ce929d0e0e4736" || tracing.TraceIDOf("nonsense") != "" {
		t.Errorf("TraceIDOf: %q, %q", tracing.TraceIDOf(parent), tracing.TraceIDOf("nonsense"))
	}
}
