package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Limit is a rate: Count events per Period, all of which may come at once
// (GCRA with a burst of Count: after a burst, one more every
// Period/Count).
type Limit struct {
	Count  int
	Period time.Duration
}

// String is the limit as configured: 10/1m0s.
func (l Limit) String() string { return fmt.Sprintf("%d/%s", l.Count, l.Period) }

// Limits are the rate limits of the authentication endpoints, per client
// IP address (IPv6: per /64) and per account (the email, or for refresh
// the token's user). Zero limits mean the defaults (DefaultLimits).
type Limits struct {
	LoginPerIP, LoginPerAccount       Limit
	RegisterPerIP, RegisterPerAccount Limit
	RefreshPerIP, RefreshPerAccount   Limit
}

// DefaultLimits: a person who mistypes their password a few times, a
// household behind one address, and a client refreshing every few
// minutes stay far below them; a password guesser gets 10 tries a
// minute per account.
var DefaultLimits = Limits{
	LoginPerIP: Limit{30, time.Minute}, LoginPerAccount: Limit{10, time.Minute},
	RegisterPerIP: Limit{10, time.Hour}, RegisterPerAccount: Limit{5, time.Hour},
	RefreshPerIP: Limit{60, time.Minute}, RefreshPerAccount: Limit{30, time.Minute},
}

// WithDefaults returns l with each zero limit replaced by its default.
func (l Limits) WithDefaults() Limits {
	or := func(v, d Limit) Limit {
		if v.Count <= 0 || v.Period <= 0 {
			return d
		}
		return v
	}
	d := DefaultLimits
	return Limits{
		LoginPerIP: or(l.LoginPerIP, d.LoginPerIP), LoginPerAccount: or(l.LoginPerAccount, d.LoginPerAccount),
		RegisterPerIP: or(l.RegisterPerIP, d.RegisterPerIP), RegisterPerAccount: or(l.RegisterPerAccount, d.RegisterPerAccount),
		RefreshPerIP: or(l.RefreshPerIP, d.RefreshPerIP), RefreshPerAccount: or(l.RefreshPerAccount, d.RefreshPerAccount),
	}
}

// DefaultRateLimitPrefix prefixes every rate limit key (after redis_rate's
// own "rate:"): rate:docuvault:auth:{action}:{ip|account}:{value}.
const DefaultRateLimitPrefix = "docuvault:auth:"

// RateLimiter counts attempts in Redis with GCRA (redis_rate: one Lua
// script per check, Redis's clock), so that every API replica shares the
// counts and a restart forgets none.
type RateLimiter struct {
	limiter *redis_rate.Limiter
	prefix  string
}

// NewRateLimiter returns a limiter whose keys start with prefix (default
// DefaultRateLimitPrefix); tests give each their own.
func NewRateLimiter(rdb *redis.Client, prefix string) *RateLimiter {
	if prefix == "" {
		prefix = DefaultRateLimitPrefix
	}
	return &RateLimiter{limiter: redis_rate.NewLimiter(rdb), prefix: prefix}
}

// Allow counts one attempt of action (login, register, refresh) by
// subject (ip or account) value, and returns zero when it is allowed, or
// how long to wait before the next one would be. An error means Redis
// could not be asked.
func (rl *RateLimiter) Allow(ctx context.Context, action, subject, value string, l Limit) (time.Duration, error) {
	res, err := rl.limiter.Allow(ctx, rl.prefix+action+":"+subject+":"+value,
		redis_rate.Limit{Rate: l.Count, Burst: l.Count, Period: l.Period})
	if err != nil {
		return 0, fmt.Errorf("rate limit %s: %w", action, err)
	}
	if res.Allowed > 0 {
		return 0, nil
	}
	return max(res.RetryAfter, time.Second), nil
}

// AccountKey is the rate limit key of an account named by email: a hash
// of its lowercased form, so that Redis holds no addresses.
func AccountKey(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return hex.EncodeToString(sum[:16])
}
