// Package streamsub is a Watermill subscriber on a Redis Streams consumer
// group that keeps watermill-redisstream's wire format and its consumer
// group semantics (stable consumer names, claiming the idle entries of
// consumers that died) but reads and acknowledges in batches and hands
// several messages to the router at once.
//
// The stock subscriber (redisstream v1.4.5) reads one entry per XREADGROUP
// and acknowledges each with its own XACK before it reads the next, so a
// subscription handles one message at a time and costs two round trips
// per message; its Close also drops the acknowledgement of a message in
// flight. Here:
//
//   - one XREADGROUP takes up to Prefetch entries;
//   - up to Concurrency messages are handed out unacknowledged at once
//     (the router handles each in its own goroutine);
//   - acknowledgements are sent as they come, those that arrive while an
//     XACK is on its way together in the next one;
//   - Close stops reading, lets the messages in flight finish (for at most
//     CloseWait, then cancels their contexts) and sends their
//     acknowledgements before it returns.
//
// A message nacked is handed out again after NackResendSleep (as the stock
// subscriber does; the router's retry and poison-queue middleware decide
// when to give up on it).
package streamsub

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// Config configures a Subscriber.
type Config struct {
	// Client is the subscriber's own: Close closes it.
	Client *redis.Client
	// Group and Consumer name the consumer group and this consumer in it.
	Group, Consumer string
	// Unmarshaller decodes entries (watermill-redisstream's wire format).
	// An entry it cannot decode is left pending, and logged.
	Unmarshaller redisstream.Unmarshaller

	// Concurrency is how many messages are handed out and not yet acked
	// at most (default 1: one at a time, in stream order).
	Concurrency int
	// Prefetch is how many entries one XREADGROUP takes at most (default
	// Concurrency).
	Prefetch int
	// BlockTime is how long a read waits for new entries (default 100ms).
	BlockTime time.Duration

	// ClaimInterval is how often pending entries idle for MinIdle are
	// looked at (default 5s); ShouldClaim decides whether this consumer
	// takes one over (nil: every one idle that long). ClaimBatchSize is
	// how many are looked at each time (default 100).
	ClaimInterval  time.Duration
	MinIdle        time.Duration
	ClaimBatchSize int64
	ShouldClaim    func(redis.XPendingExt) bool

	// ShouldStop decides whether a read error ends the subscription (nil:
	// none does; reads are retried after half a second).
	ShouldStop func(error) bool

	// NackResendSleep is how long a nacked message waits before it is
	// handed out again (default 500ms).
	NackResendSleep time.Duration
	// CloseWait is how long Close lets messages in flight finish (default
	// 20s).
	CloseWait time.Duration

	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.Prefetch <= 0 {
		c.Prefetch = c.Concurrency
	}
	if c.BlockTime <= 0 {
		c.BlockTime = 100 * time.Millisecond
	}
	if c.ClaimInterval <= 0 {
		c.ClaimInterval = 5 * time.Second
	}
	if c.MinIdle <= 0 {
		c.MinIdle = time.Minute
	}
	if c.ClaimBatchSize <= 0 {
		c.ClaimBatchSize = 100
	}
	if c.NackResendSleep <= 0 {
		c.NackResendSleep = 500 * time.Millisecond
	}
	if c.CloseWait <= 0 {
		c.CloseWait = 20 * time.Second
	}
	if c.Unmarshaller == nil {
		c.Unmarshaller = redisstream.DefaultMarshallerUnmarshaller{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Subscriber implements message.Subscriber on one consumer group.
type Subscriber struct {
	cfg     Config
	log     *slog.Logger
	closing chan struct{}
	subs    sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

// New returns a Subscriber.
func New(cfg Config) (*Subscriber, error) {
	if cfg.Client == nil || cfg.Group == "" || cfg.Consumer == "" {
		return nil, errors.New("streamsub: a client, a group and a consumer name are required")
	}
	cfg.setDefaults()
	return &Subscriber{cfg: cfg, log: cfg.Logger.With("group", cfg.Group, "consumer", cfg.Consumer),
		closing: make(chan struct{})}, nil
}

// Subscribe creates the group on stream if it does not exist (reading it
// from its start) and returns the messages of the group for this
// consumer: first the pending entries it may claim (those its previous
// run left, by ShouldClaim), then new ones, and claimed ones as they come.
// The channel is closed when ctx ends, Close is called or a read error
// ShouldStop ends the subscription, once the messages in flight finished.
func (s *Subscriber) Subscribe(ctx context.Context, stream string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("streamsub: subscriber closed")
	}
	err := s.cfg.Client.XGroupCreateMkStream(ctx, stream, s.cfg.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return nil, err
	}
	out := make(chan *message.Message)
	c := &consumption{s: s, stream: stream, out: out,
		slots: make(chan struct{}, s.cfg.Concurrency), acks: make(chan string, 4*s.cfg.Concurrency+s.cfg.Prefetch)}
	s.subs.Add(1)
	go func() {
		defer s.subs.Done()
		c.run(ctx)
	}()
	return out, nil
}

// Close ends every subscription (see Subscribe) and closes the client.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.subs.Wait()
	return s.cfg.Client.Close()
}

// consumption is one subscription.
type consumption struct {
	s      *Subscriber
	stream string
	out    chan *message.Message
	// slots holds a token per message handed out and not yet acked.
	slots chan struct{}
	// acks takes the ids of acked entries to the acker.
	acks chan string
	// inFlight tracks the messages handed out.
	inFlight sync.WaitGroup
}

func (c *consumption) run(ctx context.Context) {
	cfg := c.s.cfg
	// stop ends reading (and claiming); msgCtx, the messages' contexts,
	// outlive it by up to CloseWait.
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-c.s.closing:
			stop()
		case <-stopCtx.Done():
		}
	}()
	msgCtx, cancelMessages := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelMessages()

	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		c.acker()
	}()

	var bg sync.WaitGroup
	entries := make(chan redis.XMessage)
	bg.Add(1)
	go func() {
		defer bg.Done()
		c.claimLoop(stopCtx, entries)
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		c.readLoop(stopCtx, stop, entries)
	}()

	// Hand out what the readers deliver until they stop.
	readersDone := make(chan struct{})
	go func() { bg.Wait(); close(readersDone) }()
