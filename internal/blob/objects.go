package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
)

// PartSize is the multipart part size for streamed uploads, and so the
// memory one upload holds at most: uploads of unknown length are read one
// part at a time into a pooled buffer. 5 MiB is S3's minimum part size;
// with S3's 10,000-part limit it caps one object at about 48 GiB.
const PartSize = 5 << 20

// MaxObjectSize is the largest object a streamed upload can produce.
const MaxObjectSize = PartSize * 10000

var (
	// ErrNotFound means the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrTooLarge means a stream exceeded the size limit given to Put.
	ErrTooLarge = errors.New("object too large")
	// ErrChanged means the object is not the version expected (its ETag
	// differs): it was replaced since it was written.
	ErrChanged = errors.New("object changed")
)

// smallSize is the buffer a stream is first read into: most documents fit,
// and then no part-sized buffer is touched at all.
const smallSize = 256 << 10

// Buffers are kept on free lists rather than in a sync.Pool: a pool is
// emptied by every garbage collection, and re-allocating (and zeroing) a
// buffer per upload dominated the cost of small uploads. The lists are
// bounded; buffers beyond them are left to the garbage collector.
var (
	smallBuffers = make(chan []byte, 64)
	partBuffers  = make(chan []byte, 32)
)

// At most maxLargePuts streams hold a part buffer at once; more wait (the
// client is slowed by TCP back-pressure, not refused). With the small
// buffers this bounds what uploads hold to about 32 × 5 MiB however many
// clients send large files at once.
const maxLargePuts = 32

var largePutSlots = make(chan struct{}, maxLargePuts)

// LargePutsInFlight reports how many streams hold a part buffer now (a
// gauge for metrics and tests).
func LargePutsInFlight() int { return len(largePutSlots) }

func getBuffer(list chan []byte, size int) []byte {
	select {
	case b := <-list:
		return b
	default:
		return make([]byte, size)
	}
}

func putBuffer(list chan []byte, b []byte) {
	select {
	case list <- b:
	default:
	}
}

// StagingKey is where an upload waits while its document is pending.
func StagingKey(documentID uuid.UUID) string { return "staging/" + documentID.String() }

// FinalKey is where a ready document lives: under its owner's prefix, or
// users/_unowned/ for documents without an owner (phase 1). The original
// filename is never part of a key.
func FinalKey(owner *uuid.UUID, documentID uuid.UUID) string {
	user := "_unowned"
	if owner != nil {
		user = owner.String()
	}
	return "users/" + user + "/documents/" + documentID.String()
}

// PutResult describes a stored stream.
type PutResult struct {
	Size   int64
	SHA256 []byte
	// ETag identifies the stored version: a later copy can require it
	// (CopyIfUnchanged), so that what is copied is what was hashed.
	ETag string
	// Head is the first bytes of the stream (up to 512), for content type
	// detection.
	Head []byte
}

// Put streams r to key, computing its size and SHA-256 on the way, with at
// most PartSize bytes of it in memory. A stream longer than maxBytes stops
// with ErrTooLarge and leaves no object (an unfinished multipart upload is
// aborted). On other errors nothing is left either, as far as the server
// can be reached.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, maxBytes int64, contentType string) (PutResult, error) {
	sum := sha256.New()
	src := &limitedHashReader{r: r, h: sum, left: maxBytes}
	var res PutResult

	small := getBuffer(smallBuffers, smallSize)
	defer putBuffer(smallBuffers, small)
	n, err := io.ReadFull(src, small)
	switch {
	case errors.Is(err, ErrTooLarge):
		return res, err
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		// The whole stream fits: a single PUT of known size.
		res.Head = bytes.Clone(small[:min(n, 512)])
		return res, s.putWhole(ctx, key, small[:n], contentType, sum, &res)
	case err != nil:
		return res, err
	}
	res.Head = bytes.Clone(small[:512])

	// Larger: continue into a part-sized buffer, once one may be held.
	select {
	case largePutSlots <- struct{}{}:
		defer func() { <-largePutSlots }()
	case <-ctx.Done():
		return res, ctx.Err()
	}
	buf := getBuffer(partBuffers, PartSize)
	defer putBuffer(partBuffers, buf)
	copy(buf, small[:n])
	m, err := io.ReadFull(src, buf[n:])
	n += m
	switch {
	case errors.Is(err, ErrTooLarge):
		return res, err
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return res, s.putWhole(ctx, key, buf[:n], contentType, sum, &res)
	case err != nil:
		return res, err
	}

	core := minio.Core{Client: s.client}
	uploadID, err := core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{ContentType: contentType})
	if err != nil {
		return res, fmt.Errorf("start multipart upload of %s: %w", key, err)
	}
	abort := func(cause error) (PutResult, error) {
		if err := core.AbortMultipartUpload(context.WithoutCancel(ctx), s.bucket, key, uploadID); err != nil {
			return res, errors.Join(cause, fmt.Errorf("abort multipart upload of %s: %w", key, err))
		}
		return res, cause
	}
	var parts []minio.CompletePart
	var total int64
	var readErr error // nil: the buffer is full and more may follow
	for part := 1; n > 0; part++ {
		p, err := core.PutObjectPart(ctx, s.bucket, key, uploadID, part, bytes.NewReader(buf[:n]), int64(n), minio.PutObjectPartOptions{})
		if err != nil {
			return abort(fmt.Errorf("upload part %d of %s: %w", part, key, err))
		}
		parts = append(parts, minio.CompletePart{PartNumber: part, ETag: p.ETag})
		total += int64(n)
		if readErr != nil {
			break // that short part was the last
		}
		n, readErr = io.ReadFull(src, buf)
		if readErr != nil && readErr != io.EOF && readErr != io.ErrUnexpectedEOF {
			return abort(readErr)
		}
	}
	info, err := core.CompleteMultipartUpload(ctx, s.bucket, key, uploadID, parts, minio.PutObjectOptions{ContentType: contentType})
	if err != nil {
		return abort(fmt.Errorf("complete multipart upload of %s: %w", key, err))
	}
	res.Size, res.SHA256, res.ETag = total, sum.Sum(nil), info.ETag
	return res, nil
}

