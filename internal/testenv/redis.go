package testenv

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis leases one of the server's databases 1-15 for the test, empty, and
// returns its URL; stream names are fixed by the event contract, so tests
// are isolated by database index. Leases are keys in database 0 that expire
// on their own if a test process dies; the test waits (bounded) while all
// are taken.
func Redis(t testing.TB) string {
	t.Helper()
	base, err := url.Parse(RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	opts.DB = 0
	leases := redis.NewClient(opts)
	t.Cleanup(func() { leases.Close() })
	token := Unique("lease-")
	ctx := context.Background()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		for db := 1; db <= 15; db++ {
			key := fmt.Sprintf("dvtest:redis-db:%d", db)
			ok, err := leases.SetNX(ctx, key, token, 15*time.Minute).Result()
			if err != nil {
				t.Fatalf("Redis at %s (is it running? see README): %v", base.Host, err)
			}
			if !ok {
				continue
			}
			u := *base
			u.Path = fmt.Sprintf("/%d", db)
			dbOpts := *opts
			dbOpts.DB = db
			client := redis.NewClient(&dbOpts)
			if err := client.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = client.FlushDB(context.Background()).Err()
				client.Close()
				if v, _ := leases.Get(context.Background(), key).Result(); v == token {
					leases.Del(context.Background(), key)
				}
			})
			return u.String()
		}
		if time.Now().After(deadline) {
			t.Fatal("no free Redis database (1-15) within 3 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RedisClient returns a client for url, closed when the test ends.
func RedisClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}
