package cloudsync

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/docuvault/docuvault/internal/config"
)

// KeyVersion is the cloud_connections.key_version of what Seal produces. A
// new key (another HKDF info string, or another SECRET_KEY kept alongside
// the old one) gets a new version, so rows sealed under the old key can
// still be told apart and re-sealed.
const KeyVersion = 1

// credentialsInfo is the HKDF info string of the credentials key: one
// string per purpose, so a key derived from SECRET_KEY for something else
// (phase 2's token signing) is unrelated to this one.
const credentialsInfo = "docuvault/cloud-credentials/v1"

// ErrUnsealable means sealed credentials could not be decrypted: SECRET_KEY
// changed since they were stored, or the bytes were altered or moved to
// another row.
var ErrUnsealable = errors.New("stored credentials cannot be decrypted (was SECRET_KEY changed?)")

// Sealer encrypts cloud credentials at rest with AES-256-GCM under a key
// derived from SECRET_KEY with HKDF-SHA-256. A sealed value is the random
// 12-byte nonce followed by the ciphertext and tag; the connection's id is
// the additional authenticated data, so a sealed value copied to another
// row does not decrypt.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer derives the credentials key from secretKey (SECRET_KEY, at
// least config.MinSecretKeyLen bytes).
func NewSealer(secretKey string) (*Sealer, error) {
	if err := config.SecretKey("SECRET_KEY", secretKey); err != nil {
		return nil, err
	}
	key, err := hkdf.Key(sha256.New, []byte(secretKey), nil, credentialsInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive credentials key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext for the connection id.
func (s *Sealer) Seal(id uuid.UUID, plaintext []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	return s.aead.Seal(nonce, nonce, plaintext, id[:])
}

// Open decrypts what Seal returned for the same connection id, or returns
// ErrUnsealable.
func (s *Sealer) Open(id uuid.UUID, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrUnsealable
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], id[:])
	if err != nil {
		return nil, ErrUnsealable
	}
	return plain, nil
}
