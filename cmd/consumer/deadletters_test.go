package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/finalize"
	"github.com/docuvault/docuvault/internal/testenv"
)

// poisonMessages publishes msgs to the document stream and runs them
// through a Watermill router with the consumer's dead-letter path
// (PoisonQueue on DeadLetterStream, then rejectMalformed, Retry and
// Recoverer, and the tolerant unmarshaller, as in newRouter) and a handler
// that fails every message: with finalize.ErrMalformed, or by panicking
// when the payload says "panic". garbage stream entries (not Watermill
// messages) are added to the document stream too. It returns once all of
// them are in the dead letters.
func poisonMessages(t *testing.T, redisURL string, garbage []map[string]any, msgs ...*message.Message) {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := testenv.RedisClient(t, redisURL)
	before := rdb.XLen(context.Background(), DeadLetterStream).Val()

	wlog := watermill.NewSlogLogger(testenv.Logger(t))
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: redis.NewClient(opts)}, wlog)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	poison, err := middleware.PoisonQueue(pub, DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	router.AddMiddleware(
		poison,
		rejectMalformed,
		middleware.Retry{
			MaxRetries:      1, // the router's 6, with its backoff, only make the test slow
			InitialInterval: 10 * time.Millisecond,
			ShouldRetry:     func(p middleware.RetryParams) bool { return !errors.Is(p.Err, finalize.ErrMalformed) },
		}.Middleware,
		middleware.Recoverer,
	)
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        redis.NewClient(opts),
		ConsumerGroup: finalize.ConsumerName,
		Consumer:      "test-0",
		Unmarshaller:  tolerantUnmarshaller{},
	}, wlog)
	if err != nil {
		t.Fatal(err)
	}
	router.AddConsumerHandler("finalize-0", events.StreamDocuments, sub, func(msg *message.Message) error {
		if strings.Contains(string(msg.Payload), "panic") {
			panic("boom\nwith a second line")
		}
		return fmt.Errorf("finalize %s: %w: unexpected end of JSON input", msg.UUID, finalize.ErrMalformed)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(ctx) }()
	defer func() {
		if err := router.Close(); err != nil {
			t.Error(err)
		}
		if err := <-runErr; err != nil {
			t.Error(err)
		}
	}()
	<-router.Running()
	if err := pub.Publish(events.StreamDocuments, msgs...); err != nil {
		t.Fatal(err)
	}
	for _, values := range garbage {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamDocuments, Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	want := before + int64(len(msgs)+len(garbage))
	for deadline := time.Now().Add(30 * time.Second); rdb.XLen(context.Background(), DeadLetterStream).Val() < want; {
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters after 30 s; want %d", rdb.XLen(context.Background(), DeadLetterStream).Val(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newEvent is a message as the relay publishes it.
func newEvent(typ, payload string) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
	msg.Metadata.Set("type", typ)
	msg.Metadata.Set("version", "1")
	msg.Metadata.Set("correlation_id", watermill.NewUUID())
	msg.Metadata.Set("aggregate_id", watermill.NewUUID())
	return msg
}

// deadLettersCmd runs `consumer dead-letters args...` with REDIS_URL as its
// only setting.
func deadLettersCmd(redisURL string, args ...string) (string, error) {
	var out strings.Builder
	getenv := func(key string) string {
		if key == "REDIS_URL" {
			return redisURL
		}
		return ""
	}
	err := run(context.Background(), append([]string{"dead-letters"}, args...), getenv, &out)
	return out.String(), err
}

func mustDeadLetters(t *testing.T, redisURL string, args ...string) string {
	t.Helper()
	out, err := deadLettersCmd(redisURL, args...)
	if err != nil {
		t.Fatalf("dead-letters %v: %v\n%s", args, err, out)
	}
	return out
}

// streamIDs lists the ids of stream's entries, oldest first.
func streamIDs(t *testing.T, rdb *redis.Client, stream string) []string {
	t.Helper()
	entries, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	return ids
}

// deadLetterIDs maps message UUIDs to their dead-letter entry ids.
func deadLetterIDs(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	entries, err := rdb.XRange(context.Background(), DeadLetterStream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, e := range entries {
		ids[e.Values[redisstream.UUIDHeaderKey].(string)] = e.ID
	}
	return ids
}

func TestDeadLettersListRetryDrop(t *testing.T) {
	t.Parallel()
	url := testenv.Redis(t)
	rdb := testenv.RedisClient(t, url)
	ctx := context.Background()
	uploaded := newEvent("document.uploaded", `{"type":"document.uploaded","data":{"title":"Quarterly"}}`)
	deleted := newEvent("document.deleted", `{"type":"document.deleted","data":"panic"}`)
	finalized := newEvent("document.finalized", `{"type":"document.finalized"}`)
	want := map[string]*message.Message{uploaded.UUID: uploaded, deleted.UUID: deleted, finalized.UUID: finalized}
	poisonMessages(t, url, nil, uploaded, deleted, finalized)
	ids := deadLetterIDs(t, rdb)
	if len(ids) != 3 {
		t.Fatalf("dead letters %v; want 3", ids)
	}

	// Text: a header, one line per entry, a count.
	out := mustDeadLetters(t, url, "list")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "ID ") || lines[4] != "3 dead letters" {
		t.Fatalf("list: want a header, 3 entries and a count:\n%s", out)
	}
	for uuid, msg := range want {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, uuid) })
		if i < 0 {
			t.Fatalf("list does not show %s:\n%s", uuid, out)
		}
		f := strings.Fields(lines[i])
		if f[0] != ids[uuid] || f[2] != events.StreamDocuments || f[3] != "finalize-0" || f[4] != uuid || f[5] != msg.Metadata.Get("type") {
			t.Errorf("list line %q; want id %s, stream, handler finalize-0, uuid, type %s", lines[i], ids[uuid], msg.Metadata.Get("type"))
		}
		if _, err := time.Parse(time.RFC3339, f[1]); err != nil {
			t.Errorf("time column %q: %v", f[1], err)
		}
	}
	for _, l := range lines[1:4] {
		if !strings.Contains(l, "malformed event") && !strings.Contains(l, `panic occurred: "boom\nwith a second line", stacktrace: `) {
			t.Errorf("list line %q shows no reason", l)
		}
		if strings.Contains(l, "panic") && !strings.HasSuffix(l, "…") {
			t.Errorf("a panic's reason (with its stack trace) is not cut short: %q", l)
		}
	}
	out = mustDeadLetters(t, url, "list", "--limit", "2")
	if !strings.Contains(out, "showing the oldest 2 of 3 dead letters") || strings.Count(out, "\n") != 4 {
		t.Errorf("list --limit 2:\n%s", out)
	}

	// JSON: one object a line, full reasons, the metadata retry would send.
	out = mustDeadLetters(t, url, "list", "--json")
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("list --json: want 3 lines:\n%s", out)
	}
	for _, l := range lines {
		var got deadLetterJSON
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		msg := want[got.UUID]
		if msg == nil || got.ID != ids[got.UUID] || got.Stream != events.StreamDocuments || got.Handler != "finalize-0" ||
			got.Type != msg.Metadata.Get("type") || got.Payload == nil || *got.Payload != string(msg.Payload) ||
			!maps.Equal(got.Metadata, msg.Metadata) || got.Malformed || got.Time.IsZero() {
			t.Errorf("list --json line %s; want message %+v", l, msg)
		}
		if got.UUID == deleted.UUID && !strings.Contains(got.Reason, "stacktrace: \ngoroutine") {
			t.Errorf("reason %q is not the whole one", got.Reason)
		}
		if got.UUID != deleted.UUID && got.Reason != fmt.Sprintf("finalize %s: malformed event: unexpected end of JSON input", got.UUID) {
			t.Errorf("reason %q", got.Reason)
		}
	}

	// Retry: back on its stream as it was published, gone from the dead letters.
	docsBefore := streamIDs(t, rdb, events.StreamDocuments)
	out = mustDeadLetters(t, url, "retry", ids[uploaded.UUID])
	if !strings.Contains(out, "re-driven "+ids[uploaded.UUID]+" to docuvault.documents") || !strings.HasSuffix(out, "re-drove 1 dead letter\n") {
		t.Errorf("retry output:\n%s", out)
	}
	entries, err := rdb.XRange(ctx, events.StreamDocuments, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(docsBefore)+1 {
		t.Fatalf("%d entries on the document stream; want %d", len(entries), len(docsBefore)+1)
	}
	redriven, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(entries[len(entries)-1].Values)
	if err != nil {
		t.Fatal(err)
	}
	if redriven.UUID != uploaded.UUID || string(redriven.Payload) != string(uploaded.Payload) || !maps.Equal(redriven.Metadata, uploaded.Metadata) {
		t.Errorf("re-driven message %s %q %v; want %s %q %v", redriven.UUID, redriven.Payload, redriven.Metadata,
			uploaded.UUID, uploaded.Payload, uploaded.Metadata)
	}
	if left := deadLetterIDs(t, rdb); len(left) != 2 || left[uploaded.UUID] != "" {
		t.Errorf("dead letters after retry: %v; want the two others", left)
	}

	// Drop: gone, nothing published.
	out = mustDeadLetters(t, url, "drop", ids[deleted.UUID])
	if !strings.Contains(out, "dropped "+ids[deleted.UUID]+" (message "+deleted.UUID+")") || !strings.HasSuffix(out, "dropped 1 dead letter\n") {
		t.Errorf("drop output:\n%s", out)
	}
	if left := deadLetterIDs(t, rdb); len(left) != 1 || left[finalized.UUID] == "" {
		t.Errorf("dead letters after drop: %v; want only %s", left, finalized.UUID)
	}
	if n := len(streamIDs(t, rdb, events.StreamDocuments)); n != len(entries) {
		t.Errorf("drop published something: %d entries, want %d", n, len(entries))
	}

	// Retry --all empties the stream.
	out = mustDeadLetters(t, url, "retry", "--all")
	if !strings.Contains(out, ids[finalized.UUID]) || !strings.HasSuffix(out, "re-drove 1 dead letter\n") {
		t.Errorf("retry --all output:\n%s", out)
	}
	if out := mustDeadLetters(t, url, "list"); out != "no dead letters\n" {
		t.Errorf("list after retry --all:\n%s", out)
	}
}

