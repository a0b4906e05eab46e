package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/cloudsync"
	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

// Cloud connections: /api/v1/cloud-connections. Credentials are
// write-only: they are sealed (AES-GCM, key from SECRET_KEY) before they
// reach the database, and no response, event, audit row or log line
// carries them; responses say "credentials_set": true instead.

// cloudConnectionJSON is a connection as the API returns it.
type cloudConnectionJSON struct {
	ID             uuid.UUID       `json:"id"`
	UserID         *uuid.UUID      `json:"user_id"`
	Provider       string          `json:"provider"`
	Name           string          `json:"name"`
	Settings       json.RawMessage `json:"settings"`
	CredentialsSet bool            `json:"credentials_set"`
	Status         string          `json:"status"`
	DeleteRemote   bool            `json:"delete_remote"`
	LastError      *string         `json:"last_error"`
	LastSyncedAt   *time.Time      `json:"last_synced_at"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	Links          struct {
		Self string `json:"self"`
		Test string `json:"test"`
	} `json:"links"`
}

func cloudConnectionPath(id uuid.UUID) string { return "/api/v1/cloud-connections/" + id.String() }

func toCloudConnectionJSON(c store.CloudConnection) cloudConnectionJSON {
	out := cloudConnectionJSON{
		ID: c.ID, UserID: c.UserID, Provider: c.Provider, Name: c.Name, Settings: c.Settings,
		CredentialsSet: len(c.Credentials) > 0, Status: c.Status, DeleteRemote: c.DeleteRemote,
		LastError: c.LastError, LastSyncedAt: c.LastSyncedAt, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
	out.Links.Self = cloudConnectionPath(c.ID)
	out.Links.Test = cloudConnectionPath(c.ID) + "/test"
	return out
}

// cloudConnectionEvent builds a cloud_connection event; its data (and so
// the audit row's details) has the settings and never the credentials.
func cloudConnectionEvent(r *http.Request, typ string, c store.CloudConnection) (events.Envelope, error) {
	return events.New(typ, "cloud_connection", c.ID, requestActor(r), correlationID(r), nil, c.EventData())
}

// requestActor is the actor of every event a request causes: the user it
// acts for (Owner), or anonymous when it acts for no one (a public route:
// register).
func requestActor(r *http.Request) events.Actor {
	if owner := Owner(r.Context()); owner != nil {
		return events.Actor{Type: "user", ID: owner}
	}
	return events.Anonymous
}

// inputError turns a cloudsync.InputError into a problem: 400 when the
// JSON has the wrong shape (missing, unknown or mistyped field), 422 when
// a value is well-formed but not acceptable. Both name the field.
func inputError(err error) error {
	var in *cloudsync.InputError
	if !errors.As(err, &in) {
		return err
	}
	if in.Malformed {
		return &apiError{status: http.StatusBadRequest, typ: "invalid-field", title: "Bad request",
			detail: in.Error(), extra: map[string]any{"field": in.Field}}
	}
	return &apiError{status: http.StatusUnprocessableEntity, typ: "invalid-setting", title: "Invalid setting",
		detail: in.Error(), extra: map[string]any{"field": in.Field}}
}

func (s *server) createCloudConnection(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Provider     *string         `json:"provider"`
		Name         *string         `json:"name"`
		Settings     json.RawMessage `json:"settings"`
		Credentials  json.RawMessage `json:"credentials"`
		DeleteRemote *bool           `json:"delete_remote"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Provider == nil {
		s.fail(w, r, &apiError{status: http.StatusBadRequest, typ: "invalid-field", title: "Bad request",
			detail: "provider is required (s3 or webdav)", extra: map[string]any{"field": "provider"}})
		return
	}
	if err := validName(in.Name, 200); err != nil {
		s.fail(w, r, err)
		return
	}
	settings, err := cloudsync.ParseSettings(*in.Provider, in.Settings)
	if err != nil {
		s.fail(w, r, inputError(err))
		return
	}
	creds, err := cloudsync.ParseCredentials(*in.Provider, in.Credentials)
	if err != nil {
		s.fail(w, r, inputError(err))
		return
	}
	c := store.CloudConnection{
		ID: uuid.Must(uuid.NewV7()), UserID: Owner(r.Context()), Provider: *in.Provider, Name: *in.Name,
		Settings: settings, KeyVersion: cloudsync.KeyVersion, Status: store.ConnectionActive, DeleteRemote: true,
	}
	if in.DeleteRemote != nil {
		c.DeleteRemote = *in.DeleteRemote
	}
	c.Credentials = s.Cloud.Seal(c.ID, creds)
	var out store.CloudConnection
	err = s.recordChange(r, func(tx pgx.Tx) (events.Envelope, error) {
		var err error
		if out, err = store.InsertCloudConnection(r.Context(), tx, c); err != nil {
			return events.Envelope{}, err
		}
		return cloudConnectionEvent(r, events.CloudConnectionCreated, out)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	w.Header().Set("Location", cloudConnectionPath(out.ID))
	writeJSON(w, http.StatusCreated, toCloudConnectionJSON(out))
}

func (s *server) listCloudConnections(w http.ResponseWriter, r *http.Request) {
	page, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	conns, err := store.ListCloudConnections(r.Context(), s.DB, scope(r.Context()), page.after, page.limit+1)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, newPage(conns, page.limit, func(c store.CloudConnection) uuid.UUID { return c.ID }, toCloudConnectionJSON))
}

func (s *server) getCloudConnection(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := store.GetCloudConnection(r.Context(), s.DB, scope(r.Context()), id)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, toCloudConnectionJSON(c))
}

