// Package problem writes RFC 9457 problem details
// (application/problem+json) with stable type URIs.
package problem

import (
	"encoding/json"
	"net/http"
)

// TypeBase prefixes every problem type; the types are documented in the
// OpenAPI description.
const TypeBase = "https://docuvault.dev/problems/"

// Details is an RFC 9457 problem object. Extension members go in Extra.
type Details struct {
	Type     string         `json:"type"`
	Title    string         `json:"title"`
	Status   int            `json:"status"`
	Detail   string         `json:"detail,omitempty"`
	Instance string         `json:"instance,omitempty"`
	Extra    map[string]any `json:"-"`
}

// MarshalJSON flattens Extra into the object, as RFC 9457 extensions are.
func (d Details) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(d.Extra)+5)
	for k, v := range d.Extra {
		m[k] = v
	}
	m["type"] = d.Type
	m["title"] = d.Title
	m["status"] = d.Status
	if d.Detail != "" {
		m["detail"] = d.Detail
	}
	if d.Instance != "" {
		m["instance"] = d.Instance
	}
	return json.Marshal(m)
}

// New returns a problem of the given short type name (e.g. "not-found").
func New(status int, typ, title, detail string) Details {
	return Details{Type: TypeBase + typ, Title: title, Status: status, Detail: detail}
}

// Write sends d as the response.
func Write(w http.ResponseWriter, r *http.Request, d Details) {
	if d.Instance == "" && r != nil {
		d.Instance = r.URL.Path
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	_ = json.NewEncoder(w).Encode(d)
}