// Named ids are all checked before anything changes.
func TestDeadLettersUnknownIDChangesNothing(t *testing.T) {
	t.Parallel()
	url := testenv.Redis(t)
	rdb := testenv.RedisClient(t, url)
	a, b := newEvent("document.uploaded", `{}`), newEvent("document.uploaded", `{}`)
	poisonMessages(t, url, nil, a, b)
	ids := deadLetterIDs(t, rdb)
	dead, docs := streamIDs(t, rdb, DeadLetterStream), streamIDs(t, rdb, events.StreamDocuments)

	for _, args := range [][]string{
		{"retry", ids[a.UUID], "999-0", ids[b.UUID]},
		{"drop", ids[a.UUID], "999-0"},
		{"retry", "1-0", "2-0"},
	} {
		out, err := deadLettersCmd(url, args...)
		if err == nil || !strings.Contains(err.Error(), "no dead letter with id") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v; want one line naming the unknown id", args, err)
		}
		for _, id := range args[1:] {
			if !slices.Contains(dead, id) && (err == nil || !strings.Contains(err.Error(), id)) {
				t.Errorf("%v: error %v does not name %s", args, err, id)
			}
		}
		if out != "" {
			t.Errorf("%v printed %q", args, out)
		}
	}
	if _, err := deadLettersCmd(url, "retry", ids[a.UUID], "ids-are-not-like-this"); err == nil || !strings.Contains(err.Error(), `"ids-are-not-like-this"`) {
		t.Errorf("a malformed id: error %v", err)
	}
	if got := streamIDs(t, rdb, DeadLetterStream); !slices.Equal(got, dead) {
		t.Errorf("dead letters changed: %v; want %v", got, dead)
	}
	if got := streamIDs(t, rdb, events.StreamDocuments); !slices.Equal(got, docs) {
		t.Errorf("document stream changed: %v; want %v", got, docs)
	}
}

