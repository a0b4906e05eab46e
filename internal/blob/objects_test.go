package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/docuvault/docuvault/internal/blob"
	"github.com/docuvault/docuvault/internal/testenv"
)

func TestPutStreamsAndChecksums(t *testing.T) {
	t.Parallel()
	store, err := blob.New(testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, size := range []int{1, 256 << 10, 256<<10 + 1, blob.PartSize, blob.PartSize + 1, 2*blob.PartSize + 17} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		want := sha256.Sum256(data)
		res, err := store.Put(ctx, "t/obj", bytes.NewReader(data), int64(size), "")
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		n, sum, err := store.Hash(ctx, "t/obj")
		if err != nil || res.Size != int64(size) || n != int64(size) || !bytes.Equal(res.SHA256, want[:]) || !bytes.Equal(sum, want[:]) {
			t.Errorf("size %d: put %d/%x, stored %d/%x, %v", size, res.Size, res.SHA256[:4], n, sum[:4], err)
		}
	}
	// Over the limit: ErrTooLarge, and nothing stored (multipart aborted).
	big := make([]byte, blob.PartSize+100)
	if _, err := store.Put(ctx, "t/big", bytes.NewReader(big), blob.PartSize+50, ""); !errors.Is(err, blob.ErrTooLarge) {
		t.Errorf("over the limit: %v; want ErrTooLarge", err)
	}
	if _, err := store.Stat(ctx, "t/big"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("an oversized stream left an object: %v", err)
	}
}

// A burst of as many requests at once as the consumer has copies in flight
// leaves its connections open for the next burst, which dials none
// (minio-go's transport keeps 16 and closed the rest).
func TestConnectionsOfABurstAreKept(t *testing.T) {
	t.Parallel()
	store, dials, err := blob.NewCountingDials(testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.Put(ctx, "t/burst", bytes.NewReader(make([]byte, 256<<10)), 256<<10, ""); err != nil {
		t.Fatal(err)
	}
	const inFlight = 48
	burst := func() int64 {
		t.Helper()
		before := dials.Load()
		var started, wg sync.WaitGroup
		started.Add(inFlight)
		errs := make(chan error, inFlight)
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				obj, _, err := store.Open(ctx, "t/burst")
				if err == nil {
					defer obj.Close()
					// Each holds its connection until all have one.
					_, err = obj.Read(make([]byte, 1))
				}
				started.Done()
				started.Wait()
				if err == nil {
					_, err = io.Copy(io.Discard, obj)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		return dials.Load() - before
	}
	// The upload's connection is idle and taken again.
	if first := burst(); first < inFlight-1 {
		t.Fatalf("the first burst dialled %d connections for %d requests at once", first, inFlight)
	}
	if second := burst(); second != 0 {
		t.Errorf("the second burst dialled %d connections; want 0 (the first one's kept)", second)
	}
}

// However many large uploads arrive at once, only a bounded number hold a
// part buffer; the others wait, and give up when their context ends.
func TestLargePutsAreBounded(t *testing.T) {
	store, err := blob.New(testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// 32 streams that send a little over the small buffer, then stall.
	var writers []*io.PipeWriter
	var wg sync.WaitGroup
	for i := range 32 {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = store.Put(ctx, "t/stall-"+string(rune('a'+i)), pr, 1<<30, "")
		}()
		go func() { _, _ = pw.Write(make([]byte, 300<<10)) }()
	}
	deadline := time.Now().Add(30 * time.Second)
	for blob.LargePutsInFlight() < 32 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d stalled uploads took a slot within 30 s", blob.LargePutsInFlight())
		}
		time.Sleep(10 * time.Millisecond)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	_, err = store.Put(short, "t/one-more", bytes.NewReader(make([]byte, 300<<10)), 1<<30, "")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a 33rd large upload got %v; want it to wait for a slot until its deadline", err)
	}
	for _, pw := range writers {
		pw.CloseWithError(errors.New("client gone"))
	}
	wg.Wait()
	// Slots are free again.
	if _, err := store.Put(context.Background(), "t/after", bytes.NewReader(make([]byte, 300<<10)), 1<<30, ""); err != nil {
		t.Errorf("after the stalled uploads ended: %v", err)
	}
}

// flipped is a SHA-256 whose sum is not that of what was written.
type flipped struct{ hash.Hash }

func (f flipped) Sum(b []byte) []byte {
	s := f.Hash.Sum(b)
	s[len(s)-1] ^= 1
	return s
}

// A single PUT sends the SHA-256 the upload computed as its signed payload
// hash, and the server checks the bytes against it: bytes that do not match
// (here: a hash altered after the fact) are refused and nothing is stored.
// Finalisation relies on this to skip reading staged objects back.
func TestPutWholeServerChecksPayloadHash(t *testing.T) {
	t.Parallel()
	store, err := blob.New(testenv.S3(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("docuvault"), 4000)
	hashed := func() hash.Hash { h := sha256.New(); h.Write(data); return h }

	if _, err := store.PutWhole(ctx, "t/good", data, hashed()); err != nil {
		t.Fatalf("matching hash refused: %v", err)
	}
	_, err = store.PutWhole(ctx, "t/bad", data, flipped{hashed()})
	if code := minio.ToErrorResponse(errors.Unwrap(err)).Code; code != "XAmzContentSHA256Mismatch" {
		t.Fatalf("mismatching hash: %v (code %q); want XAmzContentSHA256Mismatch", err, code)
	}
	if _, err := store.Stat(ctx, "t/bad"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a refused payload left an object: %v", err)
	}
}
