// Package auth is DocuVault's accounts machinery, free of HTTP: password
// hashing (Argon2id) and policy, access tokens (JWT, HS256, key derived
// from SECRET_KEY), opaque refresh tokens, and the rate limits of the
// authentication endpoints (GCRA in Redis).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the Argon2id cost parameters of new password hashes.
// Each hash carries the parameters it was made with (PHC string format),
// so changing them later affects new hashes only; a login with a hash
// made with other parameters re-hashes the password (NeedsRehash).
type Argon2Params struct {
	MemoryKiB   uint32 // m
	Iterations  uint32 // t
	Parallelism uint8  // p
	SaltLen     int
	KeyLen      int
}

// DefaultArgon2 is OWASP's recommended Argon2id configuration (19 MiB,
// two passes, one lane): about 30 ms on one core of a small VPS. Each
// hash in progress holds MemoryKiB of memory; Hasher bounds how many run
// at once.
var DefaultArgon2 = Argon2Params{MemoryKiB: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLen: 16, KeyLen: 32}

// Bounds of the parameters a stored hash may name: a hash outside them is
// refused rather than allowed to exhaust memory or time.
const (
	maxMemoryKiB  = 1 << 20 // 1 GiB
	maxIterations = 64
)

// ErrMalformedHash means a stored password hash is not an Argon2id PHC
// string this package can verify.
var ErrMalformedHash = errors.New("malformed password hash")

// Hasher hashes and verifies passwords with Argon2id. It runs at most
// GOMAXPROCS hashes at once (each holds its memory for the whole
// computation); more wait their turn. It is safe for concurrent use.
type Hasher struct {
	params Argon2Params
	slots  chan struct{}

	dummyOnce sync.Once
	dummy     string

	verifications atomic.Int64
}

// NewHasher returns a Hasher making hashes with p.
func NewHasher(p Argon2Params) *Hasher {
	return &Hasher{params: p, slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))}
}

// Hash returns the PHC string of password (NormalizePassword'd):
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key> (unpadded standard base64).
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, h.params.SaltLen)
	_, _ = rand.Read(salt) // never fails (crypto/rand)
	key, err := h.derive(ctx, NormalizePassword(password), salt, h.params)
	if err != nil {
		return "", err
	}
	return encodePHC(h.params, salt, key), nil
}

// Verify reports whether password matches the PHC string encoded, in
// constant time with respect to the key, and whether the hash should be
// replaced because it was made with other parameters than the Hasher's.
// It returns ErrMalformedHash for a hash it cannot read, or ctx's error.
func (h *Hasher) Verify(ctx context.Context, password, encoded string) (ok, needsRehash bool, err error) {
	p, salt, want, err := decodePHC(encoded)
	if err != nil {
		return false, false, err
	}
	h.verifications.Add(1)
	got, err := h.derive(ctx, NormalizePassword(password), salt, p)
	if err != nil {
		return false, false, err
	}
	ok = subtle.ConstantTimeCompare(got, want) == 1
	return ok, ok && p != h.params, nil
}

// VerifyDummy does the work of Verify against a hash no password matches,
// and reports nothing: a login for an unknown account (or one without a
// password) takes as long as one with a wrong password.
func (h *Hasher) VerifyDummy(ctx context.Context, password string) error {
	h.dummyOnce.Do(func() {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		salt := make([]byte, h.params.SaltLen)
		_, _ = rand.Read(salt)
		key := argon2.IDKey(secret, salt, h.params.Iterations, h.params.MemoryKiB, h.params.Parallelism, uint32(h.params.KeyLen))
		h.dummy = encodePHC(h.params, salt, key)
	})
	_, _, err := h.Verify(ctx, password, h.dummy)
	return err
}

// Verifications counts the Argon2 verifications made so far (Verify and
// VerifyDummy): tests use it to show that every login path runs exactly one.
func (h *Hasher) Verifications() int64 { return h.verifications.Load() }

// derive runs Argon2id once a slot is free.
func (h *Hasher) derive(ctx context.Context, password string, salt []byte, p Argon2Params) ([]byte, error) {
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-h.slots }()
	return argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, uint32(p.KeyLen)), nil
}

var b64 = base64.RawStdEncoding

func encodePHC(p Argon2Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decodePHC parses an Argon2id PHC string; SaltLen and KeyLen of the
// parameters it returns are those of the hash.
func decodePHC(s string) (Argon2Params, []byte, []byte, error) {
	var p Argon2Params
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, ErrMalformedHash
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, ErrMalformedHash
		}
		switch k {
		case "m":
			p.MemoryKiB = uint32(n)
		case "t":
			p.Iterations = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, ErrMalformedHash
			}
			p.Parallelism = uint8(n)
		default:
			return p, nil, nil, ErrMalformedHash
		}
	}
	if p.Iterations < 1 || p.Iterations > maxIterations || p.Parallelism < 1 ||
		p.MemoryKiB < 8*uint32(p.Parallelism) || p.MemoryKiB > maxMemoryKiB {
		return p, nil, nil, ErrMalformedHash
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, nil, nil, ErrMalformedHash
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, ErrMalformedHash
	}
	p.SaltLen, p.KeyLen = len(salt), len(key)
	return p, salt, key, nil
}
