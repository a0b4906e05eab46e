package blob

import (
	"context"
	"hash"
)

// PutWhole exposes putWhole to the external tests.
func (s *Store) PutWhole(ctx context.Context, key string, data []byte, sum hash.Hash) (PutResult, error) {
	var res PutResult
	err := s.putWhole(ctx, key, data, "", sum, &res)
	return res, err
}
