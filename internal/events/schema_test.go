package events

import (
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/google/uuid"
)

// eventTypes returns the values of the event type constants declared in
// events.go, read from the source so that a new constant without a schema
// fails TestSchemasCoverEveryEventType.
func eventTypes(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "events.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	typeValue := regexp.MustCompile(`^[a-z_]+\.[a-z_]+$`)
	var out []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) || strings.HasPrefix(name.Name, "Stream") || strings.HasPrefix(name.Name, "Meta") {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				if typeValue.MatchString(v) {
					out = append(out, v)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("found no event type constants in events.go")
	}
	return out
}

func TestSchemasCoverEveryEventType(t *testing.T) {
	byKey, err := loadSchemas()
	if err != nil {
		t.Fatal(err)
	}
	types := eventTypes(t)
	for _, typ := range types {
		if byKey[schemaKey{typ, Version}] == nil {
			t.Errorf("no schema for %s version %d (want schemas/%s)", typ, Version, schemaFileName(typ, Version))
		}
	}
	for k := range byKey {
		if !slices.Contains(types, k.typ) {
			t.Errorf("schema %s is for a type events.go does not declare", schemaFileName(k.typ, k.version))
		}
	}
	// Each file's constants agree with its name, and its $id with the
	// base URL the others resolve it against.
	names, _ := fs.Glob(schemaFiles, "schemas/*.json")
	for _, name := range names {
		b, _ := fs.ReadFile(schemaFiles, name)
		var s struct {
			ID         string `json:"$id"`
			Schema     string `json:"$schema"`
			Properties struct {
				Type    struct{ Const string }
				Version struct{ Const int }
			}
		}
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		base := strings.TrimPrefix(name, "schemas/")
		if s.ID != SchemaBaseURL+base || s.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $id %q, $schema %q", name, s.ID, s.Schema)
		}
		if m := eventSchemaFile.FindStringSubmatch(base); m != nil {
			if s.Properties.Type.Const != m[1] || strconv.Itoa(s.Properties.Version.Const) != m[2] {
				t.Errorf("%s: type const %q, version const %d", name, s.Properties.Type.Const, s.Properties.Version.Const)
			}
		}
	}
}

func newID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

func ptr[T any](v T) *T { return &v }

