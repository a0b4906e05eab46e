package cloudsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3PartSize bounds what one copy to S3 holds in memory: minio-go reads a
// part at a time, one part in flight (NumThreads 1).
const s3PartSize = 16 << 20

// S3 is a bucket (and prefix) on any S3-compatible server, through
// minio-go.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string
}

func newS3(s S3Settings, c S3Credentials, transport http.RoundTripper) (*S3, error) {
	client, err := minio.New(s.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(c.AccessKeyID, c.SecretAccessKey, ""),
		Secure:    s.UseSSL,
		Region:    s.Region,
		Transport: transport,
		// The sync workers retry with their own backoff; minio-go's ten
		// retries would hold a worker for a long time on a dead endpoint.
		MaxRetries: 2,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", s.Endpoint, err)
	}
	return &S3{client: client, bucket: s.Bucket, prefix: s.Prefix}, nil
}

// Put uploads r (size bytes) to key.
func (p *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (string, error) {
	info, err := p.client.PutObject(ctx, p.bucket, key, r, size, minio.PutObjectOptions{
		ContentType: contentType,
		PartSize:    s3PartSize,
		NumThreads:  1,
	})
	if err != nil {
		return "", fmt.Errorf("put s3://%s/%s: %w", p.bucket, key, err)
	}
	return info.ETag, nil
}

// Delete removes key (S3 deletes of missing keys succeed).
func (p *S3) Delete(ctx context.Context, key string) error {
	if err := p.client.RemoveObject(ctx, p.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("delete s3://%s/%s: %w", p.bucket, key, err)
	}
	return nil
}

// Size returns the size of the object at key.
func (p *S3) Size(ctx context.Context, key string) (int64, error) {
	info, err := p.client.StatObject(ctx, p.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return 0, ErrRemoteMissing
		}
		return 0, fmt.Errorf("stat s3://%s/%s: %w", p.bucket, key, err)
	}
	return info.Size, nil
}

// Test checks the bucket exists and is readable, then writes and deletes a
// probe object under the prefix.
func (p *S3) Test(ctx context.Context) error {
	exists, err := p.client.BucketExists(ctx, p.bucket)
	if err != nil {
		return &TestError{Kind: s3Kind(err, FailAuthRefused), Err: fmt.Errorf("bucket %s: %w", p.bucket, err)}
	}
	if !exists {
		return &TestError{Kind: FailNotFound, Err: fmt.Errorf("bucket %s does not exist", p.bucket)}
	}
	key := probeKey(p.prefix)
	if _, err := p.Put(ctx, key, bytes.NewReader(probeBody), int64(len(probeBody)), "text/plain"); err != nil {
		return &TestError{Kind: s3Kind(err, FailNoWritePermission), Err: err}
	}
	if err := p.Delete(ctx, key); err != nil {
		return &TestError{Kind: s3Kind(err, FailNoDeletePermission), Err: err}
	}
	return nil
}

// s3Kind classifies an S3 error; denied is the kind of an access denial
// at this step.
func s3Kind(err error, denied string) string {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" || resp.StatusCode == http.StatusUnauthorized:
		return FailAuthRefused
	case resp.Code == "AccessDenied" || resp.StatusCode == http.StatusForbidden:
		return denied
	case resp.Code == "NoSuchBucket":
		return FailNotFound
	case resp.StatusCode >= 500 || resp.StatusCode == 0 && isNetError(err):
		return FailUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		return FailUnreachable
	}
	return FailOther
}
