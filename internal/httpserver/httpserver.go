// Package httpserver runs an HTTP server for the lifetime of a context and
// shuts it down gracefully.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout bounds how long in-flight requests may finish after the
// context is cancelled.
const ShutdownTimeout = 30 * time.Second

// Limits of every server New makes. A request's body and its response
// have no server-wide deadline: a large upload or download over a slow
// link may take hours. The handler sets them per route (internal/httpapi
// bounds small bodies and responses, and cuts uploads and downloads that
// stall).
const (
	// ReadHeaderTimeout bounds the time a client takes to send the request
	// line and headers; a client that is slower is disconnected without an
	// answer (net/http's behaviour).
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout is how long a kept-alive connection may wait for its next
	// request.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds the request line and headers; net/http answers
	// a larger header itself: 431, plain text, and closes the connection.
	MaxHeaderBytes = 64 << 10
)

// New returns the server Run serves h with: the limits above, errors of
// net/http logged as warnings, and requests whose context is not
// cancelled when ctx is (shutdown lets them finish).
func New(ctx context.Context, log *slog.Logger, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
}

// Run listens on addr and serves h until ctx is done, then stops accepting
// connections and waits up to ShutdownTimeout for in-flight requests. It logs
// the bound address (useful with port 0) as "listening" with key addr and
// the given name.
func Run(ctx context.Context, log *slog.Logger, name, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := New(ctx, log, h)
	log.Info("listening", "server", name, "addr", ln.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s server: %w", name, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("%s server shutdown: %w", name, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Start runs Run in the background and returns where its result arrives.
// When the server stops on its own (it could not listen), it calls cancel
// so that the rest of the process stops too.
func Start(ctx context.Context, cancel context.CancelFunc, log *slog.Logger, name, addr string, h http.Handler) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, log, name, addr, h)
		cancel()
	}()
	return done
}
