package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
)

const replayUsage = `usage: relay replay [--since T] [--until T] [--document ID] [--type TYPE]
                    [--actor system|anonymous|user|ID] [--correlation-id ID] [--to-stream NAME]
                    [--batch N (default 20000)]

Re-emits recorded events from the audit log, oldest row first, with their
original ids: as JSON lines on stdout (the envelope, one per line, plus
request_id and traceparent when recorded), or published to the stream
NAME, which must not be a production stream. T is
RFC 3339 (2026-05-01T00:00:00Z) or an age (90m, 2h, 7d). Progress goes to
stderr. Settings: DATABASE_URL, and REDIS_URL with --to-stream.
`

// metaReplayed is the metadata key that marks a replayed message.
const metaReplayed = "replayed"

// replayBatch is how many audit rows one query reads (--batch).
const replayBatch = 20000

// replayOptions is a parsed replay command line.
type replayOptions struct {
	filter   store.AuditFilter
	toStream string
	envFile  string
	batch    int
}

// productionStreams are the streams replay refuses to write to: consumer
// groups read them and would act on the replayed events again.
var productionStreams = append(slices.Clone(events.Streams), "docuvault.dead_letter")

func parseReplay(args []string, now time.Time) (replayOptions, error) {
	var o replayOptions
	fs := flag.NewFlagSet("relay replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	since := fs.String("since", "", "")
	until := fs.String("until", "", "")
	document := fs.String("document", "", "")
	fs.StringVar(&o.filter.Type, "type", "", "")
	actor := fs.String("actor", "", "")
	correlation := fs.String("correlation-id", "", "")
	fs.StringVar(&o.toStream, "to-stream", "", "")
	fs.StringVar(&o.envFile, "env-file", "", "")
	fs.IntVar(&o.batch, "batch", replayBatch, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("replay: %w", err)
	}
	if o.batch < 1 || o.batch > 100_000 {
		return o, fmt.Errorf("--batch %d must be from 1 to 100000", o.batch)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("replay: unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.filter.Since, err = parseTime("--since", *since, now); err != nil {
		return o, err
	}
	if o.filter.Until, err = parseTime("--until", *until, now); err != nil {
		return o, err
	}
	if !o.filter.Since.IsZero() && !o.filter.Until.IsZero() && !o.filter.Since.Before(o.filter.Until) {
		return o, fmt.Errorf("--until %s is not after --since %s", o.filter.Until.Format(time.RFC3339), o.filter.Since.Format(time.RFC3339))
	}
	if o.filter.AggregateID, err = optionalID("--document", *document); err != nil {
		return o, err
	}
	if o.filter.CorrelationID, err = optionalID("--correlation-id", *correlation); err != nil {
		return o, err
	}
	switch *actor {
	case "":
	case "anonymous", "user", "system":
		o.filter.ActorType = *actor
	default:
		if o.filter.ActorID, err = optionalID("--actor", *actor); err != nil {
			return o, errors.New("--actor must be anonymous, user, system or a UUID")
		}
	}
	if o.toStream != "" && slices.Contains(productionStreams, o.toStream) {
		return o, fmt.Errorf("--to-stream %s is a production stream; name a stream of your own, such as debug.replay", o.toStream)
	}
	return o, nil
}

// parseTime reads an RFC 3339 time or an age before now: a Go duration
// (90m, 2h30m) or a number of days (7d).
func parseTime(name, raw string, now time.Time) (time.Time, error) {
	if raw == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
		return t, nil
	}
	var age time.Duration
	var err error
	if days, ok := strings.CutSuffix(raw, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		age = time.Duration(n) * 24 * time.Hour
	} else {
		age, err = time.ParseDuration(raw)
	}
	if err != nil || age <= 0 {
		return time.Time{}, fmt.Errorf("%s %q is neither an RFC 3339 time nor a positive age such as 2h or 7d", name, raw)
	}
	return now.Add(-age), nil
}

func optionalID(name, raw string) (*uuid.UUID, error) {
	if raw == "" {
		return nil, nil
	}
	id, err := uuid.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s %q is not a UUID", name, raw)
	}
	return &id, nil
}

