package httpapi

import (
	"encoding/json"
	"mime"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/net/http/httpguts"

	"github.com/docuvault/docuvault/internal/events"
)

// safeFilename reports why name is not a filename sanitizeFilename may
// return ("" when it is one): valid UTF-8, 1 to maxFilenameBytes bytes, no
// path separator, control, bidirectional-control, zero-width or replacement
// character, no surrounding white space, not only dots.
func safeFilename(name string) string {
	switch {
	case !utf8.ValidString(name):
		return "not valid UTF-8"
	case name == "" || len(name) > maxFilenameBytes:
		return "empty or longer than maxFilenameBytes"
	case strings.ContainsAny(name, `/\`):
		return "has a path separator"
	case strings.TrimSpace(name) != name:
		return "has surrounding white space"
	case strings.Trim(name, ".") == "":
		return "only dots"
	}
	for _, r := range name {
		switch {
		case unicode.IsControl(r):
			return "has a control character"
		case unicode.Is(unicode.Bidi_Control, r):
			return "has a bidirectional control character"
		case r == '\u200B', r == '\uFEFF', r == utf8.RuneError:
			return "has a zero-width or replacement character"
		}
	}
	return ""
}

// FuzzSanitizeFilename: whatever a client sends as a filename, what is
// stored is safe (safeFilename), sanitising it again changes nothing, a
// name already safe is kept as sent, the Content-Disposition header built
// from it is a valid header that gives the name back, and it fits the
// filename of the document events' schema.
func FuzzSanitizeFilename(f *testing.F) {
	for _, s := range []string{
		"report.pdf",
		"../../etc/passwd",
		`C:\Users\x\secret.pdf`,
		"..",
		"a\x00b.pdf",
		"evil\u202Etxt.exe",
		"\xffa",
		strings.Repeat("a", 1200) + ".pdf",
		strings.Repeat("é", 200) + ".tar.gz",
		"CON",
		"  .  ",
		"résumé 2026 (final).docx",
	} {
		f.Add(s)
	}
	id := uuid.MustParse("0190a5c8-1111-7000-8000-000000000001")
	f.Fuzz(func(t *testing.T, raw string) {
		name := sanitizeFilename(raw)
		if why := safeFilename(name); why != "" {
			t.Fatalf("sanitizeFilename(%q) = %q: %s", raw, name, why)
		}
		if again := sanitizeFilename(name); again != name {
			t.Errorf("not idempotent: sanitizeFilename(%q) = %q, then %q", raw, name, again)
		}
		if safeFilename(raw) == "" && name != raw {
			t.Errorf("safe name %q changed to %q", raw, name)
		}

		cd := contentDisposition(name)
		if !httpguts.ValidHeaderFieldValue(cd) {
			t.Fatalf("Content-Disposition for %q is not a valid header value: %q", name, cd)
		}
		disp, params, err := mime.ParseMediaType(cd)
		if err != nil || disp != "attachment" || params["filename"] != name {
			t.Errorf("Content-Disposition %q parses as %q %q (%v); want attachment with filename %q", cd, disp, params, err, name)
		}

		ev, err := events.New(events.DocumentUploaded, "document", id, events.Anonymous, id, nil, events.Document{
			ID: id, Filename: name, ContentType: "application/pdf", SizeBytes: 1, Status: "pending",
			SHA256: strings.Repeat("0", 64), StorageKey: "staging/" + id.String(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := events.Validate(mustJSON(t, ev)); err != nil {
			t.Errorf("filename %q breaks the event schema: %v", name, err)
		}
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
