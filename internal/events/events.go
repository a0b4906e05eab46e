// Package events defines DocuVault's event envelope, its event types and the
// Redis streams they travel on. docs/events.md documents the contract.
//
// An event is written to the outbox in the transaction of the change that
// caused it, and published by the relay as a Watermill message whose UUID is
// the event id and whose metadata repeats the type and correlation id, so
// subscribers can filter without parsing the payload.
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Streams. One stream per aggregate type.
const (
	StreamDocuments = "docuvault.documents"
	StreamTopics    = "docuvault.topics"
	StreamFolders   = "docuvault.folders"
	// StreamCloudConnections carries cloud_connection.* events. The
	// cloud_sync.* events are about a document and travel on
	// StreamDocuments, in order with that document's other events.
	StreamCloudConnections = "docuvault.cloud_connections"
	// StreamUsers carries user.* events: accounts and authentication.
	StreamUsers = "docuvault.users"
)

// StreamAudit carries every event once more, in the order the relay
// published them, with where it came from (client IP and user agent, on
// this stream only) in the message metadata: the live tail of the audit
// log.
const StreamAudit = "docuvault.audit"

// Metadata keys of the audit stream's origin: where the change came from.
const (
	MetaClientIP  = "client_ip"
	MetaUserAgent = "user_agent"
)

// Streams lists every stream the relay publishes to.
var Streams = []string{StreamDocuments, StreamTopics, StreamFolders, StreamCloudConnections, StreamUsers, StreamAudit}

// Event types.
const (
	DocumentUploaded  = "document.uploaded"
	DocumentFinalized = "document.finalized"
	DocumentRejected  = "document.rejected"
	DocumentDeleted   = "document.deleted"
	TopicCreated      = "topic.created"
	TopicRenamed      = "topic.renamed"
	TopicDeleted      = "topic.deleted"
	FolderCreated     = "folder.created"
	FolderUpdated     = "folder.updated"
	FolderDeleted     = "folder.deleted"

	// DocumentUpdated: a document changed without changing status. In
	// version 1, the deletion of its topic or folder took it off the
	// document (topic_id or folder_id became null); the event is caused
	// by that topic.deleted or folder.deleted.
	DocumentUpdated = "document.updated"

	CloudConnectionCreated = "cloud_connection.created"
	CloudConnectionUpdated = "cloud_connection.updated"
	CloudConnectionDeleted = "cloud_connection.deleted"
	// CloudConnectionFailing: a copy or removal on an active connection
	// failed for good (cloud_sync.failed, its cause), and the connection
	// is now failing.
	CloudConnectionFailing = "cloud_connection.failing"
	// CloudConnectionRecovered: a copy succeeded on a failing connection
	// (cloud_sync.completed, its cause), which is active again.
	CloudConnectionRecovered = "cloud_connection.recovered"
	// CloudSyncCompleted: a document was copied to a connection.
	CloudSyncCompleted = "cloud_sync.completed"
	// CloudSyncRemoved: the remote copy of a deleted document was removed.
	CloudSyncRemoved = "cloud_sync.removed"
	// CloudSyncFailed: a copy or removal was given up after its last
	// attempt.
	CloudSyncFailed = "cloud_sync.failed"

	// Accounts and authentication (aggregate: the user). None carries a
	// password, a token or a hash of either.
	//
	// UserRegistered: an account was created (POST /api/v1/auth/register,
	// or `api users create` with actor system).
	UserRegistered = "user.registered"
	// UserLoggedIn: a login succeeded and began a session (a refresh
	// token family).
	UserLoggedIn = "user.logged_in"
	// UserLoginFailed: a login was refused: unknown email (the aggregate
	// is then UnknownUserID of it), wrong password or disabled account.
	UserLoginFailed = "user.login_failed"
	// UserTokenRefreshed: a refresh token was exchanged for a new pair.
	UserTokenRefreshed = "user.token_refreshed"
	// UserTokenReuseDetected: a refresh token already exchanged or revoked
	// was presented again; its whole session was revoked.
	UserTokenReuseDetected = "user.token_reuse_detected"
	// UserLoggedOut: a session was ended by its refresh token.
	UserLoggedOut = "user.logged_out"
	// UserPasswordChanged: the password was changed; every session and
	// access token of the user was revoked.
	UserPasswordChanged = "user.password_changed"
)

