package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/docuvault/docuvault/internal/events"
	"github.com/docuvault/docuvault/internal/store"
)

type topicJSON struct {
	ID        uuid.UUID  `json:"id"`
	UserID    *uuid.UUID `json:"user_id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

func toTopicJSON(t store.Topic) topicJSON {
	return topicJSON{ID: t.ID, UserID: t.UserID, Name: t.Name, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

type folderJSON struct {
	ID        uuid.UUID  `json:"id"`
	UserID    *uuid.UUID `json:"user_id"`
	ParentID  *uuid.UUID `json:"parent_id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

func toFolderJSON(f store.Folder) folderJSON {
	return folderJSON{ID: f.ID, UserID: f.UserID, ParentID: f.ParentID, Name: f.Name, CreatedAt: f.CreatedAt, UpdatedAt: f.UpdatedAt}
}

// validName checks a topic or folder name: 1 to max characters of UTF-8
// text without control characters or path separators, trimmed.
func validName(name *string, max int) error {
	if name == nil {
		return badRequest("invalid-field", "name is required")
	}
	n := strings.TrimSpace(*name)
	switch {
	case n == "" || utf8.RuneCountInString(n) > max:
		return badRequest("invalid-field", "name must be 1 to %d characters", max)
	case strings.ContainsAny(n, "/\\") || strings.IndexFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return badRequest("invalid-field", "name must not contain slashes or control characters")
	}
	*name = n
	return nil
}

// recordChange runs change and records its event in one transaction.
func (s *server) recordChange(r *http.Request, change func(tx pgx.Tx) (events.Envelope, error)) error {
	return s.recordChanges(r, func(tx pgx.Tx) ([]events.Envelope, error) {
		ev, err := change(tx)
		return []events.Envelope{ev}, err
	})
}

// recordChanges runs change and records its events, in order, in one
// transaction.
func (s *server) recordChanges(r *http.Request, change func(tx pgx.Tx) ([]events.Envelope, error)) error {
	ctx := r.Context()
	err := store.WithTx(ctx, s.DB, func(tx pgx.Tx) error {
		evs, err := change(tx)
		if err != nil {
			return err
		}
		return store.RecordAll(ctx, tx, evs, s.origin(r))
	})
	if err == nil {
		s.Notifier.Poke()
	}
	return err
}

func topicEvent(r *http.Request, typ string, t store.Topic) (events.Envelope, error) {
	return events.New(typ, "topic", t.ID, requestActor(r), correlationID(r), nil, events.Topic{ID: t.ID, UserID: t.UserID, Name: t.Name})
}

func folderEvent(r *http.Request, typ string, f store.Folder) (events.Envelope, error) {
	return events.New(typ, "folder", f.ID, requestActor(r), correlationID(r), nil,
		events.Folder{ID: f.ID, UserID: f.UserID, ParentID: f.ParentID, Name: f.Name})
}

// withDocumentsUpdated returns deleted (a topic.deleted or
// folder.deleted) followed by the document.updated it caused on each of
// docs, the documents it took the topic or folder off, as they are now.
func withDocumentsUpdated(r *http.Request, deleted events.Envelope, docs []store.Document) ([]events.Envelope, error) {
	out := make([]events.Envelope, 0, 1+len(docs))
	out = append(out, deleted)
	for _, d := range docs {
		ev, err := events.New(events.DocumentUpdated, "document", d.ID, requestActor(r), deleted.CorrelationID, &deleted, d.EventData())
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

func (s *server) createTopic(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name *string `json:"name"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := validName(in.Name, 200); err != nil {
		s.fail(w, r, err)
		return
	}
	var out store.Topic
	err := s.recordChange(r, func(tx pgx.Tx) (events.Envelope, error) {
		var err error
		// An administrator's topic is theirs, like anyone's.
		t := store.Topic{ID: uuid.Must(uuid.NewV7()), UserID: Owner(r.Context()), Name: *in.Name}
		if out, err = store.InsertTopic(r.Context(), tx, t); err != nil {
			return events.Envelope{}, err
		}
		return topicEvent(r, events.TopicCreated, out)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	w.Header().Set("Location", "/api/v1/topics/"+out.ID.String())
	writeJSON(w, http.StatusCreated, toTopicJSON(out))
}

func (s *server) listTopics(w http.ResponseWriter, r *http.Request) {
	page, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	topics, err := store.ListTopics(r.Context(), s.DB, scope(r.Context()), page.after, page.limit+1)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, newPage(topics, page.limit, func(t store.Topic) uuid.UUID { return t.ID }, toTopicJSON))
}

func (s *server) getTopic(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	t, err := store.GetTopic(r.Context(), s.DB, scope(r.Context()), id)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, toTopicJSON(t))
}

func (s *server) renameTopic(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in struct {
		Name *string `json:"name"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := validName(in.Name, 200); err != nil {
		s.fail(w, r, err)
		return
	}
	var out store.Topic
	err = s.recordChange(r, func(tx pgx.Tx) (events.Envelope, error) {
		var err error
		if out, err = store.RenameTopic(r.Context(), tx, scope(r.Context()), id, *in.Name); err != nil {
			return events.Envelope{}, err
		}
		return topicEvent(r, events.TopicRenamed, out)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, toTopicJSON(out))
}

func (s *server) deleteTopic(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	err = s.recordChanges(r, func(tx pgx.Tx) ([]events.Envelope, error) {
		t, docs, err := store.DeleteTopic(r.Context(), tx, scope(r.Context()), id)
		if err != nil {
			return nil, err
		}
		ev, err := topicEvent(r, events.TopicDeleted, t)
		if err != nil {
			return nil, err
		}
		return withDocumentsUpdated(r, ev, docs)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) createFolder(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name     *string    `json:"name"`
		ParentID *uuid.UUID `json:"parent_id"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := validName(in.Name, 255); err != nil {
		s.fail(w, r, err)
		return
	}
	var out store.Folder
	err := s.recordChange(r, func(tx pgx.Tx) (events.Envelope, error) {
		var err error
		// The folder is the caller's (an administrator's too), and so
		// must its parent be.
		f := store.Folder{ID: uuid.Must(uuid.NewV7()), UserID: Owner(r.Context()), ParentID: in.ParentID, Name: *in.Name}
		if out, err = store.InsertFolder(r.Context(), tx, f); err != nil {
			return events.Envelope{}, err
		}
		return folderEvent(r, events.FolderCreated, out)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	w.Header().Set("Location", "/api/v1/folders/"+out.ID.String())
	writeJSON(w, http.StatusCreated, toFolderJSON(out))
}

// listFolders lists the children of ?parent_id= (the root folders without it).
func (s *server) listFolders(w http.ResponseWriter, r *http.Request) {
	page, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	parent, err := optionalUUID(r, "parent_id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	folders, err := store.ListFolders(r.Context(), s.DB, scope(r.Context()), parent, page.after, page.limit+1)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, newPage(folders, page.limit, func(f store.Folder) uuid.UUID { return f.ID }, toFolderJSON))
}

func (s *server) getFolder(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := store.GetFolder(r.Context(), s.DB, scope(r.Context()), id)
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, toFolderJSON(f))
}

// updateFolder renames (name) and/or moves (parent_id; null moves it to
// the root) a folder. The parent must be a folder of the same owner.
func (s *server) updateFolder(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var in struct {
		Name     *string         `json:"name"`
		ParentID json.RawMessage `json:"parent_id"`
	}
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if in.Name == nil && in.ParentID == nil {
		s.fail(w, r, badRequest("invalid-field", "send name, parent_id or both"))
		return
	}
	if in.Name != nil {
		if err := validName(in.Name, 255); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	var out store.Folder
	err = s.recordChange(r, func(tx pgx.Tx) (events.Envelope, error) {
		cur, err := store.GetFolder(r.Context(), tx, scope(r.Context()), id)
		if err != nil {
			return events.Envelope{}, err
		}
		name, parent := cur.Name, cur.ParentID
		if in.Name != nil {
			name = *in.Name
		}
		if in.ParentID != nil {
			parent = nil
			if string(in.ParentID) != "null" {
				var p uuid.UUID
				if err := json.Unmarshal(in.ParentID, &p); err != nil {
					return events.Envelope{}, badRequest("invalid-field", "parent_id must be a UUID or null")
				}
				parent = &p
			}
		}
		if out, err = store.UpdateFolder(r.Context(), tx, scope(r.Context()), id, name, parent); err != nil {
			return events.Envelope{}, err
		}
		return folderEvent(r, events.FolderUpdated, out)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	writeJSON(w, http.StatusOK, toFolderJSON(out))
}

func (s *server) deleteFolder(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	err = s.recordChanges(r, func(tx pgx.Tx) ([]events.Envelope, error) {
		f, docs, err := store.DeleteFolder(r.Context(), tx, scope(r.Context()), id)
		if err != nil {
			return nil, err
		}
		ev, err := folderEvent(r, events.FolderDeleted, f)
		if err != nil {
			return nil, err
		}
		return withDocumentsUpdated(r, ev, docs)
	})
	if err != nil {
		s.fail(w, r, dbErr(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