// An empty (or absent) stream is not an error; --env-file works in either
// place and REDIS_URL is the only setting needed.
func TestDeadLettersEmptyStreamAndEnvFile(t *testing.T) {
	t.Parallel()
	url := testenv.Redis(t)
	for _, args := range [][]string{{"list"}, {"retry", "--all"}, {"drop", "--all"}} {
		if out := mustDeadLetters(t, url, args...); out != "no dead letters\n" {
			t.Errorf("%v on an empty stream: %q", args, out)
		}
	}
	if out := mustDeadLetters(t, url, "list", "--json"); out != "" {
		t.Errorf("list --json on an empty stream: %q; want nothing", out)
	}
	if _, err := deadLettersCmd(url, "drop", "1-0"); err == nil || !strings.Contains(err.Error(), "1-0") {
		t.Errorf("drop of an unknown id in an empty stream: %v", err)
	}

	path := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(path, []byte("REDIS_URL="+url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{
		{"--env-file", path, "dead-letters", "list"},
		{"dead-letters", "--env-file", path, "list"},
		{"dead-letters", "list", "--env-file", path},
	} {
		var out strings.Builder
		if err := run(context.Background(), args, noEnv, &out); err != nil || out.String() != "no dead letters\n" {
			t.Errorf("%v: %v %q", args, err, out.String())
		}
	}
}

// Entries that are not Watermill messages are listed as such, never
// re-driven, and can be dropped.
func TestDeadLettersMalformedEntries(t *testing.T) {
	t.Parallel()
	url := testenv.Redis(t)
	rdb := testenv.RedisClient(t, url)
	ctx := context.Background()
	good := newEvent("document.uploaded", `{}`)
	// A stream entry that is not a Watermill message reaches the dead
	// letters as a message carrying its fields; it cannot be re-driven.
	poisonMessages(t, url, []map[string]any{{"junk": "not a message"}}, good)
	var garbage string
	for uuid, id := range deadLetterIDs(t, rdb) {
		if uuid != good.UUID {
			garbage = id
		}
	}
	if garbage == "" {
		t.Fatal("the garbage entry is not in the dead letters")
	}
	add := func(values map[string]any) string {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: DeadLetterStream, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	noUUID := add(map[string]any{"payload": "{}"})
	badMeta := add(map[string]any{redisstream.UUIDHeaderKey: "0193-bad", "metadata": "\xc1 not msgpack", "payload": "{}"})
	noTopic := add(map[string]any{redisstream.UUIDHeaderKey: watermill.NewUUID(), "payload": "{}"})

	out := mustDeadLetters(t, url, "list")
	if strings.Count(out, "\n") != 7 || !strings.HasSuffix(out, "5 dead letters\n") {
		t.Fatalf("list:\n%s", out)
	}
	for _, id := range []string{noUUID, badMeta} {
		if !strings.Contains(lineWith(out, id), "malformed entry: ") {
			t.Errorf("list does not mark %s malformed:\n%s", id, out)
		}
	}
	if !strings.Contains(lineWith(out, badMeta), "0193-bad") {
		t.Errorf("list does not show the uuid of a malformed entry that has one:\n%s", out)
	}
	if !strings.Contains(lineWith(out, garbage), "not a Watermill message") {
		t.Errorf("list does not say why %s was dead-lettered:\n%s", garbage, out)
	}
	out = mustDeadLetters(t, url, "list", "--json")
	if strings.Count(out, `"malformed":true`) != 3 || strings.Count(out, "\n") != 5 {
		t.Errorf("list --json:\n%s", out)
	}

	dead := streamIDs(t, rdb, DeadLetterStream)
	docs := streamIDs(t, rdb, events.StreamDocuments)
	for _, id := range []string{garbage, noUUID, badMeta, noTopic} {
		if _, err := deadLettersCmd(url, "retry", dead[0], id); err == nil || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "nothing was changed") {
			t.Errorf("retry of %s: error %v; want one naming it", id, err)
		}
	}
	if got := streamIDs(t, rdb, DeadLetterStream); !slices.Equal(got, dead) {
		t.Fatalf("a refused retry changed the dead letters: %v; want %v", got, dead)
	}
	if got := streamIDs(t, rdb, events.StreamDocuments); !slices.Equal(got, docs) {
		t.Fatalf("a refused retry published: %v; want %v", got, docs)
	}

	// --all re-drives what it can, in order, names the rest and fails.
	out, err := deadLettersCmd(url, "retry", "--all")
	if err == nil || !strings.Contains(err.Error(), "4 entries could not be re-driven") {
		t.Errorf("retry --all: error %v", err)
	}
	if strings.Count(out, "skipped ") != 4 || !strings.HasPrefix(out, "re-driven "+dead[0]) || !strings.HasSuffix(out, "re-drove 1 dead letter\n") {
		t.Errorf("retry --all output:\n%s", out)
	}
	if got := streamIDs(t, rdb, DeadLetterStream); !slices.Equal(got, dead[1:]) {
		t.Errorf("dead letters after retry --all: %v; want %v", got, dead[1:])
	}
	if got := streamIDs(t, rdb, events.StreamDocuments); len(got) != len(docs)+1 {
		t.Errorf("retry --all published %d entries; want 1", len(got)-len(docs))
	}

	out = mustDeadLetters(t, url, "drop", badMeta, noUUID)
	if !strings.HasSuffix(out, "dropped 2 dead letters\n") || !strings.Contains(out, "dropped "+noUUID+" (malformed entry)") {
		t.Errorf("drop:\n%s", out)
	}
	out = mustDeadLetters(t, url, "drop", "--all")
	if !strings.HasSuffix(out, "dropped 2 dead letters\n") {
		t.Errorf("drop --all:\n%s", out)
	}
	if n := rdb.XLen(ctx, DeadLetterStream).Val(); n != 0 {
		t.Errorf("%d dead letters left", n)
	}
}

func lineWith(out, s string) string {
	for l := range strings.Lines(out) {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// Bad usage and settings stop with one specific line, before any change.
func TestDeadLettersUsageErrors(t *testing.T) {
	t.Parallel()
	const url = "redis://127.0.0.1:6379/15" // never reached: every case fails first
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "missing action"},
		{[]string{"frob"}, `unknown action "frob"`},
		{[]string{"retry"}, "--all for every one"},
		{[]string{"drop"}, "--all for every one"},
		{[]string{"retry", "1-0", "--all"}, "not both"},
		{[]string{"drop", "--all", "1-0"}, "not both"},
		{[]string{"list", "--limit", "0"}, "--limit 0"},
		{[]string{"list", "--limit", "many"}, `invalid value "many"`},
		{[]string{"list", "everything"}, `unexpected argument "everything"`},
		{[]string{"drop", "1700000000000"}, `"1700000000000" is not a stream entry id`},
		{[]string{"drop", "--force", "1-0"}, "-force"},
		{[]string{"list", "--env-file", "/nonexistent/env"}, "/nonexistent/env does not exist"},
	} {
		out, err := deadLettersCmd(url, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v; want one line with %q", c.args, err, c.want)
		}
		if out != "" {
			t.Errorf("%v printed %q", c.args, out)
		}
	}
	for raw, want := range map[string]string{
		"":                                 "REDIS_URL: is required",
		"tcp://127.0.0.1:6379":             "REDIS_URL: must start with redis://",
		"redis://:s3cret-pw@127.0.0.1:1/0": "REDIS_URL: cannot reach 127.0.0.1:1",
	} {
		_, err := deadLettersCmd(raw, "list")
		if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("REDIS_URL %q: error %v; want %q and no password", raw, err, want)
		}
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"help"}, func(string) string { return "" }, &out); err != nil || !strings.Contains(out.String(), "dead-letters retry (ID... | --all)") {
		t.Errorf("help: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"dead-letters", "list", "-h"}, func(string) string { return "" }, &out); err != nil || !strings.Contains(out.String(), "dead-letters list") {
		t.Errorf("dead-letters list -h: %v\n%s", err, out.String())
	}
}
