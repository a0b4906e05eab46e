package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/config"
)

// Defaults and limits of `consumer dead-letters`.
const (
	defaultListLimit = 100 // entries `list` shows without --limit
	reasonWidth      = 100 // characters of a reason `list` shows in text mode
	deadLetterPage   = 500 // entries read per XRANGE by --all
)

// poisonKeys are the metadata keys Watermill's PoisonQueue middleware adds
// to a message it dead-letters. A re-driven message goes back without them.
var poisonKeys = []string{
	middleware.ReasonForPoisonedKey,
	middleware.PoisonedTopicKey,
	middleware.PoisonedHandlerKey,
	middleware.PoisonedSubscriberKey,
}

// entryID is a complete Redis stream entry id, as `list` prints it.
var entryID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// deadLetters runs `consumer dead-letters list|retry|drop`, an operator's
// tool for DeadLetterStream. args are the words after "dead-letters"; src
// holds the settings config.Load read. It needs REDIS_URL only, so it runs
// from any host that reaches Redis.
//
// It returns an error, naming the problem in one line, for bad usage, an
// unreachable Redis, ids that are not in the stream (nothing is changed
// then), entries that cannot be re-driven, and Redis failures midway (what
// was done before is printed).
func deadLetters(ctx context.Context, args []string, src *config.Source, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("dead-letters: missing action: list, retry or drop (see `consumer help`)")
	}
	action := args[0]
	flags := flag.NewFlagSet("dead-letters "+action, flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	envFile := flags.String("env-file", "", "")
	var limit int64
	var asJSON, all bool
	switch action {
	case "list":
		flags.Int64Var(&limit, "limit", defaultListLimit, "")
		flags.BoolVar(&asJSON, "json", false, "")
	case "retry", "drop":
		flags.BoolVar(&all, "all", false, "")
	case "help", "-h", "-help", "--help":
		_, _ = io.WriteString(stdout, usage)
		return nil
	default:
		return fmt.Errorf("dead-letters: unknown action %q: want list, retry or drop (see `consumer help`)", action)
	}
	ids, err := parseInterleaved(flags, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		_, _ = io.WriteString(stdout, usage)
		return nil
	}
	if err != nil {
		return fmt.Errorf("dead-letters %s: %v (see `consumer help`)", action, err)
	}
	switch {
	case action == "list" && len(ids) > 0:
		return fmt.Errorf("dead-letters list: unexpected argument %q (see `consumer help`)", ids[0])
	case action == "list" && limit <= 0:
		return fmt.Errorf("dead-letters list: --limit %d: want a whole number greater than zero", limit)
	case action != "list" && all && len(ids) > 0:
		return fmt.Errorf("dead-letters %s: give entry ids or --all, not both", action)
	case action != "list" && !all && len(ids) == 0:
		return fmt.Errorf("dead-letters %s: name the entries (ids as `dead-letters list` shows them), or --all for every one", action)
	}
	for _, id := range ids {
		if !entryID.MatchString(id) {
			return fmt.Errorf("dead-letters %s: %q is not a stream entry id (such as 1732702502123-0)", action, id)
		}
	}

	if *envFile != "" {
		// Given after the action, where config.Load does not look.
		if _, _, src, err = config.Load("consumer", []string{"--env-file", *envFile}, getenv); err != nil {
			return err
		}
	}
	for _, w := range src.Warnings {
		// stdout is for the listing; keep warnings out of pipes.
		fmt.Fprintln(os.Stderr, "consumer: warning: "+w)
	}
	opts, err := config.Redis(src)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("REDIS_URL: cannot reach %s (db %d): %s", opts.Addr, opts.DB, config.Redact(err.Error(), opts.Password))
	}

	switch {
	case action == "list":
		return listDeadLetters(ctx, rdb, stdout, limit, asJSON)
	case all:
		return allDeadLetters(ctx, rdb, stdout, action)
	default:
		return namedDeadLetters(ctx, rdb, stdout, action, ids)
	}
}