// putWhole stores data, the whole stream, with one PUT and completes res.
// The SHA-256 computed on the way doubles as the request's signed payload
// hash (X-Amz-Content-Sha256), which the server checks on receipt.
// DisableContentSha256 turns off minio-go's streaming signature, which on
// plain HTTP would otherwise ignore the given hash and hash every chunk of
// the payload a second time.
func (s *Store) putWhole(ctx context.Context, key string, data []byte, contentType string, sum hash.Hash, res *PutResult) error {
	digest := sum.Sum(nil)
	core := minio.Core{Client: s.client}
	info, err := core.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), "", hex.EncodeToString(digest),
		minio.PutObjectOptions{ContentType: contentType, DisableContentSha256: true})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	res.Size, res.SHA256, res.ETag = int64(len(data)), digest, info.ETag
	return nil
}

// limitedHashReader hashes what it reads and fails with ErrTooLarge past
// left bytes.
type limitedHashReader struct {
	r    io.Reader
	h    hash.Hash
	left int64
}

func (l *limitedHashReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.h.Write(p[:n])
	l.left -= int64(n)
	if l.left < 0 {
		return n, ErrTooLarge
	}
	return n, err
}

// ObjectInfo is what Stat reports.
type ObjectInfo struct {
	Key  string
	Size int64
}

// Stat returns the object's size, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, notFound(err)
	}
	return ObjectInfo{Key: key, Size: info.Size}, nil
}

// Hash reads the whole object and returns its size and SHA-256.
func (s *Store) Hash(ctx context.Context, key string) (int64, []byte, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return 0, nil, notFound(err)
	}
	defer obj.Close()
	h := sha256.New()
	n, err := io.Copy(h, obj)
	if err != nil {
		return 0, nil, notFound(err)
	}
	return n, h.Sum(nil), nil
}

// Copy copies src to dst inside the bucket, server-side.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	_, err := s.client.CopyObject(ctx,
		minio.CopyDestOptions{Bucket: s.bucket, Object: dst},
		minio.CopySrcOptions{Bucket: s.bucket, Object: src})
	return notFound(err)
}

// CopyIfUnchanged copies src to dst server-side only if src still has the
// given ETag: ErrChanged if it was replaced, ErrNotFound if it is gone.
func (s *Store) CopyIfUnchanged(ctx context.Context, src, etag, dst string) error {
	_, err := s.client.CopyObject(ctx,
		minio.CopyDestOptions{Bucket: s.bucket, Object: dst},
		minio.CopySrcOptions{Bucket: s.bucket, Object: src, MatchETag: etag})
	if resp := minio.ToErrorResponse(err); resp.Code == minio.PreconditionFailed || resp.StatusCode == http.StatusPreconditionFailed {
		return fmt.Errorf("%w: %s", ErrChanged, src)
	}
	return notFound(err)
}

// RemoveMany deletes keys with as few requests as the server allows (up
// to 1,000 keys each); missing objects are not an error.
func (s *Store) RemoveMany(ctx context.Context, keys []string) error {
	ch := make(chan minio.ObjectInfo, len(keys))
	for _, k := range keys {
		ch <- minio.ObjectInfo{Key: k}
	}
	close(ch)
	var errs []error
	for e := range s.client.RemoveObjects(ctx, s.bucket, ch, minio.RemoveObjectsOptions{}) {
		errs = append(errs, fmt.Errorf("remove %s: %w", e.ObjectName, e.Err))
	}
	return errors.Join(errs...)
}

// Remove deletes key; removing a missing object is not an error.
func (s *Store) Remove(ctx context.Context, key string) error {
	return s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
}

// Open returns the object for reading with Seek (for Range requests), or
// ErrNotFound.
func (s *Store) Open(ctx context.Context, key string) (*minio.Object, ObjectInfo, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, ObjectInfo{}, notFound(err)
	}
	info, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, ObjectInfo{}, notFound(err)
	}
	return obj, ObjectInfo{Key: key, Size: info.Size}, nil
}

// List calls fn for every object under prefix with its last-modified time.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, info minio.ObjectInfo) error) error {
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		if err := fn(obj.Key, obj); err != nil {
			return err
		}
	}
	return nil
}

func notFound(err error) error {
	if err == nil {
		return nil
	}
	// Only a missing key: a missing bucket (NoSuchBucket, also a 404) is a
	// configuration error, and must not make documents look lost.
	if resp := minio.ToErrorResponse(err); resp.Code == "NoSuchKey" {
		return fmt.Errorf("%w: %s", ErrNotFound, resp.Key)
	}
	return err
}
