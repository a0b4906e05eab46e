package cloudsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/config"
	"github.com/docuvault/docuvault/internal/store"
)

// Providers.
const (
	ProviderS3     = "s3"
	ProviderWebDAV = "webdav"
)

// Provider is a remote that holds copies of documents: an S3-compatible
// bucket or a WebDAV folder. Keys are paths relative to the connection's
// base (bucket or URL), including its prefix.
type Provider interface {
	// Put stores size bytes of r at key, replacing what is there, and
	// returns the remote's ETag of the result ("" when it reports none).
	// r should be an io.Seeker where possible: WebDAV needs that to avoid
	// buffering.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (etag string, err error)
	// Delete removes key; a key that does not exist is not an error.
	Delete(ctx context.Context, key string) error
	// Size returns the size of the copy at key, or ErrRemoteMissing.
	Size(ctx context.Context, key string) (int64, error)
	// Test checks that the remote answers, accepts the credentials, and
	// lets them write and delete under the prefix (by writing and deleting
	// a small probe). Its errors are *TestError.
	Test(ctx context.Context) error
}

// ErrRemoteMissing is Size's answer for a key that holds nothing.
var ErrRemoteMissing = errors.New("not on the remote")

// Ways a connection test fails (TestError.Kind).
const (
	FailUnreachable        = "unreachable"          // no answer: DNS, refused, TLS, timeout, 5xx
	FailAuthRefused        = "auth_refused"         // the credentials are refused
	FailNotFound           = "not_found"            // no such bucket or WebDAV folder
	FailNoWritePermission  = "no_write_permission"  // the credentials may not write under the prefix
	FailNoDeletePermission = "no_delete_permission" // they may write but not delete (delete_remote needs it)
	FailOther              = "error"
)

// TestError is why a connection test failed.
type TestError struct {
	Kind string
	Err  error
}

func (e *TestError) Error() string { return e.Kind + ": " + e.Err.Error() }
func (e *TestError) Unwrap() error { return e.Err }

// S3Settings are the settings of an S3-compatible connection.
type S3Settings struct {
	Endpoint string `json:"endpoint"` // host or host:port, no scheme
	Bucket   string `json:"bucket"`
	Prefix   string `json:"prefix"`
	UseSSL   bool   `json:"use_ssl"`
	Region   string `json:"region"`
}

// S3Credentials are an S3 access key pair.
type S3Credentials struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// WebDAVSettings are the settings of a WebDAV connection.
type WebDAVSettings struct {
	URL    string `json:"url"` // http(s) URL of a collection, e.g. https://host/remote.php/dav/files/alice/
	Prefix string `json:"prefix"`
}

// WebDAVCredentials are a WebDAV user name and password (for Nextcloud or
// ownCloud, an app password is the better choice).
type WebDAVCredentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Redacted forms: credentials never reach a log, even by accident.
func (c S3Credentials) String() string       { return "S3Credentials{redacted}" }
func (c S3Credentials) GoString() string     { return c.String() }
func (c WebDAVCredentials) String() string   { return "WebDAVCredentials{redacted}" }
func (c WebDAVCredentials) GoString() string { return c.String() }

// InputError is a setting or credential that is missing, malformed or
// invalid. Field is its JSON path (settings.bucket); Malformed is true for
// a wrong JSON shape (unknown field, wrong type, missing value), false for
// a value of the right shape that is not acceptable.
type InputError struct {
	Field     string
	Detail    string
	Malformed bool
}

func (e *InputError) Error() string { return e.Field + ": " + e.Detail }

func malformed(field, format string, args ...any) error {
	return &InputError{Field: field, Detail: fmt.Sprintf(format, args...), Malformed: true}
}

func invalid(field, format string, args ...any) error {
	return &InputError{Field: field, Detail: fmt.Sprintf(format, args...)}
}

// ParseSettings decodes and validates the settings of provider and returns
// them normalised (prefix with a trailing slash, URL with a trailing
// slash), as they are stored. Errors are *InputError.
func ParseSettings(provider string, raw json.RawMessage) (json.RawMessage, error) {
	switch provider {
	case ProviderS3:
		var s S3Settings
		if err := decodeStrict("settings", raw, &s); err != nil {
			return nil, err
		}
		if err := s.normalize(); err != nil {
			return nil, err
		}
		return json.Marshal(s)
	case ProviderWebDAV:
		var s WebDAVSettings
		if err := decodeStrict("settings", raw, &s); err != nil {
			return nil, err
		}
		if err := s.normalize(); err != nil {
			return nil, err
		}
		return json.Marshal(s)
	}
	return nil, invalid("provider", "unknown provider %q (want s3 or webdav)", provider)
}

