package config

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/redis/go-redis/v9"
	"golang.org/x/term"
)

// Logger builds the process logger from LOG_LEVEL (debug, info, warn, error;
// default info) and LOG_FORMAT (json or text; default json, text when w is a
// terminal).
func Logger(src *Source, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if raw := src.Get("LOG_LEVEL"); raw != "" {
		if err := level.UnmarshalText([]byte(raw)); err != nil {
			return nil, errorf("LOG_LEVEL", "%q is not one of debug, info, warn, error", raw)
		}
	}
	format := src.Get("LOG_FORMAT")
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if err := OneOf("LOG_FORMAT", format, "json", "text"); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// RedisLogs sends go-redis's own messages (connection pool trouble, such as
// "failed to dial") to log at warn level instead of plain lines on stderr,
// so that logs stay one format. go-redis has one logger per process, set
// once: the first call wins (tests run several binaries in one process).
func RedisLogs(log *slog.Logger) {
	redisLogsOnce.Do(func() { redis.SetLogger(redisLogger{log.With("component", "go-redis")}) })
}

var redisLogsOnce sync.Once

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, fmt.Sprintf(format, v...))
}
