// Package apispec checks the API against its OpenAPI description
// (api/openapi.yaml): it loads and validates the description, lists its
// operations (to compare with the router's), and validates live HTTP
// traffic with kin-openapi, as a RoundTripper the tests put in front of
// every request they send.
package apispec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/docuvault/docuvault/api"
)

// Load parses api.Spec and validates it as an OpenAPI document. Its errors
// say what is wrong with the description.
func Load() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.Spec)
	if err != nil {
		return nil, fmt.Errorf("load api/openapi.yaml: %w", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableSchemaPatternValidation(), openapi3.EnableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("api/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	return doc, nil
}

// Operations lists the operations doc describes as "METHOD /path", sorted.
func Operations(doc *openapi3.T) []string {
	var ops []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(ops)
	return ops
}

// uuidFormat is what the API accepts as a UUID: the canonical 36-character
// form, any version (the server's parseUUID).
const uuidFormat = `^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`

// maxValidatedRequestBody is the largest request body that is read (a
// second time) to validate it; larger ones, and bodies that cannot be
// read twice (no GetBody, e.g. a pipe), are sent without body validation.
const maxValidatedRequestBody = 8 << 20

// Validator validates every exchange with the API that goes through its
// Transport and records what does not match the description. It is safe
// for concurrent use.
type Validator struct {
	doc     *openapi3.T
	router  routers.Router
	problem *openapi3.Schema
	opts    []openapi3.SchemaValidationOption

	mu       sync.Mutex
	checked  int
	seen     map[string]bool // operations exercised
	failures map[string]int  // failure -> occurrences
	order    []string        // failures in the order first seen
}

// NewValidator loads the description (Load) and returns a Validator for it.
func NewValidator() (*Validator, error) {
	doc, err := Load()
	if err != nil {
		return nil, err
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route api/openapi.yaml: %w", err)
	}
	problem := doc.Components.Schemas["Problem"]
	if problem == nil || problem.Value == nil {
		return nil, errors.New("api/openapi.yaml has no Problem schema")
	}
	return &Validator{
		doc: doc, router: router, problem: problem.Value,
		opts:     []openapi3.SchemaValidationOption{openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(uuidFormat))},
		seen:     map[string]bool{},
		failures: map[string]int{},
	}, nil
}

// Transport returns a RoundTripper that sends each request through next and
// validates the exchange when the request is for the API: when the
// description has its path, or the path starts with /api/ (then the answer
// must be a 404 or 405 problem). Other requests (object storage, WebDAV,
// other processes) pass untouched.
//
// For a described operation the response must be documented for its status
// and match its headers and body schema (binary bodies are not read: their
// content type and headers are checked). The request is validated too
// (parameters, and the body when it can be read twice and is at most
// 8 MiB); tests send invalid requests on purpose, so a request the
// description refuses is a failure only when the API accepted it (a status
// below 400).
func (v *Validator) Transport(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		route, params, routeErr := v.router.FindRoute(req)
		if routeErr != nil {
			if !strings.HasPrefix(req.URL.Path, "/api/") {
				return next.RoundTrip(req)
			}
			resp, err := next.RoundTrip(req)
			if err == nil {
				v.checkUnrouted(req, resp, routeErr)
			}
			return resp, err
		}
		in, reqErr := v.validateRequest(req, route, params)
		resp, err := next.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		v.checkResponse(in, reqErr, resp)
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func (v *Validator) options() *openapi3filter.Options {
	o := &openapi3filter.Options{
		IncludeResponseStatus:   true, // an undocumented status is a failure
		SkipSettingDefaults:     true,
		SchemaValidationOptions: v.opts,
	}
	o.WithCustomSchemaErrorFunc(schemaErrorText)
	o.AuthenticationFunc = checkSecurity
	return o
}

// checkSecurity checks that a request for an operation with a security
// requirement carries the credential its scheme names: for an http bearer
// scheme, an Authorization: Bearer header (the API checks the token
// itself).
func checkSecurity(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s := in.SecurityScheme
	if s == nil || s.Type != "http" || !strings.EqualFold(s.Scheme, "bearer") {
		return nil
	}
	scheme, token, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("no Authorization: Bearer token")
	}
	return nil
}

// validateRequest validates req against route on a clone (req itself is
// sent untouched) and returns the validation input the response check
// needs.
func (v *Validator) validateRequest(req *http.Request, route *routers.Route, params map[string]string) (*openapi3filter.RequestValidationInput, error) {
	clone := req.Clone(context.Background())
	opts := v.options()
	clone.Body = http.NoBody
	switch {
	case req.Body == nil || req.Body == http.NoBody:
	case req.GetBody != nil && req.ContentLength >= 0 && req.ContentLength <= maxValidatedRequestBody:
		body, err := req.GetBody()
		if err != nil {
			opts.ExcludeRequestBody = true
			break
		}
		clone.Body = body
	default:
		opts.ExcludeRequestBody = true
	}
	in := &openapi3filter.RequestValidationInput{Request: clone, PathParams: params, Route: route, Options: opts}
	err := openapi3filter.ValidateRequest(context.Background(), in)
	// The response is validated against the described request, with the
	// response options.
	in.Options = v.options()
	return in, err
}

// checkResponse validates resp against the operation of in and records
// what fails. A body it reads is put back for the caller.
func (v *Validator) checkResponse(in *openapi3filter.RequestValidationInput, reqErr error, resp *http.Response) {
	op := in.Request.Method + " " + in.Route.Path
	what := fmt.Sprintf("%s -> %d", op, resp.StatusCode)
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: in.Options,
	}
	if binaryBody(in.Route.Operation, resp) {
		// The bytes of a document: not read (they may be large, and the
		// caller may read them slowly); the schema accepts any bytes.
		out.SetBodyBytes(nil)
	} else {
		data, err := readBack(resp)
		if err != nil {
			v.record(op, "") // the connection broke: nothing to judge
			return
		}
		out.SetBodyBytes(data)
	}
	var failure string
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		failure = what + ": " + err.Error()
	} else if reqErr != nil && resp.StatusCode < 400 {
		failure = what + ": the request does not match the description, yet the API accepted it: " + reqErr.Error()
	}
	v.record(op, failure)
}

