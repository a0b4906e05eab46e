// Command subscriber is an example DocuVault subscriber: it reads document
// events from Redis Streams with the stock Watermill redisstream subscriber,
// in a consumer group of its own, and prints one line per event.
//
//	go run ./examples/subscriber --group mine --types document.finalized
//
// It imports nothing from DocuVault: docs/events.md is the whole contract
// (stream names, the envelope, the metadata keys), so a subscriber in any
// team or repository can start from a copy of this file.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

const usage = `usage: subscriber [flags]

Prints DocuVault events read in a consumer group of its own, one line per
event (or the envelope as JSON with --json), and acknowledges every entry it
reads. Stops on SIGINT or SIGTERM. Flags:
`

// envelope is the part of the event envelope (docs/events.md) this example
// prints.
type envelope struct {
	Type          string         `json:"type"`
	OccurredAt    time.Time      `json:"occurred_at"`
	AggregateID   string         `json:"aggregate_id"`
	CorrelationID string         `json:"correlation_id"`
	Data          map[string]any `json:"data"`
}

// shownData are the data fields printed when an event has them.
var shownData = []string{"filename", "status", "reject_reason", "name", "provider", "operation", "error"}

// ackTimeout bounds the wait for an acknowledgement to reach Redis.
const ackTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "subscriber: "+err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	host, _ := os.Hostname()
	flags := flag.NewFlagSet("subscriber", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	redisURL := flags.String("redis", "", "Redis URL (default $REDIS_URL, else redis://127.0.0.1:6379/0)")
	group := flags.String("group", "example-subscriber", "consumer group: one per application, never DocuVault's own finalize or cloud-sync")
	consumer := flags.String("consumer", cmp.Or(host, "subscriber"), "consumer name in the group: stable across restarts, distinct per running instance")
	streams := flags.String("streams", "docuvault.documents", "comma-separated streams to read")
	types := flags.String("types", "", "comma-separated event types to print (default: all); others are acknowledged unprinted")
	asJSON := flags.Bool("json", false, "print each event's envelope as one JSON line")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			flags.SetOutput(stdout)
			fmt.Fprint(stdout, usage)
			flags.PrintDefaults()
			return nil
		}
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", flags.Arg(0))
	}
	opts, err := redis.ParseURL(cmp.Or(*redisURL, getenv("REDIS_URL"), "redis://127.0.0.1:6379/0"))
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // without the URL, which may hold a password
		}
		return fmt.Errorf("--redis or REDIS_URL: %w", err)
	}

	logLevel := new(slog.LevelVar)
	logLevel.Set(slog.LevelWarn) // Watermill's warnings and errors (such as Redis unreachable)
	logger := watermill.NewSlogLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})))
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        redis.NewClient(opts), // closed by sub.Close
		Unmarshaller:  redisstream.DefaultMarshallerUnmarshaller{},
		ConsumerGroup: *group, // created (from the stream's oldest entry) if missing
		Consumer:      *consumer,
		// Every read waits at most BlockTime, so Close does not wait on a
		// blocked XREADGROUP.
		DisableIndefiniteInitialBlock: true,
		// A group that vanished (Redis restarted empty) ends the
		// subscription instead of failing every read; restart to re-create it.
		ShouldStopOnReadErrors: func(err error) bool { return strings.HasPrefix(err.Error(), "NOGROUP") },
	}, logger)
	if err != nil {
		return err
	}
	defer func() {
		// Closing fails the reads in flight ("context canceled"), which
		// the subscriber logs as errors: nothing is wrong, so say nothing.
		logLevel.Set(slog.LevelError + 1)
		sub.Close()
	}()

	p := printer{out: stdout, asJSON: *asJSON}
	if *types != "" {
		p.types = strings.Split(*types, ",")
	}
	// The subscriptions get a context that the signal does not cancel: the
	// loops below stop taking messages on the signal, and sub.Close (after
	// them) ends the subscriptions. Cancelling a subscription's context
	// instead could drop the acknowledgement of the message just printed.
	subCtx := context.WithoutCancel(ctx)
	ctx, cancel := context.WithCancel(ctx) // a failing stream stops them all
	defer cancel()
	names := strings.Split(*streams, ",")
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, stream := range names {
		msgs, err := sub.Subscribe(subCtx, stream)
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", stream, err)
		}
		wg.Go(func() {
			if errs[i] = p.consume(ctx, stream, msgs); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// printer prints the events of one or more streams.
type printer struct {
	out    io.Writer
	asJSON bool
	types  []string // empty: all
	mu     sync.Mutex
}

// consume prints and acknowledges the messages of one stream, in stream
// order, until ctx is cancelled.
func (p *printer) consume(ctx context.Context, stream string, msgs <-chan *message.Message) error {
	for {
		var msg *message.Message
		select {
		case <-ctx.Done():
			return nil
		case msg = <-msgs:
		}
		if msg == nil {
			return fmt.Errorf("subscription to %s ended (see the log above)", stream)
		}
		// Filter on the metadata: no need to parse the payload of an event
		// that is not printed.
		if len(p.types) == 0 || slices.Contains(p.types, msg.Metadata.Get("type")) {
			line, err := p.format(msg)
			if err != nil {
				// An event this program cannot read is skipped (it is
				// still in DocuVault's audit log).
				fmt.Fprintf(os.Stderr, "subscriber: %s: skipping message %s: %v\n", stream, msg.UUID, err)
			} else if err := p.write(line); err != nil {
				return err // not acknowledged: delivered again later
			}
		}
		msg.Ack()
		// Ack only tells the subscriber: it sends XACK afterwards, then
		// cancels the message's context. Wait for that, or a stop right
		// now would close the subscriber before the XACK, and the entry
		// would stay pending (and be delivered again).
		select {
		case <-msg.Context().Done():
		case <-time.After(ackTimeout):
			fmt.Fprintf(os.Stderr, "subscriber: %s: message %s not acknowledged within %s\n", stream, msg.UUID, ackTimeout)
		}
	}
}

// format returns the line printed for msg: its envelope (--json) or a
// summary.
func (p *printer) format(msg *message.Message) ([]byte, error) {
	var line bytes.Buffer
	if p.asJSON {
		if err := json.Compact(&line, msg.Payload); err != nil {
			return nil, err
		}
	} else {
		var ev envelope
		if err := json.Unmarshal(msg.Payload, &ev); err != nil {
			return nil, err
		}
		fmt.Fprintf(&line, "%s %s %s correlation=%s", ev.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z"),
			ev.Type, ev.AggregateID, ev.CorrelationID)
		for _, key := range shownData {
			switch v := ev.Data[key].(type) {
			case nil:
			case string:
				if strings.ContainsAny(v, " \t\n\"=") || v == "" {
					fmt.Fprintf(&line, " %s=%q", key, v)
				} else {
					fmt.Fprintf(&line, " %s=%s", key, v)
				}
			default:
				fmt.Fprintf(&line, " %s=%v", key, v)
			}
		}
	}
	line.WriteByte('\n')
	return line.Bytes(), nil
}

// write prints one line; the streams' loops share the output.
func (p *printer) write(line []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.out.Write(line)
	return err
}
