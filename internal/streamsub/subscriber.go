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
//     acknowledgements before it returns;
//   - a subscription first hands out the entries still pending with its
//     consumer name (its previous run's), in stream order, then new ones.
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
	// looked at (default 5s; ClaimBatchSize at a time, default 100).
	// ShouldClaim decides whether this consumer takes over one pending
	// with another consumer (nil: every one idle that long). Its own that
	// it does not hold (a read whose reply was lost) it always takes back;
	// its previous run's it reads first, at once.
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
		slots: make(chan struct{}, s.cfg.Concurrency), acks: make(chan string, 4*s.cfg.Concurrency+s.cfg.Prefetch),
		abandon: make(chan struct{}), held: map[string]bool{}}
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
	// acks takes the ids of acked entries to the acker; abandon is
	// closed when Close stops waiting for the acker.
	acks    chan string
	abandon chan struct{}
	// inFlight tracks the messages handed out.
	inFlight sync.WaitGroup

	// held are the entries this subscription read and has not acked
	// (read ahead or in flight). Its own pending entries that are not
	// held (a read whose reply was lost, or the previous run's) are taken
	// back by the claim loop.
	heldMu sync.Mutex
	held   map[string]bool
}

func (c *consumption) release(id string) {
	c.heldMu.Lock()
	delete(c.held, id)
	c.heldMu.Unlock()
}

func (c *consumption) holds(id string) bool {
	c.heldMu.Lock()
	defer c.heldMu.Unlock()
	return c.held[id]
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
		c.acker(stopCtx)
	}()

	// This consumer's own pending entries (its previous run's) first, in
	// stream order; then new ones, and the claimed ones as they come.
	var bg sync.WaitGroup
	entries := make(chan redis.XMessage)
	bg.Add(1)
	go func() {
		defer bg.Done()
		if !c.readOwnPending(stopCtx, entries) {
			return
		}
		bg.Add(1)
		go func() {
			defer bg.Done()
			c.claimLoop(stopCtx, entries)
		}()
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
		close(c.abandon) // and acks the acker cannot take now are dropped
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
				select {
				case c.acks <- xm.ID:
				case <-c.abandon: // closing with Redis unreachable: stays pending
				}
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
// every id that arrived meanwhile. Once stop ends, it no longer retries
// for long.
func (c *consumption) acker(stop context.Context) {
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
		c.xack(stop, ids)
		for _, id := range ids {
			c.release(id)
		}
	}
}

// xack acknowledges ids, retrying for a while (a few seconds once stop
// ended): an ack lost here only means a redelivery, which every handler
// tolerates.
func (c *consumption) xack(stop context.Context, ids []string) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.s.cfg.Client.XAck(ctx, c.stream, c.s.cfg.Group, ids...).Err()
		cancel()
		if err == nil {
			return
		}
		if attempt >= 19 || (stop.Err() != nil && attempt >= 1) {
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
		if !c.pass(ctx, xss, entries) {
			return
		}
	}
}

// pass holds the entries of xss and passes them on in order: false when
// ctx ended first (the rest stays pending). All are held before the first
// is passed on, so that the claim loop never takes back one that is
// merely waiting its turn; one held already (claimed while on its way) is
// not passed on twice. Entries deleted from the stream while pending
// (trimmed) have no values: they are acknowledged, as there is nothing to
// hand out (the sweeps re-drive what they carried).
func (c *consumption) pass(ctx context.Context, xss []redis.XStream, entries chan<- redis.XMessage) bool {
	var gone []string
	var next []redis.XMessage
	c.heldMu.Lock()
	for _, xs := range xss {
		for _, xm := range xs.Messages {
			switch {
			case xm.Values == nil:
				gone = append(gone, xm.ID)
			case !c.held[xm.ID]:
				c.held[xm.ID] = true
				next = append(next, xm)
			}
		}
	}
	c.heldMu.Unlock()
	if len(gone) > 0 {
		c.xack(ctx, gone)
	}
	for _, xm := range next {
		select {
		case entries <- xm:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// readOwnPending passes on the entries pending with this consumer (its
// previous run's), oldest first: false when ctx ended first.
func (c *consumption) readOwnPending(ctx context.Context, entries chan<- redis.XMessage) bool {
	cfg := c.s.cfg
	after := "0"
	for ctx.Err() == nil {
		xss, err := cfg.Client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: cfg.Group, Consumer: cfg.Consumer, Streams: []string{c.stream, after},
			Count: int64(cfg.Prefetch), Block: -1,
		}).Result()
		if errors.Is(err, redis.Nil) || (err == nil && (len(xss) == 0 || len(xss[0].Messages) == 0)) {
			return true
		}
		if err != nil {
			// The claim loop takes them back later.
			c.s.log.Warn("read own pending entries", "stream", c.stream, "err", err)
			return ctx.Err() == nil
		}
		if !c.pass(ctx, xss, entries) {
			return false
		}
		msgs := xss[0].Messages
		after = msgs[len(msgs)-1].ID
	}
	return false
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
			own := p.Consumer == cfg.Consumer
			if (own && !c.holds(p.ID)) || (!own && (cfg.ShouldClaim == nil || cfg.ShouldClaim(p))) {
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
			if !c.pass(ctx, []redis.XStream{{Stream: c.stream, Messages: claimed}}, entries) {
				return
			}
		}
		if int64(len(pending)) < cfg.ClaimBatchSize {
			return
		}
		start = "(" + pending[len(pending)-1].ID
	}
}