dispatch:
	for {
		select {
		case xm := <-entries:
			c.handOut(stopCtx, msgCtx, xm)
		case <-readersDone:
			break dispatch
		}
	}

	// Let the messages in flight finish, for at most CloseWait.
	finished := make(chan struct{})
	go func() { c.inFlight.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(cfg.CloseWait):
		c.s.log.Warn("messages still in flight when the subscription closed: handed back (their entries stay pending)", "stream", c.stream)
		cancelMessages()
		<-finished
	}
	close(c.acks)
	<-ackerDone
	close(c.out)
}

// handOut decodes xm and hands it out, in a slot, to the router: the slot
// is freed when it is acked (its id then goes to the acker) or when the
// subscription gives up on it.
func (c *consumption) handOut(stopCtx, msgCtx context.Context, xm redis.XMessage) {
	msg, err := c.s.cfg.Unmarshaller.Unmarshal(xm.Values)
	if err != nil {
		c.s.log.Error("stream entry cannot be decoded: left pending", "stream", c.stream, "entry", xm.ID, "err", err)
		return
	}
	select {
	case c.slots <- struct{}{}:
	case <-stopCtx.Done():
		return // still pending: a later run or another consumer takes it
	}
	c.inFlight.Add(1)
	go func() {
		defer c.inFlight.Done()
		defer func() { <-c.slots }()
		ctx, cancel := context.WithCancel(msgCtx)
		defer cancel()
		for {
			m := msg.Copy()
			m.SetContext(ctx)
			select {
			case c.out <- m:
			case <-stopCtx.Done():
				return // not handed out: still pending
			}
			select {
			case <-m.Acked():
				c.acks <- xm.ID
				return
			case <-m.Nacked():
			case <-ctx.Done():
				return // handed back at close: still pending
			}
			select {
			case <-time.After(c.s.cfg.NackResendSleep):
			case <-stopCtx.Done():
				return
			}
		}
	}()
}