// ParseCredentials decodes and validates the credentials of provider and
// returns them in the form that is sealed. Errors are *InputError and
// never quote a value.
func ParseCredentials(provider string, raw json.RawMessage) ([]byte, error) {
	switch provider {
	case ProviderS3:
		var c S3Credentials
		if err := decodeStrict("credentials", raw, &c); err != nil {
			return nil, err
		}
		if err := requireSecret("credentials.access_key_id", c.AccessKeyID); err != nil {
			return nil, err
		}
		if err := requireSecret("credentials.secret_access_key", c.SecretAccessKey); err != nil {
			return nil, err
		}
		return json.Marshal(c)
	case ProviderWebDAV:
		var c WebDAVCredentials
		if err := decodeStrict("credentials", raw, &c); err != nil {
			return nil, err
		}
		if err := requireSecret("credentials.username", c.Username); err != nil {
			return nil, err
		}
		if strings.Contains(c.Username, ":") {
			return nil, invalid("credentials.username", "must not contain ':' (HTTP basic authentication)")
		}
		if err := requireSecret("credentials.password", c.Password); err != nil {
			return nil, err
		}
		return json.Marshal(c)
	}
	return nil, invalid("provider", "unknown provider %q (want s3 or webdav)", provider)
}

// decodeStrict decodes one JSON object, refusing unknown fields and wrong
// types. Errors name the field, never its value.
func decodeStrict(field string, raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return malformed(field, "is required (a JSON object)")
	}
	if bytes.TrimSpace(raw)[0] != '{' {
		return malformed(field, "must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return malformed(field+"."+typeErr.Field, "must be a %s", typeErr.Type)
		}
		msg := strings.TrimPrefix(err.Error(), "json: ")
		if strings.HasPrefix(msg, "unknown field ") {
			return malformed(field, "has an %s", msg)
		}
		return malformed(field, "is not a valid JSON object")
	}
	return nil
}

func requireSecret(field, v string) error {
	switch {
	case v == "":
		return malformed(field, "is required")
	case len(v) > 1024:
		return invalid(field, "is longer than 1024 bytes")
	case !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0:
		return invalid(field, "must be text without control characters")
	}
	return nil
}

var regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func (s *S3Settings) normalize() error {
	if s.Endpoint == "" {
		return malformed("settings.endpoint", "is required (host:port, e.g. s3.example.com:443)")
	}
	if strings.Contains(s.Endpoint, "/") {
		return invalid("settings.endpoint", "must be host or host:port, without scheme or path (use use_ssl for https)")
	}
	host, port := s.Endpoint, ""
	if h, p, err := net.SplitHostPort(s.Endpoint); err == nil {
		host, port = h, p
	}
	if host == "" || strings.ContainsAny(host, " @?#") || strings.IndexFunc(host, unicode.IsControl) >= 0 {
		return invalid("settings.endpoint", "must be host or host:port")
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return invalid("settings.endpoint", "has an invalid port")
		}
	}
	if s.Bucket == "" {
		return malformed("settings.bucket", "is required")
	}
	if err := config.BucketName("settings.bucket", s.Bucket); err != nil {
		return invalid("settings.bucket", "%q is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')", s.Bucket)
	}
	if s.Region != "" && !regionName.MatchString(s.Region) {
		return invalid("settings.region", "must be a region name such as us-east-1")
	}
	p, err := normalizePrefix(s.Prefix)
	s.Prefix = p
	return err
}

func (s *WebDAVSettings) normalize() error {
	if s.URL == "" {
		return malformed("settings.url", "is required (e.g. https://cloud.example.com/remote.php/dav/files/alice/)")
	}
	u, err := url.Parse(s.URL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return invalid("settings.url", "must be an http:// or https:// URL")
	case u.User != nil:
		return invalid("settings.url", "must not carry a user or password: send them in credentials")
	case u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return invalid("settings.url", "must not have a query or fragment")
	case len(s.URL) > 2048:
		return invalid("settings.url", "is longer than 2048 characters")
	case strings.IndexFunc(u.Host+u.Path, unicode.IsControl) >= 0:
		// Escaped (%00) in the URL, they would be stored unescaped: a
		// request line cannot carry them, and PostgreSQL cannot store NUL.
		return invalid("settings.url", "must not contain control characters, escaped or not")
	}
	// Stored unescaped (the WebDAV client escapes each segment), with a
	// trailing slash: it names a collection.
	path := u.Path
	if !strings.HasSuffix(path, "/") {
		path += "/"
	}
	s.URL = u.Scheme + "://" + u.Host + path
	p, err := normalizePrefix(s.Prefix)
	s.Prefix = p
	return err
}

