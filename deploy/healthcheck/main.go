// Command healthcheck is the container health probe of the DocuVault image.
// The image is distroless (no shell, curl or wget), so Docker Compose runs
// this instead:
//
//	healthcheck http://127.0.0.1:8080/readyz
//
// It sends one GET and exits 0 when the answer is 2xx, 1 otherwise (any
// other status, no answer within the timeout, or a bad command line), with
// one line on stderr saying why.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// timeout bounds the whole probe. It is below Compose's default
// healthcheck timeout (30s) and the file's own (5s), so the probe reports
// a slow dependency itself instead of being killed.
const timeout = 4 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run probes the URL in args and returns the exit code.
func run(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: healthcheck URL (exit 0 when GET URL answers 2xx)")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	// /readyz names the unreachable dependency in its body: keep a little
	// of it for `docker inspect`.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "healthcheck: %s: %s %s\n", args[0], resp.Status, body)
		return 1
	}
	return 0
}
