package config

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// Error is a configuration problem: the key and what is wrong with it. Its
// text never contains the value of a secret.
type Error struct {
	Key     string
	Problem string
}

func (e *Error) Error() string { return e.Key + ": " + e.Problem }

func errorf(key, format string, args ...any) error {
	return &Error{Key: key, Problem: fmt.Sprintf(format, args...)}
}

// Required returns the value of key or an error when it is empty.
func Required(src *Source, key string) (string, error) {
	v := src.Get(key)
	if v == "" {
		return "", errorf(key, "is required but not set")
	}
	return v, nil
}

// PostgresURL validates the PostgreSQL URL in key
// (postgres://user:password@host:port/database?options). It must name a
// user, a host and a database. Errors never repeat the URL.
func PostgresURL(key, raw string) (*pgxpool.Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errorf(key, "is not a valid URL (want postgres://user:password@host:5432/database)")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, errorf(key, "must start with postgres:// (got scheme %q)", u.Scheme)
	}
	if u.User == nil || u.User.Username() == "" {
		return nil, errorf(key, "names no user (want postgres://user:password@host:5432/database)")
	}
	if u.Hostname() == "" {
		return nil, errorf(key, "names no host")
	}
	if strings.Trim(u.Path, "/") == "" {
		return nil, errorf(key, "names no database")
	}
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		// pgx's message may quote the URL; keep only a redacted form.
		pw, _ := u.User.Password()
		return nil, errorf(key, "is not a valid PostgreSQL URL: %s", Redact(err.Error(), pw))
	}
	return cfg, nil
}

// SafeDSN describes a PostgreSQL connection for logs: user, host, port and
// database, never the password.
func SafeDSN(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("postgres://%s@%s/%s", c.User, net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), c.Database)
}

// RedisURL validates the Redis URL in key (redis://[:password@]host:port/db).
func RedisURL(key, raw string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errorf(key, "is not a valid URL (want redis://host:6379/0)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, errorf(key, "must start with redis:// or rediss:// (got scheme %q)", u.Scheme)
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		pw, _ := u.User.Password()
		return nil, errorf(key, "is not a valid Redis URL: %s", Redact(err.Error(), pw))
	}
	return opts, nil
}

// Endpoint is an S3-compatible server's address.
type Endpoint struct {
	HostPort string // host:port, as minio-go wants it
	Secure   bool   // https
}

// S3Endpoint validates an S3 endpoint: host:port (plain HTTP) or an
// http:// or https:// URL without a path.
func S3Endpoint(key, raw string) (Endpoint, error) {
	ep := Endpoint{HostPort: raw}
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return ep, errorf(key, "must be host:port or an http(s):// URL")
		}
		if u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
			return ep, errorf(key, "must not carry credentials, a path or a query (use MINIO_ROOT_USER, MINIO_ROOT_PASSWORD and MINIO_BUCKET)")
		}
		ep = Endpoint{HostPort: u.Host, Secure: u.Scheme == "https"}
	}
	host, port, err := net.SplitHostPort(ep.HostPort)
	if err != nil || host == "" {
		return ep, errorf(key, "must be host:port (for example 127.0.0.1:9000)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return ep, errorf(key, "has an invalid port %q", port)
	}
	return ep, nil
}

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// BucketName validates an S3 bucket name (3-63 lowercase letters, digits,
// dots and hyphens, starting and ending with a letter or digit).
func BucketName(key, raw string) error {
	if !bucketName.MatchString(raw) || strings.Contains(raw, "..") || net.ParseIP(raw) != nil {
		return errorf(key, "%q is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')", raw)
	}
	return nil
}

// ListenAddr validates a host:port to listen on; port 0 picks a free port.
func ListenAddr(key, raw string) error {
	_, port, err := net.SplitHostPort(raw)
	if err != nil {
		return errorf(key, "%q is not host:port (for example 127.0.0.1:8080)", raw)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errorf(key, "%q has an invalid port", raw)
	}
	return nil
}

// PositiveInt parses a whole number greater than zero.
func PositiveInt(key, raw string) (int64, error) {
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n <= 0 {
		return 0, errorf(key, "%q is not a whole number greater than zero", raw)
	}
	return n, nil
}

// PositiveDuration parses a Go duration ("90s", "24h") greater than zero.
func PositiveDuration(key, raw string) (time.Duration, error) {
	d, err := time.ParseDuration(raw)
	if err != nil || d <= 0 {
		return 0, errorf(key, "%q is not a duration greater than zero (such as 90s, 24h or 168h)", raw)
	}
	return d, nil
}

// OneOf validates that raw is one of the allowed values.
func OneOf(key, raw string, allowed ...string) error {
	for _, a := range allowed {
		if raw == a {
			return nil
		}
	}
	return errorf(key, "%q is not one of %s", raw, strings.Join(allowed, ", "))
}

// MinSecretKeyLen is the shortest SECRET_KEY accepted, in bytes.
const MinSecretKeyLen = 32

// SecretKey validates a secret's length without ever printing it.
func SecretKey(key, raw string) error {
	if len(raw) < MinSecretKeyLen {
		return errorf(key, "is too short (%d bytes; want at least %d, e.g. from `openssl rand -hex 32`)", len(raw), MinSecretKeyLen)
	}
	return nil
}

// Redact replaces every occurrence of each non-empty secret in s.
func Redact(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "xxxxx")
			s = strings.ReplaceAll(s, url.QueryEscape(secret), "xxxxx")
			s = strings.ReplaceAll(s, url.PathEscape(secret), "xxxxx")
		}
	}
	return s
}