// normalizePrefix checks a key prefix and gives it one trailing slash and
// no leading one ("" stays "": copies go to the top).
func normalizePrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	if len(p) > 512 || !utf8.ValidString(p) || strings.IndexFunc(p, unicode.IsControl) >= 0 || strings.Contains(p, `\`) {
		return "", invalid("settings.prefix", "must be at most 512 bytes of text without control characters or backslashes")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", invalid("settings.prefix", "must not contain empty, '.' or '..' segments")
		}
	}
	return p + "/", nil
}

// Prefix returns the prefix in stored settings ("" when there is none).
func Prefix(settings json.RawMessage) string {
	var s struct {
		Prefix string `json:"prefix"`
	}
	_ = json.Unmarshal(settings, &s)
	return s.Prefix
}

// RemoteKey is where a document goes on a connection: the prefix, the
// document id, and its (already sanitised) filename, so copies are
// readable in the remote's own browser and never collide.
func RemoteKey(settings json.RawMessage, doc store.Document) string {
	return Prefix(settings) + doc.ID.String() + "/" + doc.Filename
}

// Connector opens providers for stored connections: it decrypts their
// credentials and holds the HTTP transport every provider shares.
type Connector struct {
	sealer    *Sealer
	transport *http.Transport
}

// NewConnector returns a Connector that seals and opens credentials with
// sealer.
func NewConnector(sealer *Sealer) *Connector {
	return &Connector{sealer: sealer, transport: newTransport()}
}

// Seal encrypts the credentials (as ParseCredentials returned them) of
// connection id for storage.
func (c *Connector) Seal(id uuid.UUID, credentials []byte) []byte {
	return c.sealer.Seal(id, credentials)
}

// Open returns the provider of a stored connection. Its errors never
// contain a credential.
func (c *Connector) Open(conn store.CloudConnection) (Provider, error) {
	plain, err := c.sealer.Open(conn.ID, conn.Credentials)
	if err != nil {
		return nil, err
	}
	switch conn.Provider {
	case ProviderS3:
		var s S3Settings
		var cr S3Credentials
		if err := json.Unmarshal(conn.Settings, &s); err != nil {
			return nil, fmt.Errorf("settings of connection %s: %w", conn.ID, err)
		}
		if err := json.Unmarshal(plain, &cr); err != nil {
			return nil, fmt.Errorf("credentials of connection %s are not valid JSON", conn.ID)
		}
		return newS3(s, cr, c.transport)
	case ProviderWebDAV:
		var s WebDAVSettings
		var cr WebDAVCredentials
		if err := json.Unmarshal(conn.Settings, &s); err != nil {
			return nil, fmt.Errorf("settings of connection %s: %w", conn.ID, err)
		}
		if err := json.Unmarshal(plain, &cr); err != nil {
			return nil, fmt.Errorf("credentials of connection %s are not valid JSON", conn.ID)
		}
		return newWebDAV(s, cr, c.transport), nil
	}
	return nil, fmt.Errorf("connection %s has unknown provider %q", conn.ID, conn.Provider)
}

// Secrets returns the secret values of a stored connection's credentials
// (to scrub them from any error text), or nil when they do not decrypt.
func (c *Connector) Secrets(conn store.CloudConnection) []string {
	plain, err := c.sealer.Open(conn.ID, conn.Credentials)
	if err != nil {
		return nil
	}
	// Access key ids and user names are identifiers, not secrets (a
	// Nextcloud user name is in its WebDAV URL), and stay readable.
	var all struct {
		SecretAccessKey string `json:"secret_access_key"`
		Password        string `json:"password"`
	}
	_ = json.Unmarshal(plain, &all)
	return []string{all.SecretAccessKey, all.Password}
}

// ErrorText is err as it may be stored, logged or shown: every secret
// removed and at most 1000 bytes.
func ErrorText(err error, secrets ...string) string {
	s := config.Redact(err.Error(), secrets...)
	if len(s) > 1000 {
		s = s[:1000]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// newTransport is the HTTP transport of remote providers: bounded waits to
// connect and for an answer, none for the transfer itself (a large copy
// over a slow line takes what it takes; the context cancels it).
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, // after the body was sent: a server may check a large file first
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
		ForceAttemptHTTP2:     true,
	}
}

// probeKey is the object a connection test writes and deletes.
func probeKey(prefix string) string {
	return prefix + ".docuvault-probe-" + uuid.Must(uuid.NewV7()).String()
}

// probeBody is what the probe holds.
var probeBody = []byte("DocuVault connection test; safe to delete.\n")

// isNetError reports a failure to reach the remote at all.
func isNetError(err error) bool {
	var netErr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var urlErr *url.Error
	return errors.As(err, &netErr) || errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &urlErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