// acker acknowledges acked entries until acks is closed: each XACK takes
// every id that arrived meanwhile.
func (c *consumption) acker() {
	const most = 512
	ids := make([]string, 0, most)
	for id := range c.acks {
		ids = append(ids[:0], id)
	more:
		for len(ids) < most {
			select {
			case id, ok := <-c.acks:
				if !ok {
					break more
				}
				ids = append(ids, id)
			default:
				break more
			}
		}
		c.xack(ids)
	}
}

// xack acknowledges ids, retrying for a while: an ack lost here only
// means a redelivery, which every handler tolerates.
func (c *consumption) xack(ids []string) {
	for attempt := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.s.cfg.Client.XAck(ctx, c.stream, c.s.cfg.Group, ids...).Err()
		cancel()
		if err == nil {
			return
		}
		if attempt == 19 {
			c.s.log.Error("acknowledge entries (they will be delivered again)", "stream", c.stream, "count", len(ids), "err", err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readLoop reads new entries for this consumer, up to Prefetch per read
// (the next read waits until they were all taken for handing out), until
// ctx ends or a read error ShouldStop (then stop).
func (c *consumption) readLoop(ctx context.Context, stop context.CancelFunc, entries chan<- redis.XMessage) {
	cfg := c.s.cfg
	for ctx.Err() == nil {
		xss, err := cfg.Client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: cfg.Group, Consumer: cfg.Consumer, Streams: []string{c.stream, ">"},
			Count: int64(cfg.Prefetch), Block: cfg.BlockTime,
		}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if cfg.ShouldStop != nil && cfg.ShouldStop(err) {
				c.s.log.Error("stopped reading", "stream", c.stream, "err", err)
				stop()
				return
			}
			c.s.log.Warn("read stream", "stream", c.stream, "err", err)
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		for _, xs := range xss {
			for _, xm := range xs.Messages {
				select {
				case entries <- xm:
				case <-ctx.Done():
					return // the rest stays pending
				}
			}
		}
	}
}

// claimLoop takes over, at once and then every ClaimInterval, the pending
// entries idle for MinIdle that ShouldClaim allows, until ctx ends.
func (c *consumption) claimLoop(ctx context.Context, entries chan<- redis.XMessage) {
	cfg := c.s.cfg
	tick := time.NewTicker(cfg.ClaimInterval)
	defer tick.Stop()
	for {
		c.claim(ctx, entries)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *consumption) claim(ctx context.Context, entries chan<- redis.XMessage) {
	cfg := c.s.cfg
	start := "-"
	for ctx.Err() == nil {
		pending, err := cfg.Client.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: c.stream, Group: cfg.Group, Idle: cfg.MinIdle, Start: start, End: "+", Count: cfg.ClaimBatchSize,
		}).Result()
		if err != nil {
			if ctx.Err() == nil {
				c.s.log.Warn("list pending entries", "stream", c.stream, "err", err)
			}
			return
		}
		var ids []string
		for _, p := range pending {
			if cfg.ShouldClaim == nil || cfg.ShouldClaim(p) {
				ids = append(ids, p.ID)
			}
		}
		if len(ids) > 0 {
			// MinIdle again: two consumers never claim one entry both.
			claimed, err := cfg.Client.XClaim(ctx, &redis.XClaimArgs{
				Stream: c.stream, Group: cfg.Group, Consumer: cfg.Consumer, MinIdle: cfg.MinIdle, Messages: ids,
			}).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				if ctx.Err() == nil {
					c.s.log.Warn("claim pending entries", "stream", c.stream, "err", err)
				}
				return
			}
			var gone []string
			for _, xm := range claimed {
				if xm.Values == nil {
					gone = append(gone, xm.ID)
				}
			}
			if len(gone) > 0 {
				// Deleted from the stream (trimmed) while pending: nothing
				// to hand out (the sweeps re-drive what they carried).
				c.xack(gone)
			}
			for _, xm := range claimed {
				if xm.Values == nil {
					continue
				}
				select {
				case entries <- xm:
				case <-ctx.Done():
					return
				}
			}
		}
		if int64(len(pending)) < cfg.ClaimBatchSize {
			return
		}
		start = "(" + pending[len(pending)-1].ID
	}
}
