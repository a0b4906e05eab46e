package events

import (
	"bytes"
	"cmp"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// The JSON Schemas (draft 2020-12) of the events: one file per event type
// and version, {type}.v{version}.json, and common.v1.json with the
// envelope and data definitions they share. docs/events.md points here.
//
//go:embed schemas/*.json
var schemaFiles embed.FS

// SchemaBaseURL is the base of the schemas' $id. The schemas refer to each
// other relative to it; nothing is fetched from it.
const SchemaBaseURL = "https://github.com/docuvault/docuvault/internal/events/schemas/"

// eventSchemaFile matches the file name of an event schema; other files
// (common.v1.json) only hold definitions.
var eventSchemaFile = regexp.MustCompile(`^([a-z_]+\.[a-z_]+)\.v([1-9][0-9]*)\.json$`)

// ErrNoSchema means there is no schema for an event's type and version.
var ErrNoSchema = errors.New("no schema for this event type and version")

// SchemaError is an event that does not match the schema of its type and
// version.
type SchemaError struct {
	Type     string
	Version  int
	Problems []SchemaProblem // at least one
}

// SchemaProblem is one way an event breaks its schema.
type SchemaProblem struct {
	// Pointer is the JSON pointer of the failing value in the payload
	// ("" for the payload itself), such as /data/sha256.
	Pointer string
	// Keyword is the schema keyword that failed, such as required,
	// pattern or additionalProperties.
	Keyword string
	// Schema is where the keyword is: schema file and JSON pointer, such
	// as common.v1.json#/$defs/sha256/pattern.
	Schema string
	// Message says what is wrong.
	Message string
}

// Error names the event type and version and each problem's pointer,
// message and keyword.
func (e *SchemaError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "event %s version %d does not match its schema:", e.Type, e.Version)
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " at %q: %s (%s)", p.Pointer, p.Message, p.Keyword)
	}
	return b.String()
}

type schemaKey struct {
	typ     string
	version int
}

var schemas struct {
	once  sync.Once
	byKey map[schemaKey]*jsonschema.Schema
	err   error
}

// loadSchemas compiles every embedded schema, once.
func loadSchemas() (map[schemaKey]*jsonschema.Schema, error) {
	schemas.once.Do(func() {
		schemas.byKey, schemas.err = compileSchemas(schemaFiles)
	})
	return schemas.byKey, schemas.err
}

// compileSchemas compiles the event schemas of fsys (a directory schemas
// of JSON files), each with every file of the directory available to its
// $refs.
func compileSchemas(fsys fs.FS) (map[schemaKey]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// No loader: a $ref to anything but the embedded files fails to
	// compile instead of going to the network or the disk.
	c.UseLoader(noLoader{})
	names, err := fs.Glob(fsys, "schemas/*.json")
	if err != nil {
		return nil, err
	}
	var keys []schemaKey
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		base := strings.TrimPrefix(name, "schemas/")
		if err := c.AddResource(SchemaBaseURL+base, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		if m := eventSchemaFile.FindStringSubmatch(base); m != nil {
			v, err := strconv.Atoi(m[2])
			if err != nil {
				return nil, fmt.Errorf("schema %s: version: %w", name, err)
			}
			keys = append(keys, schemaKey{m[1], v})
		}
	}
	out := make(map[schemaKey]*jsonschema.Schema, len(keys))
	for _, k := range keys {
		sch, err := c.Compile(SchemaBaseURL + schemaFileName(k.typ, k.version))
		if err != nil {
			return nil, fmt.Errorf("compile the schema of %s version %d: %w", k.typ, k.version, err)
		}
		out[k] = sch
	}
	return out, nil
}

func schemaFileName(typ string, version int) string {
	return typ + ".v" + strconv.Itoa(version) + ".json"
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("%s is not one of the embedded event schemas", url)
}

// Validate checks an event payload (the JSON envelope, as in the outbox and
// on the streams) against the schema of its type and version. It returns
// a *SchemaError naming each failing value (JSON pointer) and keyword, an
// error wrapping ErrNoSchema for a type and version without a schema, or
// an error for a payload that is not a JSON object with a string type and
// an integer version.
func Validate(payload []byte) error {
	byKey, err := loadSchemas()
	if err != nil {
		return fmt.Errorf("load event schemas: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("event payload is not JSON: %w", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return errors.New("event payload is not a JSON object")
	}
	typ, ok := obj["type"].(string)
	if !ok {
		return errors.New(`event payload has no string "type"`)
	}
	num, ok := obj["version"].(json.Number)
	if !ok {
		return fmt.Errorf(`event %s: payload has no numeric "version"`, typ)
	}
	version, err := strconv.Atoi(num.String())
	if err != nil {
		return fmt.Errorf("event %s: version %s is not a whole number", typ, num)
	}
	sch, ok := byKey[schemaKey{typ, version}]
	if !ok {
		return fmt.Errorf("event %s version %d: %w", typ, version, ErrNoSchema)
	}
	err = sch.Validate(doc)
	var verr *jsonschema.ValidationError
	if errors.As(err, &verr) {
		ps := problems(verr)
		// In payload order; a keyword reached by two paths ($ref) once.
		slices.SortStableFunc(ps, func(a, b SchemaProblem) int {
			return cmp.Or(strings.Compare(a.Pointer, b.Pointer), strings.Compare(a.Schema, b.Schema))
		})
		ps = slices.CompactFunc(ps, func(a, b SchemaProblem) bool { return a.Pointer == b.Pointer && a.Schema == b.Schema })
		return &SchemaError{Type: typ, Version: version, Problems: ps}
	}
	return err
}

// problems flattens a validation error into its leaves: the keywords that
// failed, rather than the $refs and combinators that led to them.
func problems(e *jsonschema.ValidationError) []SchemaProblem {
	if len(e.Causes) > 0 {
		var out []SchemaProblem
		for _, c := range e.Causes {
			out = append(out, problems(c)...)
		}
		return out
	}
	ptr := ""
	for _, tok := range e.InstanceLocation {
		ptr += "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(tok)
	}
	p := SchemaProblem{Pointer: ptr, Schema: strings.TrimPrefix(e.SchemaURL, SchemaBaseURL)}
	if _, ok := e.ErrorKind.(*kind.FalseSchema); ok {
		// The schemas use false for a property an event type never has.
		p.Keyword, p.Message = "false", "not allowed in this event type"
		return []SchemaProblem{p}
	}
	if kw := e.ErrorKind.KeywordPath(); len(kw) > 0 {
		p.Keyword = kw[len(kw)-1]
		p.Schema += "/" + strings.Join(kw, "/")
	}
	// A leaf's Error() is "at '<pointer>': <message>"; keep the message.
	p.Message = e.Error()
	if rest, ok := strings.CutPrefix(p.Message, "at "); ok {
		if _, m, ok := strings.Cut(rest, ": "); ok {
			p.Message = m
		}
	}
	return []SchemaProblem{p}
}
