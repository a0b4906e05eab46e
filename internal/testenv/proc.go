package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// RunFunc is a binary's run function.
type RunFunc func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error

// Proc is a binary's run function running in the test process, as `make
// run` would run the binary, with its log captured.
type Proc struct {
	t      testing.TB
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	out    *SyncBuffer
}

// Start runs fn with args and env until Stop or the end of the test.
func Start(t testing.TB, fn RunFunc, args []string, env Env) *Proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proc{t: t, cancel: cancel, done: make(chan struct{}), out: &SyncBuffer{}}
	go func() {
		defer close(p.done)
		p.err = fn(ctx, args, env.Getenv, p.out)
	}()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Addr waits (bounded) for the process to log that server name listens
// and returns its address.
func (p *Proc) Addr(name string) string {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, rec := range p.Records() {
			if rec["msg"] == "listening" && rec["server"] == name {
				return rec["addr"].(string)
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("process exited before listening: %v\nlog:\n%s", p.err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("server %s did not start listening within 30 s; log:\n%s", name, p.out.String())
	return ""
}

// Stop cancels the process's context (as SIGTERM does) and returns what
// run returned. It fails the test if run does not return within 30 s.
func (p *Proc) Stop() error {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("process did not stop within 30 s of cancellation")
	}
	return p.err
}

// Log is everything the process logged so far.
func (p *Proc) Log() string { return p.out.String() }

// Records parses the JSON log lines.
func (p *Proc) Records() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(p.out.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// SyncBuffer is a bytes.Buffer safe for concurrent use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
