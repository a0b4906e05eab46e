package apispec

import (
	"fmt"
	"net/http"
	"os"
	"testing"
)

// Main is a TestMain body: it makes http.DefaultTransport (so
// http.DefaultClient, http.Get, http.Post …) validate every exchange with
// the API (Validator.Transport), runs the tests, and returns their exit
// code, or 1 when any exchange did not match the description, after
// listing those on stderr. With -v it also prints Summary.
//
// Clients with a Transport of their own are not validated.
func Main(m *testing.M) int {
	v, err := NewValidator()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	http.DefaultTransport = v.Transport(http.DefaultTransport)
	code := m.Run()
	if testing.Verbose() {
		fmt.Println(v.Summary())
	}
	if failures := v.Failures(); len(failures) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d API exchanges do not match api/openapi.yaml:\n", len(failures))
		for _, f := range failures {
			fmt.Fprintln(os.Stderr, "  "+f)
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}