// checkUnrouted checks the answer to a request for a path or method the
// description does not have: a 404 (unknown path) or 405 (known path,
// other method) problem.
func (v *Validator) checkUnrouted(req *http.Request, resp *http.Response, routeErr error) {
	want := http.StatusNotFound
	if errors.Is(routeErr, routers.ErrMethodNotAllowed) {
		want = http.StatusMethodNotAllowed
	}
	what := fmt.Sprintf("undescribed %s %s -> %d", req.Method, req.URL.Path, resp.StatusCode)
	data, err := readBack(resp)
	if err != nil {
		v.record("", "")
		return
	}
	var failure string
	if resp.StatusCode != want {
		failure = fmt.Sprintf("%s: want %d (the description has no such operation)", what, want)
	} else if err := v.checkProblem(resp.Header, data); err != nil {
		failure = what + ": " + err.Error()
	}
	v.record("", failure)
}

func (v *Validator) checkProblem(h http.Header, data []byte) error {
	if mt, _, _ := mime.ParseMediaType(h.Get("Content-Type")); mt != "application/problem+json" {
		return fmt.Errorf("Content-Type %q, want application/problem+json", h.Get("Content-Type"))
	}
	var value any
	if err := json.Unmarshal(data, &value); err != nil {
		return fmt.Errorf("problem body is not JSON: %w", err)
	}
	opts := append([]openapi3.SchemaValidationOption{openapi3.VisitAsResponse(),
		openapi3.SetSchemaErrorMessageCustomizer(schemaErrorText)}, v.opts...)
	return v.problem.VisitJSON(value, opts...)
}

// binaryBody reports whether the description gives resp's body as raw
// bytes (type string, format binary).
func binaryBody(op *openapi3.Operation, resp *http.Response) bool {
	ref := op.Responses.Status(resp.StatusCode)
	if ref == nil || ref.Value == nil {
		return false
	}
	mt := ref.Value.Content.Get(resp.Header.Get("Content-Type"))
	if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
		return false
	}
	s := mt.Schema.Value
	return s.Type.Is(openapi3.TypeString) && s.Format == "binary"
}

// readBack reads resp's body and puts an identical one back. On a read
// error the caller gets what was read, then the error.
func readBack(resp *http.Response) ([]byte, error) {
	data, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), errReader{err}))
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return data, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// schemaErrorText is a schema error without the schema dump kin-openapi
// adds: where, why, and the value (cut short).
func schemaErrorText(err *openapi3.SchemaError) string {
	reason := err.Reason
	if reason == "" {
		reason = "does not match " + err.SchemaField
	}
	at := "at /" + strings.Join(err.JSONPointer(), "/") + ": " + reason
	if err.Origin != nil {
		// allOf, oneOf …: the subschema's error says what is wrong.
		return at + ": " + err.Origin.Error()
	}
	value, _ := json.Marshal(err.Value)
	if len(value) > 200 {
		value = append(value[:200], "…"...)
	}
	return fmt.Sprintf("%s (value %s)", at, value)
}

func (v *Validator) record(op, failure string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.checked++
	if op != "" {
		v.seen[op] = true
	}
	if failure == "" {
		return
	}
	if len(failure) > 2000 {
		failure = failure[:2000] + "…"
	}
	if v.failures[failure] == 0 {
		v.order = append(v.order, failure)
	}
	v.failures[failure]++
}

// Failures lists the exchanges that did not match the description, each
// once, with how often it happened, in the order first seen.
func (v *Validator) Failures() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]string, 0, len(v.order))
	for _, f := range v.order {
		if n := v.failures[f]; n > 1 {
			f += fmt.Sprintf(" (%d times)", n)
		}
		out = append(out, f)
	}
	return out
}

// Summary says how many exchanges were checked and which described
// operations they exercised.
func (v *Validator) Summary() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	all := Operations(v.doc)
	var missing []string
	for _, op := range all {
		if !v.seen[op] {
			missing = append(missing, op)
		}
	}
	s := fmt.Sprintf("openapi: %d API responses checked against api/openapi.yaml, %d failed; %d of %d operations exercised",
		v.checked, len(v.order), len(all)-len(missing), len(all))
	if len(missing) > 0 {
		s += " (not: " + strings.Join(missing, ", ") + ")"
	}
	return s
}