// updateCloudConnection changes any of name, status (active or paused),
// delete_remote, settings and credentials (replaced whole). Setting the
// status to active, or replacing settings or credentials, also re-queues
// the syncs that had failed for good on this connection.
func (s *server) updateCloudConnection(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in struct {
		Name         *string         `json:"name"`
		Status       *string         `json:"status"`
		DeleteRemote *bool           `json:"delete_remote"`
		Settings     json.RawMessage `json:"settings"`
		Credentials  json.RawMessage `json:"credentials"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Name == nil && in.Status == nil && in.DeleteRemote == nil && in.Settings == nil && in.Credentials == nil {
		s.fail(w, r, badRequest("invalid-field", "send at least one of name, status, delete_remote, settings, credentials"))
		return
	}
	if in.Name != nil {
		if err := validName(in.Name, 200); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if in.Status != nil && *in.Status != store.ConnectionActive && *in.Status != store.ConnectionPaused {
		s.fail(w, r, &apiError{status: http.StatusUnprocessableEntity, typ: "invalid-setting", title: "Invalid setting",
			detail: "status must be active or paused", extra: map[string]any{"field": "status"}})
		return
	}
	var out store.CloudConnection
	err = s.recordChange(r, func(tx pgx.Tx) (events.Envelope, error) {
		c, err := store.LockCloudConnection(r.Context(), tx, scope(r.Context()), id)
		if err != nil {
			return events.Envelope{}, err
		}
		// Settings and credentials are validated against the stored
		// provider, which a PATCH cannot change.
		if in.Settings != nil {
			if c.Settings, err = cloudsync.ParseSettings(c.Provider, in.Settings); err != nil {
				return events.Envelope{}, inputError(err)
			}
		}
		if in.Credentials != nil {
			creds, err := cloudsync.ParseCredentials(c.Provider, in.Credentials)
			if err != nil {
				return events.Envelope{}, inputError(err)
			}
			c.Credentials, c.KeyVersion = s.Cloud.Seal(c.ID, creds), cloudsync.KeyVersion
		}
		if in.Name != nil {
			c.Name = *in.Name
		}
		if in.Status != nil {
			c.Status = *in.Status
		}
		if in.DeleteRemote != nil {
			c.DeleteRemote = *in.DeleteRemote
		}
		if out, err = store.UpdateCloudConnection(r.Context(), tx, c); err != nil {
			return events.Envelope{}, err
		}
		if in.Status != nil && *in.Status == store.ConnectionActive || in.Settings != nil || in.Credentials != nil {
			if _, err := store.RequeueFailedSyncs(r.Context(), tx, c.ID); err != nil {
				return events.Envelope{}, err
			}
		}
		return cloudConnectionEvent(r, events.CloudConnectionUpdated, out)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, toCloudConnectionJSON(out))
}

// deleteCloudConnection deletes the connection and the sync state of its
// documents. Copies already on the remote stay there.
func (s *server) deleteCloudConnection(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	err = s.recordChange(r, func(tx pgx.Tx) (events.Envelope, error) {
		c, err := store.DeleteCloudConnection(r.Context(), tx, scope(r.Context()), id)
		if err != nil {
			return events.Envelope{}, err
		}
		return cloudConnectionEvent(r, events.CloudConnectionDeleted, c)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// connectionTestTimeout bounds a connection test.
const connectionTestTimeout = 30 * time.Second

// connectionTestJSON is the outcome of a connection test. A test that ran
// is answered 200 whatever it found; failure says what went wrong:
// unreachable, auth_refused, not_found, no_write_permission,
// no_delete_permission or error.
type connectionTestJSON struct {
	OK      bool   `json:"ok"`
	Failure string `json:"failure,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// testCloudConnection checks that the remote answers, accepts the
// credentials and lets them write and delete under the prefix, by writing
// and deleting a small probe.
func (s *server) testCloudConnection(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := store.GetCloudConnection(r.Context(), s.DB, scope(r.Context()), id)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	secrets := s.Cloud.Secrets(c)
	p, err := s.Cloud.Open(c)
	if err != nil {
		writeJSON(w, http.StatusOK, connectionTestJSON{Failure: cloudsync.FailOther, Detail: cloudsync.ErrorText(err, secrets...)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), connectionTestTimeout)
	defer cancel()
	if err := p.Test(ctx); err != nil {
		kind := cloudsync.FailOther
		var te *cloudsync.TestError
		if errors.As(err, &te) {
			kind, err = te.Kind, te.Err
		}
		writeJSON(w, http.StatusOK, connectionTestJSON{Failure: kind, Detail: cloudsync.ErrorText(err, secrets...)})
		return
	}
	writeJSON(w, http.StatusOK, connectionTestJSON{OK: true})
}

// cloudSyncJSON is the state of a document on one cloud connection.
type cloudSyncJSON struct {
	ConnectionID  uuid.UUID  `json:"connection_id"`
	Operation     string     `json:"operation"` // copy, or remove once the document is deleted
	Status        string     `json:"status"`    // pending, synced, failed, removed
	Attempts      int        `json:"attempts"`
	LastError     *string    `json:"last_error"`
	RemoteKey     string     `json:"remote_key"`
	ETag          *string    `json:"etag"`
	SyncedAt      *time.Time `json:"synced_at"`
	NextAttemptAt *time.Time `json:"next_attempt_at"` // when pending
	UpdatedAt     time.Time  `json:"updated_at"`
}

// documentWithCloudSyncJSON is a document with its cloud sync state, as
// GET /api/v1/documents/{id} returns it.
type documentWithCloudSyncJSON struct {
	documentJSON
	CloudSync []cloudSyncJSON `json:"cloud_sync"`
}

// withCloudSync adds the document's sync state on each connection.
func (s *server) withCloudSync(r *http.Request, doc documentJSON) (documentWithCloudSyncJSON, error) {
	rows, err := store.DocumentCloudSync(r.Context(), s.DB, doc.ID)
	if err != nil {
		return documentWithCloudSyncJSON{}, dbErr(err)
	}
	out := documentWithCloudSyncJSON{documentJSON: doc, CloudSync: make([]cloudSyncJSON, 0, len(rows))}
	for _, row := range rows {
		j := cloudSyncJSON{
			ConnectionID: row.ConnectionID, Operation: row.Operation, Status: row.Status, Attempts: row.Attempts,
			LastError: row.LastError, RemoteKey: row.RemoteKey, ETag: row.ETag, SyncedAt: row.SyncedAt, UpdatedAt: row.UpdatedAt,
		}
		if row.Status == store.SyncPending {
			next := row.NextAttemptAt
			j.NextAttemptAt = &next
		}
		out.CloudSync = append(out.CloudSync, j)
	}
	return out, nil
}