// samples returns one realistic event of every type, built as the code
// builds them: the API's events with no cause, the pipeline's with one.
func samples(t *testing.T) []Envelope {
	t.Helper()
	docID, owner, topic, folder, conn, session := newID(), newID(), newID(), newID(), newID(), newID()
	doc := Document{
		ID: docID, Title: "Quarterly", Filename: "Report ü.pdf", ContentType: "application/pdf",
		SizeBytes: 120394, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Status: "pending", StorageKey: "staging/" + docID.String(),
	}
	uploaded := doc
	uploaded.TopicID, uploaded.FolderID, uploaded.DuplicateOf = &topic, &folder, ptr(newID())
	finalized := doc
	finalized.Status, finalized.StorageKey = "ready", "users/_unowned/documents/"+docID.String()
	owned := finalized
	owned.UserID, owned.StorageKey = &owner, "users/"+owner.String()+"/documents/"+docID.String()
	rejected := doc
	rejected.Status, rejected.RejectReason = "rejected", ptr("object_missing")
	deleted := finalized
	deleted.Status = "deleted"
	deletedPending := doc
	deletedPending.Status = "deleted"

	webdav := CloudConnection{
		ID: conn, Provider: "webdav", Name: "nextcloud", Status: "active", DeleteRemote: true,
		Settings: json.RawMessage(`{"url":"https://cloud.example.com/remote.php/dav/files/alice/","prefix":"DocuVault/"}`),
	}
	s3 := CloudConnection{
		ID: conn, UserID: &owner, Provider: "s3", Name: "backup", Status: "failing",
		Settings: json.RawMessage(`{"endpoint":"s3.example.com:443","bucket":"dv-backup","prefix":"","use_ssl":true,"region":"eu-west-1"}`),
	}
	paused := webdav
	paused.Status, paused.DeleteRemote = "paused", false
	remoteKey := "DocuVault/" + docID.String() + "/Report ü.pdf"

	corr := newID()
	upload, err := New(DocumentUploaded, "document", docID, Anonymous, corr, nil, uploaded)
	if err != nil {
		t.Fatal(err)
	}
	del, err := New(DocumentDeleted, "document", docID, Anonymous, newID(), nil, deleted)
	if err != nil {
		t.Fatal(err)
	}
	user := Actor{Type: "user", ID: &owner}
	topicDeleted, err := New(TopicDeleted, "topic", topic, user, newID(), nil, Topic{ID: topic, UserID: &owner, Name: "Taxes"})
	if err != nil {
		t.Fatal(err)
	}
	syncFailed, err := New(CloudSyncFailed, "document", docID, System, corr, &upload, CloudSync{DocumentID: docID, ConnectionID: conn,
		Provider: "s3", Operation: "copy", RemoteKey: docID.String() + "/report.pdf", Attempts: 10, Error: "Access Denied."})
	if err != nil {
		t.Fatal(err)
	}
	untopiced := owned
	untopiced.FolderID = &folder
	unfiled := rejected
	failing := CloudConnectionFailure{CloudConnection: s3, LastError: `PUT https://s3.example.com/dv-backup/x: 403 Forbidden: Access Denied (secret "[REDACTED]")`}
	recovered := s3
	recovered.Status = "active"
	out := []Envelope{upload, del, topicDeleted, syncFailed}
	for _, c := range []struct {
		typ, agg string
		actor    Actor
		cause    *Envelope
		data     any
	}{
		{DocumentUploaded, "document", user, nil, doc},
		{DocumentFinalized, "document", System, &upload, finalized},
		{DocumentFinalized, "document", System, &upload, owned},
		{DocumentRejected, "document", System, &upload, rejected},
		{DocumentDeleted, "document", Anonymous, nil, deletedPending},
		{DocumentUpdated, "document", user, &topicDeleted, untopiced},
		{DocumentUpdated, "document", Anonymous, &topicDeleted, unfiled},
		{DocumentUpdated, "document", Anonymous, &topicDeleted, doc},
		{TopicCreated, "topic", Anonymous, nil, Topic{ID: topic, Name: "Taxes 2026"}},
		{TopicRenamed, "topic", user, nil, Topic{ID: topic, UserID: &owner, Name: "Taxes"}},
		{TopicDeleted, "topic", Anonymous, nil, Topic{ID: topic, Name: "Taxes"}},
		{FolderCreated, "folder", Anonymous, nil, Folder{ID: folder, Name: "Invoices"}},
		{FolderUpdated, "folder", Anonymous, nil, Folder{ID: folder, ParentID: ptr(newID()), Name: "Invoices 2026"}},
		{FolderDeleted, "folder", user, nil, Folder{ID: folder, UserID: &owner, Name: "Invoices 2026"}},
		{CloudConnectionCreated, "cloud_connection", Anonymous, nil, webdav},
		{CloudConnectionUpdated, "cloud_connection", Anonymous, nil, paused},
		{CloudConnectionUpdated, "cloud_connection", user, nil, s3},
		{CloudConnectionDeleted, "cloud_connection", Anonymous, nil, webdav},
		{CloudConnectionFailing, "cloud_connection", System, &syncFailed, failing},
		{CloudConnectionRecovered, "cloud_connection", System, &syncFailed, recovered},
		{CloudConnectionRecovered, "cloud_connection", System, &syncFailed, webdav},
		{CloudSyncCompleted, "document", System, &upload, CloudSync{DocumentID: docID, ConnectionID: conn, Provider: "webdav",
			Operation: "copy", RemoteKey: remoteKey, Attempts: 1, ETag: `"9b2cf535f27731c974343645a3985328"`, SizeBytes: 120394}},
		{CloudSyncCompleted, "document", System, &upload, CloudSync{DocumentID: docID, ConnectionID: conn, Provider: "s3",
			Operation: "copy", RemoteKey: docID.String() + "/report.pdf", Attempts: 3, SizeBytes: 1}},
		{CloudSyncRemoved, "document", System, &del, CloudSync{DocumentID: docID, ConnectionID: conn, Provider: "webdav",
			Operation: "remove", RemoteKey: remoteKey, Attempts: 1}},
		{CloudSyncFailed, "document", System, &upload, CloudSync{DocumentID: docID, ConnectionID: conn, Provider: "webdav",
			Operation: "copy", RemoteKey: remoteKey, Attempts: 10, Error: "PUT: 503 Service Unavailable"}},
		{CloudSyncFailed, "document", System, &del, CloudSync{DocumentID: docID, ConnectionID: conn, Provider: "s3",
			Operation: "remove", RemoteKey: remoteKey, Attempts: 10, Error: "Access Denied."}},
		{UserRegistered, "user", Anonymous, nil, User{ID: owner, Email: "alice@example.org", IsAdmin: true}},
		{UserRegistered, "user", System, nil, User{ID: owner, Email: "Bob.Smith+dv@example.org"}},
		{UserLoggedIn, "user", user, nil, UserAuth{ID: owner, SessionID: &session}},
		{UserLoginFailed, "user", Anonymous, nil, UserAuth{ID: owner, Reason: LoginWrongPassword}},
		{UserLoginFailed, "user", Anonymous, nil, UserAuth{ID: UnknownUserID([]byte("an hmac of the address")), Reason: LoginUnknownUser}},
		{UserTokenRefreshed, "user", user, nil, UserAuth{ID: owner, SessionID: &session}},
		{UserTokenReuseDetected, "user", Anonymous, nil, UserAuth{ID: owner, SessionID: &session, Reason: ReuseUsed, RevokedTokens: ptr[int64](1)}},
		{UserLoggedOut, "user", user, nil, UserAuth{ID: owner, SessionID: &session, RevokedTokens: ptr[int64](2)}},
		{UserPasswordChanged, "user", user, nil, UserAuth{ID: owner, RevokedTokens: ptr[int64](0)}},
	} {
		ev, err := New(c.typ, c.agg, docID, c.actor, newID(), c.cause, c.data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func TestValidateAcceptsEveryEventType(t *testing.T) {
	seen := map[string]bool{}
	for _, ev := range samples(t) {
		payload, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(payload); err != nil {
			t.Errorf("%s: %v\n%s", ev.Type, err, payload)
		}
		seen[ev.Type] = true
	}
	for _, typ := range eventTypes(t) {
		if !seen[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
}

// Validate is safe for concurrent use (run alone, this includes the first
// call, which loads the schemas).
func TestValidateConcurrently(t *testing.T) {
	var payloads [][]byte
	for _, ev := range samples(t) {
		b, _ := json.Marshal(ev)
		payloads = append(payloads, b)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, p := range payloads {
				if err := Validate(p); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

// sample returns the first sample of typ as a JSON object to break.
func sample(t *testing.T, typ string) map[string]any {
	t.Helper()
	for _, ev := range samples(t) {
		if ev.Type == typ {
			b, _ := json.Marshal(ev)
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no sample of %s", typ)
	return nil
}

func TestValidateRejects(t *testing.T) {
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	for _, c := range []struct {
		name    string
		typ     string
		break_  func(m map[string]any)
		pointer string // of one of the problems
		keyword string
	}{
		{"missing envelope field", DocumentUploaded, func(m map[string]any) { delete(m, "correlation_id") }, "", "required"},
		{"missing data field", DocumentFinalized, func(m map[string]any) { delete(data(m), "sha256") }, "/data", "required"},
		{"missing nullable field", TopicCreated, func(m map[string]any) { delete(data(m), "user_id") }, "/data", "required"},
		{"size as a string", DocumentUploaded, func(m map[string]any) { data(m)["size_bytes"] = "120394" }, "/data/size_bytes", "type"},
		{"zero size", DocumentUploaded, func(m map[string]any) { data(m)["size_bytes"] = 0 }, "/data/size_bytes", "minimum"},
		{"fractional size", DocumentUploaded, func(m map[string]any) { data(m)["size_bytes"] = 1.5 }, "/data/size_bytes", "type"},
		{"bad uuid", TopicRenamed, func(m map[string]any) { m["aggregate_id"] = "not-a-uuid" }, "/aggregate_id", "format"},
		{"uppercase uuid", TopicRenamed, func(m map[string]any) { data(m)["id"] = strings.ToUpper(data(m)["id"].(string)) }, "/data/id", "pattern"},
		{"event id not v7", FolderDeleted, func(m map[string]any) { m["id"] = uuid.NewString() }, "/id", "pattern"},
		{"extra envelope property", TopicDeleted, func(m map[string]any) { m["stream"] = "docuvault.topics" }, "", "additionalProperties"},
		{"extra data property", FolderUpdated, func(m map[string]any) { data(m)["path"] = "/a/b" }, "/data", "additionalProperties"},
		{"credentials in a connection event", CloudConnectionCreated, func(m map[string]any) {
			data(m)["credentials"] = map[string]any{"username": "alice", "password": "secret"}
		}, "/data", "additionalProperties"},
		{"password in settings", CloudConnectionCreated, func(m map[string]any) {
			data(m)["settings"].(map[string]any)["password"] = "secret"
		}, "/data/settings", "additionalProperties"},
		{"s3 settings on webdav", CloudConnectionCreated, func(m map[string]any) {
			data(m)["settings"] = map[string]any{"endpoint": "s3.example.com", "bucket": "b-1", "prefix": "", "use_ssl": true, "region": ""}
		}, "/data/settings", "required"},
		{"unknown connection status", CloudConnectionUpdated, func(m map[string]any) { data(m)["status"] = "broken" }, "/data/status", "enum"},
		{"uppercase sha256", DocumentFinalized, func(m map[string]any) {
			data(m)["sha256"] = strings.ToUpper(data(m)["sha256"].(string))
		}, "/data/sha256", "pattern"},
		{"short sha256", DocumentFinalized, func(m map[string]any) { data(m)["sha256"] = "9f86d0" }, "/data/sha256", "pattern"},
		{"finalized but pending", DocumentFinalized, func(m map[string]any) { data(m)["status"] = "pending" }, "/data/status", "const"},
		{"finalized at the staging key", DocumentFinalized, func(m map[string]any) {
			data(m)["storage_key"] = "staging/" + data(m)["id"].(string)
		}, "/data/storage_key", "pattern"},
		{"key outside the bucket layout", DocumentDeleted, func(m map[string]any) { data(m)["storage_key"] = "../etc/passwd" }, "/data/storage_key", "pattern"},
		{"rejected without a reason", DocumentRejected, func(m map[string]any) { delete(data(m), "reject_reason") }, "/data", "required"},
		{"unknown reject reason", DocumentRejected, func(m map[string]any) { data(m)["reject_reason"] = "virus" }, "/data/reject_reason", "enum"},
		{"reject reason on uploaded", DocumentUploaded, func(m map[string]any) { data(m)["reject_reason"] = "object_missing" }, "/data/reject_reason", "false"},
		{"null duplicate_of", DocumentUploaded, func(m map[string]any) { data(m)["duplicate_of"] = nil }, "/data/duplicate_of", "type"},
		{"wrong type const", DocumentUploaded, func(m map[string]any) { m["aggregate_type"] = "topic" }, "/aggregate_type", "const"},
		{"finalized without cause", DocumentFinalized, func(m map[string]any) { delete(m, "causation_id") }, "", "required"},
		{"API event with a cause", TopicCreated, func(m map[string]any) { m["causation_id"] = newID().String() }, "/causation_id", "false"},
		{"API event by system", FolderCreated, func(m map[string]any) { m["actor"] = map[string]any{"type": "system"} }, "/actor/type", "enum"},
		{"pipeline event by anonymous", CloudSyncCompleted, func(m map[string]any) { m["actor"] = map[string]any{"type": "anonymous"} }, "/actor/type", "const"},
		{"user actor without id", TopicCreated, func(m map[string]any) { m["actor"] = map[string]any{"type": "user"} }, "/actor", "required"},
		{"anonymous actor with id", TopicCreated, func(m map[string]any) {
			m["actor"] = map[string]any{"type": "anonymous", "id": newID().String()}
		}, "/actor/id", "false"},
		{"unknown actor", TopicCreated, func(m map[string]any) { m["actor"] = map[string]any{"type": "robot"} }, "/actor/type", "enum"},
		{"time not RFC 3339", TopicCreated, func(m map[string]any) { m["occurred_at"] = "27/11/2026 10:15" }, "/occurred_at", "format"},
		{"time not UTC", TopicCreated, func(m map[string]any) { m["occurred_at"] = "2026-11-27T11:15:02.123456+01:00" }, "/occurred_at", "pattern"},
		{"completed without size", CloudSyncCompleted, func(m map[string]any) { delete(data(m), "size_bytes") }, "/data", "required"},
		{"completed with an error", CloudSyncCompleted, func(m map[string]any) { data(m)["error"] = "boom" }, "/data/error", "false"},
		{"removed as a copy", CloudSyncRemoved, func(m map[string]any) { data(m)["operation"] = "copy" }, "/data/operation", "const"},
		{"failed without error", CloudSyncFailed, func(m map[string]any) { delete(data(m), "error") }, "/data", "required"},
		{"zero attempts", CloudSyncFailed, func(m map[string]any) { data(m)["attempts"] = 0 }, "/data/attempts", "minimum"},
		{"remote key without the document id", CloudSyncRemoved, func(m map[string]any) { data(m)["remote_key"] = "DocuVault/report.pdf" }, "/data/remote_key", "pattern"},
		{"updated without cause", DocumentUpdated, func(m map[string]any) { delete(m, "causation_id") }, "", "required"},
		{"updated by system", DocumentUpdated, func(m map[string]any) { m["actor"] = map[string]any{"type": "system"} }, "/actor/type", "enum"},
		{"updated after deletion", DocumentUpdated, func(m map[string]any) { data(m)["status"] = "deleted" }, "/data/status", "enum"},
		{"reject reason on an updated ready document", DocumentUpdated, func(m map[string]any) {
			data(m)["reject_reason"] = "object_missing"
		}, "/data/reject_reason", "false"},
		{"failing without its error", CloudConnectionFailing, func(m map[string]any) { delete(data(m), "last_error") }, "/data", "required"},
		{"failing but active", CloudConnectionFailing, func(m map[string]any) { data(m)["status"] = "active" }, "/data/status", "const"},
		{"failing by anonymous", CloudConnectionFailing, func(m map[string]any) { m["actor"] = map[string]any{"type": "anonymous"} }, "/actor/type", "const"},
		{"credentials in a failing event", CloudConnectionFailing, func(m map[string]any) {
			data(m)["credentials"] = map[string]any{"access_key_id": "AKID", "secret_access_key": "secret"}
		}, "/data", "additionalProperties"},
		{"webdav settings on a failing s3", CloudConnectionFailing, func(m map[string]any) {
			data(m)["settings"] = map[string]any{"url": "https://cloud.example.com/dav/", "prefix": ""}
		}, "/data/settings", "required"},
		{"secret in failing settings", CloudConnectionFailing, func(m map[string]any) {
			data(m)["settings"].(map[string]any)["secret_access_key"] = "secret"
		}, "/data/settings", "additionalProperties"},
		{"recovered but failing", CloudConnectionRecovered, func(m map[string]any) { data(m)["status"] = "failing" }, "/data/status", "const"},
		{"recovered with an error", CloudConnectionRecovered, func(m map[string]any) { data(m)["last_error"] = "boom" }, "/data", "additionalProperties"},
		{"recovered without cause", CloudConnectionRecovered, func(m map[string]any) { delete(m, "causation_id") }, "", "required"},
		{"data not an object", TopicCreated, func(m map[string]any) { m["data"] = "{}" }, "/data", "type"},
		{"password in a registration", UserRegistered, func(m map[string]any) { data(m)["password"] = "correct horse" }, "/data", "additionalProperties"},
		{"password hash in a registration", UserRegistered, func(m map[string]any) { data(m)["password_hash"] = "$argon2id$v=19$..." }, "/data", "additionalProperties"},
		{"token in a refresh", UserTokenRefreshed, func(m map[string]any) { data(m)["refresh_token"] = "abc" }, "/data", "additionalProperties"},
		{"email in a failed login", UserLoginFailed, func(m map[string]any) { data(m)["email"] = "alice@example.org" }, "/data", "additionalProperties"},
		{"unknown login failure reason", UserLoginFailed, func(m map[string]any) { data(m)["reason"] = "bad luck" }, "/data/reason", "enum"},
		{"login without session", UserLoggedIn, func(m map[string]any) { delete(data(m), "session_id") }, "/data", "required"},
		{"login by anonymous", UserLoggedIn, func(m map[string]any) { m["actor"] = map[string]any{"type": "anonymous"} }, "/actor/type", "const"},
		{"reuse without revoked count", UserTokenReuseDetected, func(m map[string]any) { delete(data(m), "revoked_tokens") }, "/data", "required"},
		{"registration with a cause", UserRegistered, func(m map[string]any) { m["causation_id"] = newID().String() }, "/causation_id", "false"},
		{"email without @", UserRegistered, func(m map[string]any) { data(m)["email"] = "alice" }, "/data/email", "pattern"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := sample(t, c.typ)
			c.break_(m)
			payload, _ := json.Marshal(m)
			err := Validate(payload)
			var se *SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("Validate: %v; want a *SchemaError\n%s", err, payload)
			}
			if se.Type != c.typ || se.Version != 1 || !strings.Contains(err.Error(), c.typ) {
				t.Errorf("error names %s version %d: %v", se.Type, se.Version, err)
			}
			found := false
			for _, p := range se.Problems {
				if p.Pointer == c.pointer && p.Keyword == c.keyword {
					found = true
				}
				if p.Message == "" || p.Schema == "" {
					t.Errorf("problem without message or schema location: %+v", p)
				}
			}
			if !found {
				t.Errorf("no problem at %q with keyword %s in %+v", c.pointer, c.keyword, se.Problems)
			}
		})
	}
}

func TestValidateNeedsASchema(t *testing.T) {
	m := sample(t, TopicCreated)
	for _, c := range []struct {
		name    string
		payload func() []byte
		noSch   bool // errors.Is(err, ErrNoSchema)
		want    string
	}{
		{"unknown type", func() []byte { m["type"] = "topic.archived"; b, _ := json.Marshal(m); return b }, true, "topic.archived version 1"},
		{"unknown version", func() []byte { m["type"], m["version"] = TopicCreated, 2; b, _ := json.Marshal(m); return b }, true, "topic.created version 2"},
		{"no type", func() []byte { delete(m, "type"); b, _ := json.Marshal(m); return b }, false, `no string "type"`},
		{"version as a string", func() []byte { m["type"], m["version"] = TopicCreated, "1"; b, _ := json.Marshal(m); return b }, false, `no numeric "version"`},
		{"fractional version", func() []byte { m["type"], m["version"] = TopicCreated, 1.5; b, _ := json.Marshal(m); return b }, false, "not a whole number"},
		{"not JSON", func() []byte { return []byte(`{"type":`) }, false, "not JSON"},
		{"not an object", func() []byte { return []byte(`["topic.created"]`) }, false, "not a JSON object"},
		{"empty", func() []byte { return nil }, false, "not JSON"},
	} {
		err := Validate(c.payload())
		var se *SchemaError
		switch {
		case err == nil:
			t.Errorf("%s: Validate passed", c.name)
		case errors.As(err, &se):
			t.Errorf("%s: %v; want no schema to be tried", c.name, err)
		case errors.Is(err, ErrNoSchema) != c.noSch || !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: %v; want %q (ErrNoSchema: %v)", c.name, err, c.want, c.noSch)
		}
	}
}

// The schemas compile only from the files given: a $ref to anything else
// is an error, not a fetch.
func TestSchemasDoNotLoadFromOutside(t *testing.T) {
	fsys := fstest.MapFS{"schemas/topic.created.v1.json": {Data: []byte(`{
		"$schema": "https://json-schema.org/draft/2020-12/schema",
		"$id": "` + SchemaBaseURL + `topic.created.v1.json",
		"$ref": "https://example.com/envelope.json"}`)}}
	if _, err := compileSchemas(fsys); err == nil || !strings.Contains(err.Error(), "not one of the embedded event schemas") {
		t.Fatalf("compile with an outside $ref: %v", err)
	}
}
