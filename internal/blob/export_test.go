package blob

import (
	"context"
	"hash"
	"net"
	"sync/atomic"

	"github.com/docuvault/docuvault/internal/config"
)

// PutWhole exposes putWhole to the external tests.
func (s *Store) PutWhole(ctx context.Context, key string, data []byte, sum hash.Hash) (PutResult, error) {
	var res PutResult
	err := s.putWhole(ctx, key, data, "", sum, &res)
	return res, err
}

// NewCountingDials is New, also returning how many connections the Store
// dialled so far.
func NewCountingDials(cfg config.S3) (*Store, *atomic.Int64, error) {
	transport, err := newTransport(cfg.Endpoint.Secure)
	if err != nil {
		return nil, nil, err
	}
	dials := &atomic.Int64{}
	dial := transport.DialContext
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	s, err := newStore(cfg, transport)
	return s, dials, err
}