// replay runs `relay replay`: it reads the audit log in batches and writes
// each batch to stdout or the debug stream before reading the next, so
// memory stays bounded by one batch. Cancelling ctx stops it between (or
// during) batches with a message on stderr and no error: everything
// reported as replayed was written.
func replay(ctx context.Context, global, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseReplay(args, time.Now())
	if errors.Is(err, flag.ErrHelp) {
		_, _ = io.WriteString(stdout, replayUsage)
		return nil
	}
	if err != nil {
		return err
	}
	src, err := config.LoadCommand("relay", global, o.envFile, getenv, stderr)
	if err != nil {
		return err
	}
	dbCfg, err := config.Database(src, "DATABASE_URL")
	if err != nil {
		return err
	}
	var pub *relay.WatermillPublisher
	if o.toStream != "" {
		opts, err := config.Redis(src)
		if err != nil {
			return err
		}
		rdb := redis.NewClient(opts)
		if pub, err = relay.NewWatermillPublisher(rdb, relay.WatermillPublisherConfig{CloseClient: true}); err != nil {
			return err
		}
		defer pub.Close()
	}
	pool, err := store.Open(ctx, dbCfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer pool.Close()

	out := bufio.NewWriterSize(stdout, 64<<10)
	p := progress{w: stderr, last: time.Now()}
	// The next batch is read while this one is written: PostgreSQL and
	// the encoding run at the same time.
	type fetched struct {
		batch []store.AuditEvent
		err   error
	}
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	batches := make(chan fetched, 1)
	go func() {
		defer close(batches)
		var after int64
		for {
			batch, err := store.AuditEvents(fetchCtx, pool, o.filter, after, o.batch)
			select {
			case batches <- fetched{batch, err}:
			case <-fetchCtx.Done():
				return
			}
			if err != nil || len(batch) == 0 {
				return
			}
			after = batch[len(batch)-1].Seq
		}
	}()
	for {
		if ctx.Err() != nil {
			p.interrupted()
			return nil
		}
		f, ok := <-batches
		if !ok {
			p.interrupted()
			return nil
		}
		batch, err := f.batch, f.err
		if err != nil {
			if ctx.Err() != nil {
				p.interrupted()
				return nil
			}
			return err
		}
		if len(batch) == 0 {
			break
		}
		if pub != nil {
			err = publishReplay(ctx, pub, o.toStream, batch)
		} else {
			err = writeLines(out, batch)
		}
		if err != nil {
			if ctx.Err() != nil {
				// Part of the batch may have been published; report only
				// what is known to be.
				p.interrupted()
				return nil
			}
			return err
		}
		p.add(len(batch), batch[len(batch)-1].Event.OccurredAt)
	}
	fmt.Fprintf(stderr, "replayed %d events\n", p.n)
	return nil
}

// replayLine is one line of replay's output: the envelope, plus the
// request id and traceparent of its audit row when it has them (they are
// stream metadata, not envelope members).
type replayLine struct {
	events.Envelope
	RequestID   string `json:"request_id,omitempty"`
	Traceparent string `json:"traceparent,omitempty"`
}

// writeLines writes each event as one JSON line and flushes, so a
// consumer of the pipe sees whole batches.
func writeLines(out *bufio.Writer, batch []store.AuditEvent) error {
	for _, a := range batch {
		line, err := json.Marshal(replayLine{Envelope: a.Event, RequestID: a.RequestID, Traceparent: a.Traceparent})
		if err != nil {
			return fmt.Errorf("encode event %s: %w", a.Event.ID, err)
		}
		_, _ = out.Write(line)
		_ = out.WriteByte('\n')
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
}

// publishReplay publishes batch to stream as the relay would (message UUID
// the event id, payload the envelope, the same metadata) plus the replayed
// marker.
func publishReplay(ctx context.Context, pub *relay.WatermillPublisher, stream string, batch []store.AuditEvent) error {
	entries := make([]relay.Entry, len(batch))
	for i, a := range batch {
		ev := a.Event
		payload, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", ev.ID, err)
		}
		msg := message.NewMessage(ev.ID.String(), payload)
		msg.Metadata.Set(events.MetaType, ev.Type)
		msg.Metadata.Set(events.MetaVersion, strconv.Itoa(ev.Version))
		msg.Metadata.Set(events.MetaAggregateID, ev.AggregateID.String())
		if ev.CorrelationID != uuid.Nil {
			msg.Metadata.Set(events.MetaCorrelationID, ev.CorrelationID.String())
		}
		if a.RequestID != "" {
			msg.Metadata.Set(events.MetaRequestID, a.RequestID)
		}
		if a.Traceparent != "" {
			msg.Metadata.Set(events.MetaTraceparent, a.Traceparent)
		}
		msg.Metadata.Set(metaReplayed, "true")
		entries[i] = relay.Entry{Stream: stream, Message: msg}
	}
	if err := pub.PublishEntries(ctx, entries); err != nil {
		return fmt.Errorf("REDIS_URL: publish to %s: %w", stream, err)
	}
	return nil
}

// progress reports on stderr about once a second or every 100,000 events.
type progress struct {
	w      io.Writer
	n      int
	lastAt time.Time // occurred_at of the last event replayed
	last   time.Time // when the last line was written
}

const progressEvery = 100_000

func (p *progress) add(n int, lastAt time.Time) {
	before := p.n
	p.n += n
	p.lastAt = lastAt
	if time.Since(p.last) >= time.Second || p.n/progressEvery > before/progressEvery {
		fmt.Fprintf(p.w, "replayed %d events, last at %s\n", p.n, lastAt.Format(time.RFC3339Nano))
		p.last = time.Now()
	}
}

func (p *progress) interrupted() {
	if p.n == 0 {
		fmt.Fprintln(p.w, "replay interrupted: no events replayed")
		return
	}
	fmt.Fprintf(p.w, "replay interrupted: %d events replayed, last at %s\n", p.n, p.lastAt.Format(time.RFC3339Nano))
}