// S3 is the object storage settings: MINIO_ENDPOINT, MINIO_ROOT_USER,
// MINIO_ROOT_PASSWORD and MINIO_BUCKET (default docuvault).
type S3 struct {
	Endpoint  Endpoint
	AccessKey string
	SecretKey string
	Bucket    string
}

// ObjectStorage reads and validates the S3 settings.
func ObjectStorage(src *Source) (S3, error) {
	var s S3
	raw, err := Required(src, "MINIO_ENDPOINT")
	if err != nil {
		return s, err
	}
	if s.Endpoint, err = S3Endpoint("MINIO_ENDPOINT", raw); err != nil {
		return s, err
	}
	if s.AccessKey, err = Required(src, "MINIO_ROOT_USER"); err != nil {
		return s, err
	}
	if s.SecretKey, err = Required(src, "MINIO_ROOT_PASSWORD"); err != nil {
		return s, err
	}
	s.Bucket = cmp.Or(src.Get("MINIO_BUCKET"), "docuvault")
	return s, BucketName("MINIO_BUCKET", s.Bucket)
}

// Database reads and validates the PostgreSQL URL in key (DATABASE_URL,
// DATABASE_MIGRATE_URL or DATABASE_ADMIN_URL).
func Database(src *Source, key string) (*pgxpool.Config, error) {
	raw, err := Required(src, key)
	if err != nil {
		return nil, err
	}
	return PostgresURL(key, raw)
}

// Redis reads and validates REDIS_URL (redis://host:port/db).
func Redis(src *Source) (*redis.Options, error) {
	raw, err := Required(src, "REDIS_URL")
	if err != nil {
		return nil, err
	}
	return RedisURL("REDIS_URL", raw)
}

// Secret reads SECRET_KEY, which must be set and long enough.
func Secret(src *Source) (string, error) {
	raw, err := Required(src, "SECRET_KEY")
	if err != nil {
		return "", err
	}
	return raw, SecretKey("SECRET_KEY", raw)
}

// Default quota limits: what an owner may store unless its quotas row sets
// its own limits.
const (
	DefaultQuotaBytes     = 10 << 30 // 10 GiB
	DefaultQuotaDocuments = 100_000
)

// QuotaDefaults reads QUOTA_DEFAULT_BYTES and QUOTA_DEFAULT_DOCUMENTS.
func QuotaDefaults(src *Source) (bytes, documents int64, err error) {
	bytes, documents = DefaultQuotaBytes, DefaultQuotaDocuments
	if raw := src.Get("QUOTA_DEFAULT_BYTES"); raw != "" {
		if bytes, err = PositiveInt("QUOTA_DEFAULT_BYTES", raw); err != nil {
			return 0, 0, err
		}
	}
	if raw := src.Get("QUOTA_DEFAULT_DOCUMENTS"); raw != "" {
		if documents, err = PositiveInt("QUOTA_DEFAULT_DOCUMENTS", raw); err != nil {
			return 0, 0, err
		}
	}
	return bytes, documents, nil
}

// maxRateCount bounds the count of a rate limit: more is no limit.
const maxRateCount = 1_000_000

// RateLimit parses a rate limit written COUNT/DURATION ("10/1m": ten
// attempts a minute, all of which may come at once), with a count of 1 to
// 1,000,000 and a duration of 1s to 24h.
func RateLimit(key, raw string) (int, time.Duration, error) {
	n, d, ok := strings.Cut(raw, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 || count > maxRateCount {
		return 0, 0, errorf(key, "%q is not COUNT/DURATION with a count of 1 to %d (such as 10/1m)", raw, maxRateCount)
	}
	period, err := time.ParseDuration(d)
	if err != nil || period < time.Second || period > 24*time.Hour {
		return 0, 0, errorf(key, "%q is not COUNT/DURATION with a duration of 1s to 24h (such as 10/1m)", raw)
	}
	return count, period, nil
}

// TrustedProxies parses a comma-separated list of IP addresses and CIDR
// prefixes ("10.0.0.0/8, 2001:db8::/32, 192.0.2.1"): the reverse proxies
// whose X-Forwarded-For the API believes. Empty means none. An address is
// a prefix of one address. Refused, each with its own one-line error: an
// empty entry, an entry that is neither, a zone, a prefix with host bits
// set (a typo more often than not), an IPv4-mapped IPv6 entry (write the
// IPv4 form: the API unmaps the addresses it compares), and a /0, which
// would let every client forge its address.
func TrustedProxies(key, raw string) ([]netip.Prefix, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for i, entry := range strings.Split(raw, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, errorf(key, "entry %d is empty (write IP addresses or CIDR prefixes separated by commas, such as 127.0.0.1,10.0.0.0/8)", i+1)
		}
		var p netip.Prefix
		if strings.Contains(entry, "/") {
			var err error
			if p, err = netip.ParsePrefix(entry); err != nil {
				return nil, errorf(key, "%q is not an IP address or CIDR prefix (such as 10.0.0.0/8 or 2001:db8::/32)", entry)
			}
			if p != p.Masked() {
				return nil, errorf(key, "%q has bits set after its prefix length; did you mean %s?", entry, p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(entry)
			if err != nil {
				return nil, errorf(key, "%q is not an IP address or CIDR prefix (such as 10.0.0.0/8 or 2001:db8::/32)", entry)
			}
			if a.Zone() != "" {
				return nil, errorf(key, "%q has a zone; write the address without it", entry)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		switch {
		case p.Addr().Is4In6():
			return nil, errorf(key, "%q is an IPv4-mapped IPv6 address; write it as IPv4 (%s)", entry, p.Addr().Unmap())
		case p.Bits() == 0:
			return nil, errorf(key, "%q trusts every address: any client could then forge its address in X-Forwarded-For; list the proxies' addresses", entry)
		}
		out = append(out, p)
	}
	return out, nil
}
