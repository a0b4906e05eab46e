package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzEnvelope checks the decoding consumers do (Validate as the contract,
// json.Unmarshal into Envelope and its data type) on any payload. A payload
// Validate accepts decodes, with every envelope field set, its data decodes
// into the Go type of its event type, and it survives a decode/encode round
// trip unchanged and still valid. A payload Validate refuses gets one of
// the errors Validate documents, the one that matches what is wrong.
func FuzzEnvelope(f *testing.F) {
	// More seeds, one valid event of each type and many broken ones, are
	// in testdata/fuzz/FuzzEnvelope.
	for _, s := range []string{
		`{"id":"0190a5c8-0000-7000-8000-000000000001","type":"topic.created","version":1,` +
			`"occurred_at":"2026-05-01T10:15:02.123456Z","aggregate_type":"topic","aggregate_id":"0190a5c8-0000-7000-8000-000000000002",` +
			`"actor":{"type":"anonymous"},"correlation_id":"0190a5c8-0000-7000-8000-000000000003",` +
			`"data":{"id":"0190a5c8-0000-7000-8000-000000000002","user_id":null,"name":"Taxes"}}`,
		`{}`,
		`{"type":"topic.created","version":1.0}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		err := Validate(payload)
		if err != nil {
			checkValidateError(t, payload, err)
			return
		}
		var ev Envelope
		if err := json.Unmarshal(payload, &ev); err != nil {
			t.Fatalf("Validate accepts what consumers cannot decode: %v\n%s", err, payload)
		}
		switch {
		case ev.ID.Version() != 7:
			t.Errorf("event id %s is not a UUIDv7", ev.ID)
		case dataType(ev.Type) == nil || ev.Version < 1:
			t.Errorf("decoded as %s version %d", ev.Type, ev.Version)
		case ev.OccurredAt.Location() != time.UTC || ev.OccurredAt.Nanosecond()%1000 != 0:
			t.Errorf("occurred_at %v is not UTC to the microsecond", ev.OccurredAt)
		case !slices.Contains([]string{"anonymous", "user", "system"}, ev.Actor.Type), (ev.Actor.Type == "user") != (ev.Actor.ID != nil):
			t.Errorf("decoded with actor %+v", ev.Actor)
		case !slices.Contains(Streams, ev.Stream()) || ev.Stream() == StreamAudit:
			t.Errorf("aggregate type %q has no stream", ev.AggregateType)
		}

		// The data decodes into the Go type of the event type and encodes
		// back to the same value, which is still valid.
		data := dataType(ev.Type)
		if data == nil {
			t.Fatalf("event type %s has a schema but no Go data type in dataType", ev.Type)
		}
		if err := json.Unmarshal(ev.Data, data); err != nil {
			if integerNotation(err) {
				// JSON Schema's integer includes 5.0 and 1e3, which Go's
				// integers refuse; DocuVault writes integers plainly.
				return
			}
			t.Fatalf("Validate accepts %s data consumers cannot decode into %T: %v\n%s", ev.Type, data, err, payload)
		}
		redone := ev
		redone.Data = mustMarshal(t, data)
		if !sameJSON(t, redone.Data, ev.Data) {
			t.Errorf("%T changes the data: %s became %s", data, ev.Data, redone.Data)
		}
		if err := Validate(mustMarshal(t, redone)); err != nil {
			t.Errorf("decoded and encoded again, the event is invalid: %v\n%s", err, mustMarshal(t, redone))
		}

		// The envelope survives a round trip.
		again := mustMarshal(t, ev)
		if err := Validate(again); err != nil {
			t.Errorf("decoded and encoded again, the event is invalid: %v\n%s", err, again)
		}
		var back Envelope
		if err := json.Unmarshal(again, &back); err != nil {
			t.Fatal(err)
		}
		if !back.OccurredAt.Equal(ev.OccurredAt) || !sameJSON(t, back.Data, ev.Data) {
			t.Errorf("round trip changed the time or data: %+v became %+v", ev, back)
		}
		back.OccurredAt, back.Data, ev.OccurredAt, ev.Data = time.Time{}, nil, time.Time{}, nil
		if !reflect.DeepEqual(back, ev) {
			t.Errorf("round trip changed the envelope: %+v became %+v", ev, back)
		}
	})
}

// checkValidateError fails unless err is the error Validate documents for
// what is wrong with payload: not a JSON object with a string type and an
// integer version, no schema for them, or a *SchemaError.
func checkValidateError(t *testing.T, payload []byte, err error) {
	t.Helper()
	var se *SchemaError
	isSchemaErr := errors.As(err, &se)
	typ, version, shapeOK := payloadShape(payload)
	switch {
	case strings.HasPrefix(err.Error(), "load event schemas"):
		t.Fatal(err)
	case !shapeOK:
		if isSchemaErr || errors.Is(err, ErrNoSchema) {
			t.Errorf("payload without a string type and an integer version: %v; want the payload error\n%s", err, payload)
		}
	case isSchemaErr:
		if se.Type != typ || se.Version != version || len(se.Problems) == 0 {
			t.Errorf("SchemaError for %s version %d with %d problems; the payload is %s version %d", se.Type, se.Version, len(se.Problems), typ, version)
		}
		for _, p := range se.Problems {
			if p.Message == "" || p.Schema == "" || (p.Pointer != "" && !strings.HasPrefix(p.Pointer, "/")) {
				t.Errorf("problem %+v", p)
			}
		}
	case !errors.Is(err, ErrNoSchema):
		t.Errorf("%s version %d: %v (%T); want a *SchemaError or ErrNoSchema", typ, version, err, err)
	}
}

// payloadShape decodes payload as Validate does, independently: it is
// a JSON object with a string "type" and a whole number "version" in int
// range.
func payloadShape(payload []byte) (typ string, version int, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var obj map[string]any
	if dec.Decode(&obj) != nil || obj == nil {
		return "", 0, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", 0, false // something after the object
	}
	typ, ok = obj["type"].(string)
	num, isNum := obj["version"].(json.Number)
	if !ok || !isNum {
		return "", 0, false
	}
	v, err := strconv.Atoi(num.String())
	return typ, v, err == nil
}

// dataType returns a new value of the Go type of typ's data, nil for a type
// it does not know.
func dataType(typ string) any {
	switch {
	case typ == CloudConnectionFailing:
		return new(CloudConnectionFailure)
	case strings.HasPrefix(typ, "document."):
		return new(Document)
	case strings.HasPrefix(typ, "topic."):
		return new(Topic)
	case strings.HasPrefix(typ, "folder."):
		return new(Folder)
	case strings.HasPrefix(typ, "cloud_connection."):
		return new(CloudConnection)
	case strings.HasPrefix(typ, "cloud_sync."):
		return new(CloudSync)
	case typ == UserRegistered:
		return new(User)
	case strings.HasPrefix(typ, "user."):
		return new(UserAuth)
	}
	return nil
}

// integerNotation reports whether err is Go refusing a whole number written
// with a fraction or an exponent as an integer.
func integerNotation(err error) bool {
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) || !strings.HasPrefix(typeErr.Type.Kind().String(), "int") {
		return false
	}
	num, ok := strings.CutPrefix(typeErr.Value, "number ")
	return ok && strings.ContainsAny(num, ".eE")
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := errors.Join(json.Unmarshal(a, &va), json.Unmarshal(b, &vb)); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(va, vb)
}
