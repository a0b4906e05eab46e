package main

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/docuvault/docuvault/internal/finalize"
)

// FuzzStreamEntry: whatever fields a Redis stream entry holds,
// tolerantUnmarshaller returns a message and no error (an error would end
// the subscription). For an entry Watermill's unmarshaller decodes, it is
// the same message; for any other, it is marked malformed, has an id and
// carries the entry's fields as its payload, and rejectMalformed fails it
// with finalize.ErrMalformed without calling the handler. A message
// written by the relay's marshaller comes back unchanged.
func FuzzStreamEntry(f *testing.F) {
	// More seeds are in testdata/fuzz/FuzzStreamEntry.
	md := func(m message.Metadata) string {
		v, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal("", &message.Message{UUID: "x", Metadata: m})
		if err != nil {
			f.Fatal(err)
		}
		return string(v["metadata"].([]byte))
	}
	f.Add(true, "0190a5c8-0000-7000-8000-000000000001", `{"type":"document.uploaded"}`, md(message.Metadata{"type": "document.uploaded"}))
	f.Add(true, "0190a5c8-0000-7000-8000-000000000001", `{}`, "")
	f.Add(false, "", `{}`, "")
	f.Add(true, "x", "", "\xc1")
	f.Fuzz(func(t *testing.T, hasUUID bool, id, payload, metadata string) {
		// go-redis returns every field of an entry as a string.
		values := map[string]any{"payload": payload, "metadata": metadata}
		if hasUUID {
			values[redisstream.UUIDHeaderKey] = id
		}
		msg, err := tolerantUnmarshaller{}.Unmarshal(values)
		if err != nil || msg == nil {
			t.Fatalf("Unmarshal: %v, %v; want a message", msg, err)
		}
		reason := msg.Metadata.Get(malformedKey)
		want, wantErr := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
		if wantErr == nil {
			if !msg.Equals(want) {
				t.Errorf("a well-formed entry became %v %q %q; want %v %q %q", msg.UUID, msg.Metadata, msg.Payload, want.UUID, want.Metadata, want.Payload)
			}
		} else {
			var fields map[string]any
			switch {
			case reason == "":
				t.Errorf("entry Watermill cannot decode (%v) not marked malformed", wantErr)
			case msg.UUID == "" || hasUUID && id != "" && msg.UUID != id:
				t.Errorf("malformed entry with uuid %q became message %q", id, msg.UUID)
			case json.Unmarshal(msg.Payload, &fields) != nil || len(fields) != len(values):
				t.Errorf("malformed message's payload is not the entry's fields: %s", msg.Payload)
			}
		}
		if reason != "" {
			called := false
			_, err := rejectMalformed(func(*message.Message) ([]*message.Message, error) {
				called = true
				return nil, nil
			})(msg)
			if called || !errors.Is(err, finalize.ErrMalformed) {
				t.Errorf("rejectMalformed: handler called %v, error %v; want finalize.ErrMalformed", called, err)
			}
		}

		// The relay's marshaller and the unmarshaller agree.
		sent := message.NewMessage(id, []byte(payload))
		sent.Metadata.Set("type", metadata)
		entry, err := redisstream.DefaultMarshallerUnmarshaller{}.Marshal("", sent)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range entry {
			if b, ok := v.([]byte); ok {
				entry[k] = string(b)
			}
		}
		got, err := tolerantUnmarshaller{}.Unmarshal(entry)
		if err != nil || !got.Equals(sent) {
			t.Errorf("round trip: sent %q %q %q, got %q %q %q (%v)", sent.UUID, sent.Metadata, sent.Payload, got.UUID, got.Metadata, got.Payload, err)
		}
	})
}