// parseInterleaved parses flags placed anywhere among the positional
// arguments (`retry 1-0 --env-file x 2-0`), which flag.Parse alone stops at.
func parseInterleaved(flags *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := flags.Parse(args); err != nil {
			return nil, err
		}
		args = flags.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// deadLetter is one entry of DeadLetterStream.
type deadLetter struct {
	ID string
	// Msg is the message as dead-lettered, poison keys included; nil when
	// the entry is malformed.
	Msg *message.Message
	// Malformed says why the entry is not a Watermill message; Fields then
	// holds its raw fields.
	Malformed error
	Fields    map[string]any
}

func decodeDeadLetter(x redis.XMessage) (dl deadLetter) {
	dl = deadLetter{ID: x.ID}
	defer func() {
		// The unmarshaller asserts its fields are strings; anything else
		// (not written by go-redis) is malformed, not a crash.
		if r := recover(); r != nil {
			dl = deadLetter{ID: x.ID, Malformed: fmt.Errorf("undecodable fields: %v", r), Fields: x.Values}
		}
	}()
	msg, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(x.Values)
	switch {
	case err != nil:
		return deadLetter{ID: x.ID, Malformed: err, Fields: x.Values}
	case msg.UUID == "":
		return deadLetter{ID: x.ID, Malformed: errors.New("empty message uuid"), Fields: x.Values}
	}
	dl.Msg = msg
	return dl
}

// Time is when the entry was dead-lettered (its id's milliseconds).
func (d deadLetter) Time() time.Time {
	ms, _, _ := strings.Cut(d.ID, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n).UTC()
}

// meta returns the metadata value of key, "" for a malformed entry.
func (d deadLetter) meta(key string) string {
	if d.Msg == nil {
		return ""
	}
	return d.Msg.Metadata.Get(key)
}

// Stream is the stream the message was consumed from and goes back to.
func (d deadLetter) Stream() string { return d.meta(middleware.PoisonedTopicKey) }

// Reason is why the consumer gave up on the message, or why the entry is
// malformed.
func (d deadLetter) Reason() string {
	if d.Malformed != nil {
		return "malformed entry: " + d.Malformed.Error()
	}
	return d.meta(middleware.ReasonForPoisonedKey)
}

// Original is the message to re-drive: the dead-lettered one without the
// poison keys (same UUID, payload and other metadata).
func (d deadLetter) Original() *message.Message {
	msg := message.NewMessage(d.Msg.UUID, d.Msg.Payload)
	for k, v := range d.Msg.Metadata {
		if !slices.Contains(poisonKeys, k) {
			msg.Metadata.Set(k, v)
		}
	}
	return msg
}

// cannotRedrive says why the entry cannot be re-driven, or "".
func (d deadLetter) cannotRedrive() string {
	switch {
	case d.Malformed != nil:
		return "malformed entry (" + d.Malformed.Error() + ")"
	case d.meta(malformedKey) != "":
		// Its payload is the garbage entry's fields, not a message:
		// publishing it would only dead-letter it again.
		return "the stream entry it came from was not a Watermill message (" + d.meta(malformedKey) + ")"
	case d.Stream() == "":
		return "no original stream (metadata " + middleware.PoisonedTopicKey + ")"
	case d.Stream() == DeadLetterStream:
		return "its original stream is the dead-letter stream"
	}
	return ""
}

func listDeadLetters(ctx context.Context, rdb *redis.Client, w io.Writer, limit int64, asJSON bool) error {
	total, err := rdb.XLen(ctx, DeadLetterStream).Result()
	if err != nil {
		return fmt.Errorf("dead-letters list: %v", err)
	}
	entries, err := rdb.XRangeN(ctx, DeadLetterStream, "-", "+", limit).Result()
	if err != nil {
		return fmt.Errorf("dead-letters list: %v", err)
	}
	if asJSON {
		// Entries only, one object a line, so that jq and friends read
		// it as a stream; none at all when the stream is empty.
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, x := range entries {
			if err := enc.Encode(jsonDeadLetter(decodeDeadLetter(x))); err != nil {
				return err
			}
		}
		return nil
	}
	if len(entries) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tSTREAM\tHANDLER\tMESSAGE\tTYPE\tREASON")
	for _, x := range entries {
		d := decodeDeadLetter(x)
		uuid := ""
		if d.Msg != nil {
			uuid = d.Msg.UUID
		} else if s, ok := x.Values[redisstream.UUIDHeaderKey].(string); ok {
			uuid = s
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Time().Format("2006-01-02T15:04:05.000Z"),
			field(d.Stream(), 0), field(d.meta(middleware.PoisonedHandlerKey), 0), field(uuid, 0),
			field(d.meta("type"), 0), field(d.Reason(), reasonWidth))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if int64(len(entries)) < total {
		_, err = fmt.Fprintf(w, "showing the oldest %d of %d dead letters (--limit N for more, --json for full reasons)\n", len(entries), total)
	} else {
		_, err = fmt.Fprintf(w, "%d dead %s\n", len(entries), plural(len(entries), "letter", "letters"))
	}
	return err
}

// field makes s one column of a text line: runs of spaces and control
// characters (a joined error's or a stack trace's newlines) become one
// space, "" becomes "-", and when width > 0 a longer s is cut to width
// characters ending in "…".
func field(s string, width int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	if s == "" {
		return "-"
	}
	if r := []rune(s); width > 0 && len(r) > width {
		return string(r[:width-1]) + "…"
	}
	return s
}

// deadLetterJSON is one line of `list --json`.
type deadLetterJSON struct {
	ID         string            `json:"id"`
	Time       time.Time         `json:"time"`
	Stream     string            `json:"stream,omitempty"`
	Handler    string            `json:"handler,omitempty"`
	Subscriber string            `json:"subscriber,omitempty"`
	UUID       string            `json:"uuid,omitempty"`
	Type       string            `json:"type,omitempty"`
	Reason     string            `json:"reason"`
	Metadata   map[string]string `json:"metadata,omitempty"` // what retry re-publishes
	Payload    *string           `json:"payload,omitempty"`
	// Malformed: the entry, or the stream entry it came from, is not a
	// Watermill message; retry refuses it.
	Malformed bool           `json:"malformed,omitempty"`
	Fields    map[string]any `json:"fields,omitempty"` // an undecodable entry's raw fields
}

func jsonDeadLetter(d deadLetter) deadLetterJSON {
	j := deadLetterJSON{ID: d.ID, Time: d.Time(), Reason: d.Reason()}
	if d.Msg == nil {
		j.Malformed, j.Fields = true, d.Fields
		return j
	}
	orig := d.Original()
	payload := string(orig.Payload)
	j.Stream, j.Handler, j.Subscriber = d.Stream(), d.meta(middleware.PoisonedHandlerKey), d.meta(middleware.PoisonedSubscriberKey)
	j.UUID, j.Type, j.Metadata, j.Payload = orig.UUID, orig.Metadata.Get("type"), orig.Metadata, &payload
	j.Malformed = d.meta(malformedKey) != ""
	return j
}

// namedDeadLetters retries or drops the entries ids. It first reads them
// all and changes nothing unless every one exists (and, for retry, can be
// re-driven), so a typo does not leave half a command done.
func namedDeadLetters(ctx context.Context, rdb *redis.Client, w io.Writer, action string, ids []string) error {
	slices.SortFunc(ids, compareIDs) // re-drive in dead-letter order
	ids = slices.Compact(ids)
	pipe := rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.XRangeN(ctx, DeadLetterStream, id, id, 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("dead-letters %s: %v", action, err)
	}
	var entries []deadLetter
	var unknown, stuck []string
	for i, c := range cmds {
		if len(c.Val()) == 0 {
			unknown = append(unknown, ids[i])
			continue
		}
		d := decodeDeadLetter(c.Val()[0])
		if slices.ContainsFunc(entries, func(e deadLetter) bool { return e.ID == d.ID }) {
			continue // the same entry spelt twice (01-0 and 1-0): once is enough
		}
		if why := d.cannotRedrive(); action == "retry" && why != "" {
			stuck = append(stuck, d.ID+": "+why)
		}
		entries = append(entries, d)
	}
	if len(unknown) > 0 {
		return fmt.Errorf("dead-letters %s: no dead letter with id %s; nothing was changed", action, strings.Join(unknown, ", "))
	}
	if len(stuck) > 0 {
		return fmt.Errorf("dead-letters retry: cannot re-drive %s; nothing was changed (`dead-letters drop ID` removes an entry)", strings.Join(stuck, "; "))
	}
	if action == "drop" {
		n, err := dropDeadLetters(ctx, rdb, w, entries)
		fmt.Fprintf(w, "dropped %d dead %s\n", n, plural(n, "letter", "letters"))
		return err
	}
	n, _, err := redriveAll(ctx, rdb, w, entries) // none skipped: checked above
	fmt.Fprintf(w, "re-drove %d dead %s\n", n, plural(n, "letter", "letters"))
	return err
}

// allDeadLetters retries or drops every entry in the stream when it
// starts, oldest first, a page at a time. Entries added meanwhile are left
// alone, so a re-driven message that fails again is not re-driven again in
// a loop. Retry skips (and names) the entries it cannot re-drive,
// re-drives the others, and then fails.
func allDeadLetters(ctx context.Context, rdb *redis.Client, w io.Writer, action string) error {
	last, err := rdb.XRevRangeN(ctx, DeadLetterStream, "+", "-", 1).Result()
	if err != nil {
		return fmt.Errorf("dead-letters %s: %v", action, err)
	}
	if len(last) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	end := last[0].ID
	done, skipped := 0, 0
	err = func() error {
		for start := "-"; ; {
			page, err := rdb.XRangeN(ctx, DeadLetterStream, start, end, deadLetterPage).Result()
			if err != nil {
				return fmt.Errorf("dead-letters %s: %v", action, err)
			}
			if len(page) == 0 {
				return nil
			}
			entries := make([]deadLetter, len(page))
			for i, x := range page {
				entries[i] = decodeDeadLetter(x)
			}
			var n, s int
			if action == "drop" {
				n, err = dropDeadLetters(ctx, rdb, w, entries)
			} else {
				n, s, err = redriveAll(ctx, rdb, w, entries)
			}
			done, skipped = done+n, skipped+s
			if err != nil || page[len(page)-1].ID == end {
				return err
			}
			start = "(" + page[len(page)-1].ID
		}
	}()
	if action == "drop" {
		fmt.Fprintf(w, "dropped %d dead %s\n", done, plural(done, "letter", "letters"))
	} else {
		fmt.Fprintf(w, "re-drove %d dead %s\n", done, plural(done, "letter", "letters"))
	}
	if err == nil && skipped > 0 {
		err = fmt.Errorf("dead-letters retry: %d %s could not be re-driven (listed above; `dead-letters drop ID` removes one)",
			skipped, plural(skipped, "entry", "entries"))
	}
	return err
}

// redriveAll re-drives entries in order and prints a line for each; it
// skips, and names, those that cannot be re-driven. It stops at the first
// failure and returns how many it re-drove and skipped.
func redriveAll(ctx context.Context, rdb *redis.Client, w io.Writer, entries []deadLetter) (done, skipped int, err error) {
	for _, d := range entries {
		if why := d.cannotRedrive(); why != "" {
			fmt.Fprintf(w, "skipped %s: %s\n", d.ID, why)
			skipped++
			continue
		}
		newID, err := redrive(ctx, rdb, d)
		if err != nil {
			return done, skipped, err
		}
		fmt.Fprintf(w, "re-driven %s to %s as %s (message %s, %s)\n", d.ID, d.Stream(), newID, d.Msg.UUID, field(d.meta("type"), 0))
		done++
	}
	return done, skipped, nil
}

// redrive appends d's original message to its original stream, then
// deletes d from the dead letters. In that order and not in one MULTI/EXEC
// (Redis would run the XDEL even after a failed XADD, and the two streams
// may live on different cluster nodes): a failure in between leaves a
// duplicate, which consumers ignore by message UUID, never a loss.
func redrive(ctx context.Context, rdb *redis.Client, d deadLetter) (newID string, err error) {
	values, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal(d.Stream(), d.Original())
	if err != nil {
		return "", fmt.Errorf("dead-letters retry: %s: %v; it stays in the dead letters", d.ID, err)
	}
	newID, err = rdb.XAdd(ctx, &redis.XAddArgs{Stream: d.Stream(), Values: values}).Result()
	if err != nil {
		return "", fmt.Errorf("dead-letters retry: %s: publish to %s: %v; it stays in the dead letters", d.ID, d.Stream(), err)
	}
	// Once published, finish the pair even if the operator pressed Ctrl-C.
	if err := rdb.XDel(context.WithoutCancel(ctx), DeadLetterStream, d.ID).Err(); err != nil {
		return "", fmt.Errorf("dead-letters retry: %s was re-published to %s as %s but is still in the dead letters (%v): `dead-letters drop %s` removes it",
			d.ID, d.Stream(), newID, err, d.ID)
	}
	return newID, nil
}

// dropDeadLetters deletes entries (one round trip) and prints a line for
// each; it returns how many it deleted (an entry another operator deleted
// meanwhile is not counted).
func dropDeadLetters(ctx context.Context, rdb *redis.Client, w io.Writer, entries []deadLetter) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(entries))
	for i, d := range entries {
		cmds[i] = pipe.XDel(ctx, DeadLetterStream, d.ID)
	}
	_, err := pipe.Exec(ctx)
	n := 0
	for i, c := range cmds {
		if c.Err() != nil || c.Val() == 0 {
			continue
		}
		n++
		d := entries[i]
		what := "malformed entry"
		if d.Msg != nil {
			what = "message " + d.Msg.UUID
		}
		fmt.Fprintf(w, "dropped %s (%s)\n", d.ID, what)
	}
	if err != nil {
		return n, fmt.Errorf("dead-letters drop: %v", err)
	}
	return n, nil
}

// compareIDs orders stream entry ids (checked by entryID) by time.
func compareIDs(a, b string) int {
	parse := func(id string) (uint64, uint64) {
		ms, seq, _ := strings.Cut(id, "-")
		m, _ := strconv.ParseUint(ms, 10, 64)
		s, _ := strconv.ParseUint(seq, 10, 64)
		return m, s
	}
	am, as := parse(a)
	bm, bs := parse(b)
	return cmp.Or(cmp.Compare(am, bm), cmp.Compare(as, bs))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
