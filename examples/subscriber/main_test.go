package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/relay"
	"github.com/docuvault/docuvault/internal/store"
	"github.com/docuvault/docuvault/internal/testenv"
)

// The example reads what the relay writes: two instances in their own
// groups print the events they should, in stream order, and acknowledge
// every entry they read, while another group's view of the stream is left
// alone.
func TestPrintsTheRelaysEvents(t *testing.T) {
	t.Parallel()
	url := testenv.Redis(t) // a database of its own, flushed at the end
	rdb := testenv.RedisClient(t, url)
	ctx := context.Background()
	const docs = "docuvault.documents"
	// Someone else's group, there before anything is published.
	if err := rdb.XGroupCreateMkStream(ctx, docs, "someone-else", "0").Err(); err != nil {
		t.Fatal(err)
	}

	docA, docB, topicID := newID(), newID(), newID()
	corrA, corrB := newID(), newID()
	sha := strings.Repeat("ab", 32)
	doc := func(id uuid.UUID, status, key string) events.Document {
		return events.Document{ID: id, Title: "Quarterly", Filename: "report.pdf", ContentType: "application/pdf",
			SizeBytes: 120394, SHA256: sha, Status: status, StorageKey: key}
	}
	uploaded := event(t, events.DocumentUploaded, "document", docA, events.Anonymous, corrA, nil, doc(docA, "pending", "staging/"+docA.String()))
	finalized := event(t, events.DocumentFinalized, "document", docA, events.System, corrA, &uploaded, doc(docA, "ready", "users/_unowned/documents/"+docA.String()))
	topic := event(t, events.TopicCreated, "topic", topicID, events.Anonymous, corrB, nil, events.Topic{ID: topicID, Name: "Taxes 2026"})
	synced := event(t, events.CloudSyncCompleted, "document", docA, events.System, corrA, &finalized, events.CloudSync{
		DocumentID: docA, ConnectionID: newID(), Provider: "s3", Operation: "copy",
		RemoteKey: "docuvault/" + docA.String() + "/report.pdf", Attempts: 1, SizeBytes: 120394})
	uploadedB := event(t, events.DocumentUploaded, "document", docB, events.Anonymous, corrB, nil, doc(docB, "pending", "staging/"+docB.String()))
	rejectedDoc := doc(docB, "rejected", "staging/"+docB.String())
	reason := "checksum_mismatch"
	rejectedDoc.RejectReason = &reason
	rejected := event(t, events.DocumentRejected, "document", docB, events.System, corrB, &uploadedB, rejectedDoc)
	deleted := event(t, events.DocumentDeleted, "document", docA, events.Anonymous, corrA, nil, doc(docA, "deleted", "users/_unowned/documents/"+docA.String()))

	// Some events are in the stream before the subscribers start (a new
	// group reads from the oldest entry), the others arrive while they run.
	publish(t, rdb, uploaded, finalized, topic)
	env := testenv.Env{"REDIS_URL": url}
	// This one is stopped (as by SIGTERM) the moment it prints its last
	// line, before it acknowledged that entry.
	mineOut := &stopAfter{lines: 3}
	mineWait := start(t, mineOut, []string{"--group", "mine", "--consumer", "mine-1",
		"--types", "document.finalized,document.rejected,document.deleted"}, env)
	all := testenv.Start(t, run, []string{"--group", "everything", "--streams", docs + ",docuvault.topics", "--json"}, env)
	publish(t, rdb, synced, uploadedB, rejected, deleted)

	wantMine := []string{
		fmt.Sprintf("%s document.finalized %s correlation=%s filename=report.pdf status=ready", stamp(finalized), docA, corrA),
		fmt.Sprintf("%s document.rejected %s correlation=%s filename=report.pdf status=rejected reject_reason=checksum_mismatch", stamp(rejected), docB, corrB),
		fmt.Sprintf("%s document.deleted %s correlation=%s filename=report.pdf status=deleted", stamp(deleted), docA, corrA),
	}
	// The last entry of each stream is printed, so every earlier one was
	// handled: stop as soon as the lines are there.
	if err := mineWait(); err != nil {
		t.Errorf("--group mine: run returned %v after the stop; want nil", err)
	}
	waitLines(t, all, 7)
	if err := all.Stop(); err != nil {
		t.Errorf("--group everything: run returned %v after the stop; want nil", err)
	}

	if got := strings.Split(strings.TrimSuffix(mineOut.String(), "\n"), "\n"); !slices.Equal(got, wantMine) {
		t.Errorf("--types output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantMine, "\n"))
	}
	// --json prints each envelope as published; order holds per stream.
	var gotDocs, gotTopics []string
	for _, line := range lines(all) {
		var ev struct {
			AggregateType string `json:"aggregate_type"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("--json printed %q: %v", line, err)
		}
		if ev.AggregateType == "topic" {
			gotTopics = append(gotTopics, line)
		} else {
			gotDocs = append(gotDocs, line)
		}
	}
	wantDocs := payloads(t, uploaded, finalized, synced, uploadedB, rejected, deleted)
	if !slices.Equal(gotDocs, wantDocs) {
		t.Errorf("--json %s:\n%s\nwant:\n%s", docs, strings.Join(gotDocs, "\n"), strings.Join(wantDocs, "\n"))
	}
	if want := payloads(t, topic); !slices.Equal(gotTopics, want) {
		t.Errorf("--json docuvault.topics: %q; want %q", gotTopics, want)
	}

	// Both groups read every entry and acknowledged it.
	for _, g := range []struct{ stream, group string }{{docs, "mine"}, {docs, "everything"}, {"docuvault.topics", "everything"}} {
		last, err := rdb.XRevRangeN(ctx, g.stream, "+", "-", 1).Result()
		if err != nil || len(last) != 1 {
			t.Fatalf("last entry of %s: %v %v", g.stream, last, err)
		}
		info := groupInfo(t, rdb, g.stream, g.group)
		if info.LastDeliveredID != last[0].ID || info.Pending != 0 {
			t.Errorf("group %s on %s: last delivered %s, %d pending; want %s, 0 pending",
				g.group, g.stream, info.LastDeliveredID, info.Pending, last[0].ID)
		}
	}
	// The other group is unaffected: nothing delivered, every entry to read.
	if info := groupInfo(t, rdb, docs, "someone-else"); info.LastDeliveredID != "0-0" || info.Pending != 0 {
		t.Errorf("group someone-else: last delivered %s, %d pending; want 0-0, 0", info.LastDeliveredID, info.Pending)
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "someone-else", Consumer: "c", Streams: []string{docs, ">"}, Count: 100}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range res[0].Messages {
		ids = append(ids, m.Values["_watermill_message_uuid"].(string))
	}
	if want := eventIDs(uploaded, finalized, synced, uploadedB, rejected, deleted); !slices.Equal(ids, want) {
		t.Errorf("group someone-else reads %v; want %v", ids, want)
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	const secret = "canary-pw-5e1f"
	withPassword := testenv.Env{"REDIS_URL": "redis://:" + secret + "@127.0.0.1:6379/0"}
	var out strings.Builder
	if err := run(context.Background(), []string{"-h"}, withPassword.Getenv, &out); err != nil ||
		!strings.Contains(out.String(), "-types") || strings.Contains(out.String(), secret) {
		t.Errorf("-h: %v, printed %q", err, out.String())
	}
	for _, args := range [][]string{{"--bogus"}, {"extra"}, {"--redis", "tcp://127.0.0.1:6379"}, {"--redis", "redis://:" + secret + "@127.0.0.1:port/0"}} {
		err := run(context.Background(), args, func(string) string { return "" }, io.Discard)
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("%q: %v", args, err)
		}
	}
	// An unreachable Redis stops it at once with an error.
	err := run(context.Background(), nil, testenv.Env{"REDIS_URL": "redis://127.0.0.1:1/0"}.Getenv, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("unreachable Redis: %v", err)
	}
}

// start runs the example with stdout out until out stops it (or the test
// ends), and returns a function waiting (bounded) for what run returned.
func start(t *testing.T, out *stopAfter, args []string, env testenv.Env) (wait func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	out.stop = cancel
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = run(ctx, args, env.Getenv, out)
	}()
	wait = func() error {
		t.Helper()
		select {
		case <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("run did not stop within 10 s; printed:\n%s", out.String())
			return nil
		}
	}
	t.Cleanup(func() { cancel(); <-done })
	return wait
}

// stopAfter is a stdout that stops the run as soon as it has printed lines
// lines, in the Write call: the moment when a stop most easily loses the
// acknowledgement of the message just printed.
type stopAfter struct {
	lines int
	stop  context.CancelFunc
	mu    sync.Mutex
	buf   strings.Builder
}

func (w *stopAfter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Count(w.buf.String(), "\n") >= w.lines {
		w.stop()
	}
	return len(p), nil
}

func (w *stopAfter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func newID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// event builds an envelope as DocuVault does, valid against its schema.
func event(t *testing.T, typ, aggType string, aggID uuid.UUID, actor events.Actor, corr uuid.UUID, cause *events.Envelope, data any) events.Envelope {
	t.Helper()
	ev, err := events.New(typ, aggType, aggID, actor, corr, cause, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.Validate([]byte(payloads(t, ev)[0])); err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
	return ev
}

// publish sends events as the relay does: its publisher, its messages.
func publish(t *testing.T, rdb *redis.Client, evs ...events.Envelope) {
	t.Helper()
	rows := make([]store.OutboxRow, len(evs))
	for i, ev := range evs {
		corr := ev.CorrelationID
		rows[i] = store.OutboxRow{EventID: ev.ID, Stream: ev.Stream(), EventType: ev.Type, AggregateID: ev.AggregateID,
			CorrelationID: &corr, Payload: []byte(payloads(t, ev)[0]), Version: ev.Version}
	}
	if err := (relay.StreamPublisher{Redis: rdb}).Publish(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
}

func payloads(t *testing.T, evs ...events.Envelope) []string {
	t.Helper()
	out := make([]string, len(evs))
	for i, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out
}

func eventIDs(evs ...events.Envelope) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID.String()
	}
	return out
}

func stamp(ev events.Envelope) string { return ev.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z") }

func lines(p *testenv.Proc) []string {
	return strings.FieldsFunc(p.Log(), func(r rune) bool { return r == '\n' })
}

// waitLines waits (bounded) until p printed n lines.
func waitLines(t *testing.T, p *testenv.Proc, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(lines(p)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("printed %d lines within 10 s; want %d:\n%s", len(lines(p)), n, p.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func groupInfo(t *testing.T, rdb *redis.Client, stream, group string) redis.XInfoGroup {
	t.Helper()
	groups, err := rdb.XInfoGroups(context.Background(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if g.Name == group {
			return g
		}
	}
	t.Fatalf("no group %s on %s (groups: %v)", group, stream, groups)
	return redis.XInfoGroup{}
}
