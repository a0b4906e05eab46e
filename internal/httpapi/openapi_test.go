package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"

	"github.com/docuvault/docuvault/api"
	"github.com/docuvault/docuvault/internal/apispec"
	"github.com/docuvault/docuvault/internal/httpapi"
)

// TestMain validates every exchange the tests have with the API (through
// http.DefaultTransport) against api/openapi.yaml; a response that does
// not match fails the run.
func TestMain(m *testing.M) {
	// Tests send requests to acting servers without a token
	// (principal_test.go).
	http.DefaultClient.Transport = placeholderBearer{}
	os.Exit(apispec.Main(m))
}

// routedOperations walks the API's router and lists its routes as
// "METHOD /path".
func routedOperations(t *testing.T) []string {
	t.Helper()
	h := httpapi.NewActing(httpapi.Deps{Metrics: http.NotFoundHandler()})
	routes, ok := h.(chi.Routes)
	if !ok {
		t.Fatalf("httpapi.New returned %T, not a chi router", h)
	}
	var ops []string
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		ops = append(ops, method+" "+strings.TrimSuffix(route, "/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ops)
	return slices.Compact(ops)
}

// TestOpenAPIDescribesEveryRoute: api/openapi.yaml is a valid OpenAPI
// document and lists exactly the operations the router serves.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc, err := apispec.Load()
	if err != nil {
		t.Fatal(err)
	}
	described := apispec.Operations(doc)
	routed := routedOperations(t)
	if len(routed) < 20 {
		t.Fatalf("walked only %d routes: %v", len(routed), routed)
	}
	for _, op := range routed {
		if !slices.Contains(described, op) {
			t.Errorf("%s is routed but not in api/openapi.yaml", op)
		}
	}
	for _, op := range described {
		if !slices.Contains(routed, op) {
			t.Errorf("%s is in api/openapi.yaml but not routed", op)
		}
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s has no operationId", method, path)
			}
		}
	}
}

// TestOpenAPIDescribesEveryProblemType: the Problem schema's type enum is
// exactly the problem types the code writes (problem.New / apiError typ /
// badRequest in internal/httpapi and internal/health).
func TestOpenAPIDescribesEveryProblemType(t *testing.T) {
	doc, err := apispec.Load()
	if err != nil {
		t.Fatal(err)
	}
	var described []string
	for _, v := range doc.Components.Schemas["Problem"].Value.Properties["type"].Value.Enum {
		described = append(described, strings.TrimPrefix(v.(string), "https://docuvault.dev/problems/"))
	}
	written := problemTypesInCode(t, "*.go", "../health/*.go")
	for _, typ := range written {
		if !slices.Contains(described, typ) {
			t.Errorf("problem type %q is written by the code but not in api/openapi.yaml", typ)
		}
	}
	for _, typ := range described {
		if !slices.Contains(written, typ) {
			t.Errorf("problem type %q is in api/openapi.yaml but nothing writes it", typ)
		}
	}
}

// problemTypeRE finds a problem type name where the code writes one:
// after an http.Status constant (problem.New, errorTable), after typ: (an
// apiError) and as badRequest's first argument.
var problemTypeRE = regexp.MustCompile(`http\.Status\w+,\s*"([a-z-]+)"|typ:\s*"([a-z-]+)"|badRequest\("([a-z-]+)"`)

// problemTypesInCode finds the problem type names in the non-test Go files
// matching globs: the string after problem.New(status, , after typ: and
// badRequest's first argument.
func problemTypesInCode(t *testing.T, globs ...string) []string {
	t.Helper()
	var types []string
	for _, glob := range globs {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range problemTypeRE.FindAllStringSubmatch(string(src), -1) {
				types = append(types, m[1]+m[2]+m[3])
			}
		}
	}
	slices.Sort(types)
	return slices.Compact(types)
}

// TestServesOpenAPI: GET /api/v1/openapi.yaml answers the embedded file
// as YAML.
func TestServesOpenAPI(t *testing.T) {
	t.Parallel()
	// The handler uses no dependency.
	srv := httptest.NewServer(httpapi.NewActing(httpapi.Deps{Metrics: http.NotFoundHandler()}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/api/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != api.SpecContentType {
		t.Fatalf("GET /api/v1/openapi.yaml: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if string(body) != string(api.Spec) {
		t.Errorf("served %d bytes, not the embedded description (%d bytes)", len(body), len(api.Spec))
	}
	if _, err := openapi3.NewLoader().LoadFromData(body); err != nil {
		t.Errorf("served description does not load: %v", err)
	}
}
