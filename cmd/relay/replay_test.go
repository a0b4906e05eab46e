package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
	"github.com/docuvault/docuvault/internal/tracing"
)

// history is a recorded sequence of events, in audit order, and what they
// were written with.
type history struct {
	evs                    []events.Envelope
	origins                []store.Origin // of evs
	docA, docB, corr1, usr uuid.UUID
}

// writeHistory records 12 events, one an hour, the last half an hour ago:
// documents A and B, a topic, two correlation ids, three kinds of actor;
// the first and every fourth after it with a request id and traceparent.
func writeHistory(t *testing.T, pool *pgxpool.Pool) history {
	t.Helper()
	h := history{docA: uuid.New(), docB: uuid.New(), corr1: uuid.New(), usr: uuid.New()}
	corr2, topic := uuid.New(), uuid.New()
	now := time.Now().UTC().Truncate(time.Microsecond)
	user := events.Actor{Type: "user", ID: &h.usr}
	plan := []struct {
		typ, aggType string
		agg, corr    uuid.UUID
		actor        events.Actor
	}{
		{events.DocumentUploaded, "document", h.docA, h.corr1, events.Anonymous},
		{events.DocumentFinalized, "document", h.docA, h.corr1, events.System},
		{events.TopicCreated, "topic", topic, corr2, user},
		{events.DocumentUploaded, "document", h.docB, corr2, user},
		{events.DocumentRejected, "document", h.docB, corr2, events.System},
		{events.TopicRenamed, "topic", topic, h.corr1, events.Anonymous},
		{events.DocumentDeleted, "document", h.docA, h.corr1, events.Anonymous},
		{events.DocumentUploaded, "document", h.docB, h.corr1, user},
		{events.DocumentFinalized, "document", h.docB, h.corr1, events.System},
		{events.TopicDeleted, "topic", topic, corr2, events.Anonymous},
		{events.DocumentDeleted, "document", h.docB, corr2, user},
		{events.DocumentUploaded, "document", h.docA, h.corr1, events.Anonymous},
	}
	err := store.WithTx(context.Background(), pool, func(tx pgx.Tx) error {
		var prev *events.Envelope
		for i, p := range plan {
			ev, err := events.New(p.typ, p.aggType, p.agg, p.actor, p.corr, nil, map[string]any{"n": i, "name": "event " + p.typ})
			if err != nil {
				return err
			}
			if prev != nil && prev.CorrelationID == p.corr {
				id := prev.ID
				ev.CausationID = &id
			}
			ev.OccurredAt = now.Add(-time.Duration(len(plan)-i)*time.Hour + 30*time.Minute)
			var origin store.Origin
			if i%4 == 0 {
				origin = store.Origin{RequestID: fmt.Sprintf("req-%d", i), Traceparent: tracing.Child("")}
			}
			if err := store.Record(context.Background(), tx, ev, origin); err != nil {
				return err
			}
			h.evs = append(h.evs, ev)
			h.origins = append(h.origins, origin)
			prev = &h.evs[len(h.evs)-1]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sameEvent fails unless got is want, data compared as JSON values (jsonb
// does not keep key order).
func sameEvent(t *testing.T, got, want events.Envelope) {
	t.Helper()
	var gd, wd any
	_ = json.Unmarshal(got.Data, &gd)
	_ = json.Unmarshal(want.Data, &wd)
	if !reflect.DeepEqual(gd, wd) {
		t.Errorf("event %s data %s; want %s", want.ID, got.Data, want.Data)
	}
	got.Data, want.Data = nil, nil
	if !got.OccurredAt.Equal(want.OccurredAt) || got.OccurredAt.Location() != time.UTC {
		t.Errorf("event %s occurred_at %v; want %v", want.ID, got.OccurredAt, want.OccurredAt)
	}
	got.OccurredAt, want.OccurredAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event\n got %+v\nwant %+v", got, want)
	}
}

func sameEvents(t *testing.T, got, want []events.Envelope) {
	t.Helper()
	if len(got) != len(want) {
		var g, w []string
		for _, e := range got {
			g = append(g, e.Type)
		}
		for _, e := range want {
			w = append(w, e.Type)
		}
		t.Fatalf("%d events %v; want %d %v", len(got), g, len(want), w)
	}
	for i := range want {
		sameEvent(t, got[i], want[i])
	}
}

func decodeLines(t *testing.T, out string) []events.Envelope {
	t.Helper()
	var evs []events.Envelope
	for line := range strings.Lines(out) {
		var ev events.Envelope
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestReplayToStdoutSelectsTheRangeInOrder(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	h := writeHistory(t, testenv.Pool(t, db.AppURL))
	env := testenv.Env{"DATABASE_URL": db.AppURL}
	at := func(i int) string { return h.evs[i].OccurredAt.Format(time.RFC3339Nano) }
	pick := func(keep func(events.Envelope) bool) []events.Envelope {
		var out []events.Envelope
		for _, ev := range h.evs {
			if keep(ev) {
				out = append(out, ev)
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		args []string
		want []events.Envelope
	}{
		{"everything", nil, h.evs},
		{"range", []string{"--since", at(3), "--until", at(8)}, h.evs[3:8]},
		{"relative since", []string{"--since", "2h"}, h.evs[10:]},
		{"days", []string{"--since", "1d", "--until", at(2)}, h.evs[:2]},
		{"document", []string{"--document", h.docB.String()}, pick(func(e events.Envelope) bool { return e.AggregateID == h.docB })},
		{"type", []string{"--type", events.DocumentUploaded}, pick(func(e events.Envelope) bool { return e.Type == events.DocumentUploaded })},
		{"actor type", []string{"--actor", "system"}, pick(func(e events.Envelope) bool { return e.Actor.Type == "system" })},
		{"actor id", []string{"--actor", h.usr.String()}, pick(func(e events.Envelope) bool { return e.Actor.ID != nil && *e.Actor.ID == h.usr })},
		{"correlation", []string{"--correlation-id", h.corr1.String(), "--since", at(4)},
			pick(func(e events.Envelope) bool {
				return e.CorrelationID == h.corr1 && !e.OccurredAt.Before(h.evs[4].OccurredAt)
			})},
		{"combined, small batches", []string{"--batch", "1", "--document", h.docA.String(), "--type", events.DocumentDeleted},
			pick(func(e events.Envelope) bool { return e.AggregateID == h.docA && e.Type == events.DocumentDeleted })},
		{"empty range", []string{"--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02T00:00:00Z"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := run(context.Background(), append([]string{"replay"}, c.args...), env.Getenv, &out); err != nil {
				t.Fatal(err)
			}
			sameEvents(t, decodeLines(t, out.String()), c.want)
		})
	}
	// The env file is read whether named before or after the command.
	envFile := filepath.Join(t.TempDir(), "relay.env")
	if err := os.WriteFile(envFile, []byte("DATABASE_URL="+db.AppURL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{{"--env-file", envFile, "replay", "--type", events.TopicCreated}, {"replay", "--env-file", envFile, "--type", events.TopicCreated}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, noEnv, &out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if got := decodeLines(t, out.String()); len(got) != 1 || got[0].Type != events.TopicCreated {
			t.Errorf("%v: %d events", args, len(got))
		}
	}

	// Each line is the envelope's JSON, as json.Marshal writes it.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--type", events.TopicCreated}, env.Getenv, &out); err != nil {
		t.Fatal(err)
	}
	ev := decodeLines(t, out.String())[0]
	line, _ := json.Marshal(ev)
	if out.String() != string(line)+"\n" {
		t.Errorf("output %q; want %q", out.String(), line)
	}

	// Lines of events with a request id and traceparent carry them too.
	out.Reset()
	if err := run(context.Background(), []string{"replay"}, env.Getenv, &out); err != nil {
		t.Fatal(err)
	}
	i := 0
	for line := range strings.Lines(out.String()) {
		var got struct {
			ID          uuid.UUID `json:"id"`
			RequestID   *string   `json:"request_id"`
			Traceparent *string   `json:"traceparent"`
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatal(err)
		}
		o := h.origins[i]
		if got.ID != h.evs[i].ID || (o.RequestID == "") != (got.RequestID == nil) || (o.Traceparent == "") != (got.Traceparent == nil) ||
			(got.RequestID != nil && (*got.RequestID != o.RequestID || *got.Traceparent != o.Traceparent)) {
			t.Errorf("line %d %s; want event %s with request id %q, traceparent %q", i, line, h.evs[i].ID, o.RequestID, o.Traceparent)
		}
		i++
	}
}

func TestReplayToStreamIsReadByAWatermillSubscriber(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	h := writeHistory(t, testenv.Pool(t, db.AppURL))
	redisURL := testenv.Redis(t)
	stream := testenv.Unique("debug.replay.")
	env := testenv.Env{"DATABASE_URL": db.AppURL, "REDIS_URL": redisURL}
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--batch", "5", "--since", h.evs[2].OccurredAt.Format(time.RFC3339Nano), "--to-stream", stream}, env.Getenv, &stdout); err != nil {
		t.Fatal(err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q; want nothing with --to-stream", stdout.String())
	}
	for _, s := range events.Streams {
		if n := testenv.RedisClient(t, redisURL).XLen(context.Background(), s).Val(); n != 0 {
			t.Errorf("production stream %s has %d entries", s, n)
		}
	}

	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client: client, ConsumerGroup: "debugger", Consumer: "debugger-0", OldestId: "0",
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	want := h.evs[2:]
	var got []events.Envelope
	for range want {
		select {
		case msg := <-msgs:
			var ev events.Envelope
			if err := json.Unmarshal(msg.Payload, &ev); err != nil {
				t.Fatal(err)
			}
			if msg.UUID != ev.ID.String() || msg.Metadata.Get("replayed") != "true" ||
				msg.Metadata.Get(events.MetaType) != ev.Type || msg.Metadata.Get(events.MetaVersion) != "1" ||
				msg.Metadata.Get(events.MetaCorrelationID) != ev.CorrelationID.String() ||
				msg.Metadata.Get(events.MetaAggregateID) != ev.AggregateID.String() {
				t.Errorf("message %s metadata %v for event %+v", msg.UUID, msg.Metadata, ev)
			}
			if o := h.origins[2+len(got)]; msg.Metadata.Get(events.MetaRequestID) != o.RequestID || msg.Metadata.Get(events.MetaTraceparent) != o.Traceparent {
				t.Errorf("message %s metadata %v; want request id %q, traceparent %q", msg.UUID, msg.Metadata, o.RequestID, o.Traceparent)
			}
			got = append(got, ev)
			msg.Ack()
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages", len(got), len(want))
		}
	}
	sameEvents(t, got, want)
}

func TestReplayRefusesBadArguments(t *testing.T) {
	t.Parallel()
	env := testenv.Env{"DATABASE_URL": "postgres://u:p@127.0.0.1:1/docuvault", "REDIS_URL": "redis://127.0.0.1:1/0"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--to-stream", events.StreamDocuments}, "--to-stream docuvault.documents is a production stream"},
		{[]string{"--to-stream", events.StreamCloudConnections}, "is a production stream"},
		{[]string{"--to-stream", "docuvault.dead_letter"}, "is a production stream"},
		{[]string{"--since", "yesterday"}, `--since "yesterday" is neither an RFC 3339 time nor a positive age`},
		{[]string{"--until", "-2h"}, `--until "-2h" is neither`},
		{[]string{"--since", "1h", "--until", "2h"}, "is not after --since"},
		{[]string{"--document", "abc"}, `--document "abc" is not a UUID`},
		{[]string{"--correlation-id", "abc"}, `--correlation-id "abc" is not a UUID`},
		{[]string{"--actor", "bob"}, "--actor must be anonymous, user, system or a UUID"},
		{[]string{"--batch", "0"}, "--batch 0 must be from 1 to 100000"},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		err := run(context.Background(), append([]string{"replay"}, c.args...), env.Getenv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v; want one line containing %q", c.args, err, c.want)
		}
	}
	// The relay itself still refuses other commands.
	if err := run(context.Background(), []string{"replays"}, env.Getenv, io.Discard); err == nil {
		t.Error("an unknown command was accepted")
	}
	var help bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--help"}, env.Getenv, &help); err != nil || !strings.Contains(help.String(), "--to-stream") {
		t.Errorf("help: %v %q", err, help.String())
	}
}

// cancelAfter is stdout that cancels the replay at its first write.
type cancelAfter struct {
	bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	w.cancel()
	return w.Buffer.Write(p)
}

func TestReplayStopsCleanlyWhenInterrupted(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	h := writeHistory(t, testenv.Pool(t, db.AppURL))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &cancelAfter{cancel: cancel}
	var stderr bytes.Buffer
	err := replay(ctx, nil, []string{"--batch", "5"}, testenv.Env{"DATABASE_URL": db.AppURL}.Getenv, out, &stderr)
	if err != nil {
		t.Fatalf("interrupted replay returned %v", err)
	}
	sameEvents(t, decodeLines(t, out.String()), h.evs[:5])
	if !strings.Contains(stderr.String(), "replay interrupted: 5 events replayed, last at "+h.evs[4].OccurredAt.Format(time.RFC3339Nano)) {
		t.Errorf("stderr %q", stderr.String())
	}

	stderr.Reset()
	if err := replay(context.Background(), nil, []string{"--batch", "5"}, testenv.Env{"DATABASE_URL": db.AppURL}.Getenv, io.Discard, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(stderr.String(), "replayed 12 events\n") {
		t.Errorf("stderr %q; want a final count", stderr.String())
	}
}

func TestReplayProgressLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := progress{w: &buf, last: time.Now()}
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	p.add(99_999, at)
	if buf.Len() != 0 {
		t.Errorf("progress before a second or 100k events: %q", buf.String())
	}
	p.add(1, at)
	if buf.String() != "replayed 100000 events, last at 2026-05-01T12:00:00Z\n" {
		t.Errorf("progress %q", buf.String())
	}
	buf.Reset()
	p.last = time.Now().Add(-time.Second)
	p.add(5, at)
	if !strings.HasPrefix(buf.String(), "replayed 100005 events") {
		t.Errorf("progress after a second %q", buf.String())
	}
}
