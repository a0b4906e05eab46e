package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
)

// TrimConfig is the streams' retention rule: an entry is removed once it is
// older than Retention AND every consumer group of its stream has
// acknowledged it (delivered to the group and no longer pending). An entry
// a group has not yet read, or read and not acknowledged, is never
// trimmed, however old: trimming it would make Watermill's subscriber
// acknowledge it without handling it. Readers without a group (XREAD) keep
// Retention of history.
type TrimConfig struct {
	// Retention is the age below which entries are always kept (default 7
	// days).
	Retention time.Duration
	// Interval is how often the leader trims (default 1 minute).
	Interval time.Duration
}

func (c TrimConfig) withDefaults() TrimConfig {
	c.Retention = cmp.Or(c.Retention, 7*24*time.Hour)
	c.Interval = cmp.Or(c.Interval, time.Minute)
	return c
}

// Trimmer trims the streams the relay publishes to.
type Trimmer struct {
	Redis   redis.UniversalClient
	Config  TrimConfig
	Log     *slog.Logger
	Metrics *Metrics

	mu      sync.Mutex
	streams map[string]bool
	last    time.Time
}

// Track adds stream to the streams trimmed.
func (t *Trimmer) Track(stream string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.streams == nil {
		t.streams = map[string]bool{}
	}
	t.streams[stream] = true
}

// MaybeTrim trims every known stream when Interval has passed since the
// last time. Errors are logged: trimming is housekeeping.
func (t *Trimmer) MaybeTrim(ctx context.Context) {
	cfg := t.Config.withDefaults()
	t.mu.Lock()
	if time.Since(t.last) < cfg.Interval {
		t.mu.Unlock()
		return
	}
	t.last = time.Now()
	streams := slices.Collect(func(yield func(string) bool) {
		for s := range t.streams {
			if !yield(s) {
				return
			}
		}
	})
	t.mu.Unlock()
	for _, s := range events.Streams {
		if !slices.Contains(streams, s) {
			streams = append(streams, s)
		}
	}
	for _, s := range streams {
		n, err := t.Trim(ctx, s)
		if err != nil {
			if ctx.Err() == nil {
				t.Log.Warn("trim stream", "stream", s, "err", err)
			}
			continue
		}
		if n > 0 {
			t.Metrics.trimmed(s, n)
			t.Log.Debug("trimmed stream", "stream", s, "entries", n)
		}
	}
}

// Trim removes the entries of stream that the retention rule allows and
// returns how many it removed.
func (t *Trimmer) Trim(ctx context.Context, stream string) (int64, error) {
	cfg := t.Config.withDefaults()
	bound := streamID{ms: uint64(time.Now().Add(-cfg.Retention).UnixMilli())}
	groups, err := t.Redis.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if isNoSuchKey(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("groups: %w", err)
	}
	for _, g := range groups {
		// Everything up to the last delivered id is acknowledged except the
		// pending entries, the lowest of which bounds what may go.
		safe, err := parseStreamID(g.LastDeliveredID)
		if err != nil {
			return 0, err
		}
		safe = safe.next()
		if g.Pending > 0 {
			p, err := t.Redis.XPending(ctx, stream, g.Name).Result()
			if err != nil {
				return 0, fmt.Errorf("pending of group %s: %w", g.Name, err)
			}
			if p.Count > 0 {
				if safe, err = parseStreamID(p.Lower); err != nil {
					return 0, err
				}
			}
		}
		if safe.less(bound) {
			bound = safe
		}
	}
	// MINID removes entries with ids strictly below bound.
	return t.Redis.XTrimMinID(ctx, stream, bound.String()).Result()
}

func isNoSuchKey(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && strings.Contains(strings.ToLower(err.Error()), "no such key")
}

// streamID is a Redis stream entry id, milliseconds-sequence.
type streamID struct{ ms, seq uint64 }

func parseStreamID(s string) (streamID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return streamID{}, fmt.Errorf("bad stream id %q", s)
	}
	return streamID{a, b}, nil
}

func (id streamID) less(o streamID) bool {
	return id.ms < o.ms || (id.ms == o.ms && id.seq < o.seq)
}

func (id streamID) next() streamID {
	if id.seq == ^uint64(0) {
		return streamID{ms: id.ms + 1}
	}
	return streamID{id.ms, id.seq + 1}
}

func (id streamID) String() string { return fmt.Sprintf("%d-%d", id.ms, id.seq) }