// Version is the envelope version every event type is at; a change that
// breaks an event's schema needs a new version.
const Version = 1

// Metadata keys of the Watermill message.
const (
	MetaType          = "type"
	MetaVersion       = "version"
	MetaCorrelationID = "correlation_id"
	MetaAggregateID   = "aggregate_id"
	// MetaRequestID is the id of the HTTP request that caused the event,
	// or the one that caused its cause (absent when no request did).
	MetaRequestID = "request_id"
	// MetaTraceparent is the W3C traceparent of the span that wrote the
	// event: the HTTP request's, or a consumer's under the trace of the
	// event it handled (internal/tracing).
	MetaTraceparent = "traceparent"
)

// Actor is who caused an event.
type Actor struct {
	Type string     `json:"type"` // anonymous, user or system
	ID   *uuid.UUID `json:"id,omitempty"`
}

// Anonymous is the actor of API calls that act for no user (registration
// without a token, refused logins, refresh token reuse; phase 1's calls);
// System of the pipeline. A call that acts for a user has that user as
// actor (type user, with the user's id).
var (
	Anonymous = Actor{Type: "anonymous"}
	System    = Actor{Type: "system"}
)

// Envelope is the JSON form of every event.
type Envelope struct {
	ID            uuid.UUID       `json:"id"`
	Type          string          `json:"type"`
	Version       int             `json:"version"`
	OccurredAt    time.Time       `json:"occurred_at"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   uuid.UUID       `json:"aggregate_id"`
	Actor         Actor           `json:"actor"`
	CorrelationID uuid.UUID       `json:"correlation_id"`
	CausationID   *uuid.UUID      `json:"causation_id,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// Stream is the stream an envelope belongs on.
func (e Envelope) Stream() string {
	switch e.AggregateType {
	case "document":
		return StreamDocuments
	case "topic":
		return StreamTopics
	case "folder":
		return StreamFolders
	case "cloud_connection":
		return StreamCloudConnections
	case "user":
		return StreamUsers
	}
	return "docuvault." + e.AggregateType + "s"
}

// New builds an envelope with a fresh UUIDv7 id. cause, when not nil, is the
// event that led to this one: its id becomes the causation id and its
// correlation id is carried over; otherwise correlation is the request's.
func New(typ, aggregateType string, aggregateID uuid.UUID, actor Actor, correlation uuid.UUID, cause *Envelope, data any) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s data: %w", typ, err)
	}
	e := Envelope{
		ID:            uuid.Must(uuid.NewV7()),
		Type:          typ,
		Version:       Version,
		OccurredAt:    time.Now().UTC().Truncate(time.Microsecond),
		AggregateType: aggregateType,
		AggregateID:   aggregateID,
		Actor:         actor,
		CorrelationID: correlation,
		Data:          raw,
	}
	if cause != nil {
		id := cause.ID
		e.CausationID = &id
		e.CorrelationID = cause.CorrelationID
	}
	return e, nil
}

// Document is the data of document.uploaded, document.finalized,
// document.rejected, document.deleted and document.updated: the document
// as it is after the change.
type Document struct {
	ID           uuid.UUID  `json:"id"`
	UserID       *uuid.UUID `json:"user_id"`
	TopicID      *uuid.UUID `json:"topic_id"`
	FolderID     *uuid.UUID `json:"folder_id"`
	Title        string     `json:"title"`
	Filename     string     `json:"filename"`
	ContentType  string     `json:"content_type"`
	SizeBytes    int64      `json:"size_bytes"`
	SHA256       string     `json:"sha256"`
	Status       string     `json:"status"`
	StorageKey   string     `json:"storage_key"`
	RejectReason *string    `json:"reject_reason,omitempty"`
	DuplicateOf  *uuid.UUID `json:"duplicate_of,omitempty"`
}

