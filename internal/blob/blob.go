// Package blob stores document bytes in an S3-compatible object store (MinIO
// in the default installation) through minio-go. Nothing here is specific
// to MinIO the server: any S3-compatible endpoint works.
package blob

import (
	"context"
	"fmt"
	"net/http"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/docuvault/docuvault/internal/config"
)

// Store is one bucket of an S3-compatible server.
type Store struct {
	client *minio.Client
	bucket string
}

// maxIdleConnsPerHost is how many idle connections to the object store
// a Store keeps for reuse: as many as the requests it has in flight at
// once (the consumer copies up to 32 objects at once, the API stores as
// many uploads as it serves), so that a burst does not close what it
// opened for the next one to dial again. minio-go keeps 16.
const maxIdleConnsPerHost = 64

// New returns a Store for cfg. It does not contact the server.
func New(cfg config.S3) (*Store, error) {
	transport, err := newTransport(cfg.Endpoint.Secure)
	if err != nil {
		return nil, fmt.Errorf("object storage client: %w", err)
	}
	return newStore(cfg, transport)
}

// newTransport is minio-go's default transport keeping
// maxIdleConnsPerHost idle connections.
func newTransport(secure bool) (*http.Transport, error) {
	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	transport.MaxIdleConnsPerHost = maxIdleConnsPerHost
	return transport, nil
}

// newStore returns a Store for cfg that connects through transport.
func newStore(cfg config.S3, transport http.RoundTripper) (*Store, error) {
	client, err := minio.New(cfg.Endpoint.HostPort, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.Endpoint.Secure,
		Transport: transport,
	})
	if err != nil {
		return nil, fmt.Errorf("object storage client: %w", err)
	}
	return &Store{client: client, bucket: cfg.Bucket}, nil
}

// Bucket is the bucket's name.
func (s *Store) Bucket() string { return s.bucket }

// Client is the underlying minio-go client.
func (s *Store) Client() *minio.Client { return s.client }

// EnsureBucket creates the bucket unless it exists. It reports whether it
// created it.
func (s *Store) EnsureBucket(ctx context.Context) (bool, error) {
	exists, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return false, fmt.Errorf("check bucket %s: %w", s.bucket, err)
	}
	if exists {
		return false, nil
	}
	if err := s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{}); err != nil {
		resp := minio.ToErrorResponse(err)
		if resp.Code == "BucketAlreadyOwnedByYou" {
			return false, nil
		}
		return false, fmt.Errorf("create bucket %s: %w", s.bucket, err)
	}
	return true, nil
}

// Ping checks that the server answers and the bucket exists.
func (s *Store) Ping(ctx context.Context) error {
	exists, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("bucket %s does not exist (run `api init-bucket`)", s.bucket)
	}
	return nil
}