// Topic is the data of topic events.
type Topic struct {
	ID     uuid.UUID  `json:"id"`
	UserID *uuid.UUID `json:"user_id"`
	Name   string     `json:"name"`
}

// Folder is the data of folder events.
type Folder struct {
	ID       uuid.UUID  `json:"id"`
	UserID   *uuid.UUID `json:"user_id"`
	ParentID *uuid.UUID `json:"parent_id"`
	Name     string     `json:"name"`
}

// CloudConnection is the data of cloud_connection events: the connection
// as it is after the change. It never carries credentials.
type CloudConnection struct {
	ID           uuid.UUID       `json:"id"`
	UserID       *uuid.UUID      `json:"user_id"`
	Provider     string          `json:"provider"`
	Name         string          `json:"name"`
	Settings     json.RawMessage `json:"settings"`
	Status       string          `json:"status"`
	DeleteRemote bool            `json:"delete_remote"`
}

// CloudSync is the data of cloud_sync events (aggregate: the document).
// Operation is copy or remove; ETag and SizeBytes are set on
// cloud_sync.completed, Error on cloud_sync.failed.
type CloudSync struct {
	DocumentID   uuid.UUID `json:"document_id"`
	ConnectionID uuid.UUID `json:"connection_id"`
	Provider     string    `json:"provider"`
	Operation    string    `json:"operation"`
	RemoteKey    string    `json:"remote_key"`
	Attempts     int       `json:"attempts"`
	ETag         string    `json:"etag,omitempty"`
	SizeBytes    int64     `json:"size_bytes,omitempty"`
	Error        string    `json:"error,omitempty"`
}

// CloudConnectionFailure is the data of cloud_connection.failing: the
// connection as it is after the change, and the error that made it
// failing, as the sync worker recorded it (without credentials: secrets
// are redacted, cloudsync.ErrorText).
type CloudConnectionFailure struct {
	CloudConnection
	LastError string `json:"last_error"`
}

// User is the data of user.registered: the account as created.
type User struct {
	ID      uuid.UUID `json:"id"`
	Email   string    `json:"email"`
	IsAdmin bool      `json:"is_admin"`
}

// Login failure reasons (UserAuth.Reason of user.login_failed).
const (
	LoginUnknownUser   = "unknown_user"
	LoginWrongPassword = "wrong_password"
	LoginDisabled      = "disabled"
)

// Refresh token reuse kinds (UserAuth.Reason of
// user.token_reuse_detected): the token had been exchanged already, or
// revoked (by a logout, a password change or an earlier reuse).
const (
	ReuseUsed    = "used"
	ReuseRevoked = "revoked"
)

// UserAuth is the data of the user.* events other than user.registered.
// ID is the user's id (the aggregate id). SessionID is the refresh token
// family the event is about (logged_in, token_refreshed,
// token_reuse_detected, logged_out). Reason says why a login failed or
// what kind of reuse was seen. RevokedTokens counts the refresh tokens
// the change revoked (token_reuse_detected, logged_out,
// password_changed).
type UserAuth struct {
	ID            uuid.UUID  `json:"id"`
	SessionID     *uuid.UUID `json:"session_id,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	RevokedTokens *int64     `json:"revoked_tokens,omitempty"`
}

// unknownUserSpace is the UUIDv5 namespace of UnknownUserID.
var unknownUserSpace = uuid.MustParse("6f1d8a52-3c4b-5e7f-9a0b-1c2d3e4f5a6b")

// UnknownUserID is the aggregate id of a user.login_failed for an email
// no account has: a UUIDv5 of mac, a keyed hash of the lowercased, trimmed
// email (auth.TokenIssuer.UnknownUserID), so that the failures for one
// address can be told apart and counted without the address being
// recorded, nor confirmed by whoever reads the stream and guesses it.
func UnknownUserID(mac []byte) uuid.UUID {
	return uuid.NewSHA1(unknownUserSpace, mac)
}
