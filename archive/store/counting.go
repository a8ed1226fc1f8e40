package store

import (
	"context"
	"sync/atomic"
)

// Counting wraps a Store and counts the bytes and requests of reads, so a
// query can report (and tests can assert) how much it fetched.
type Counting struct {
	Store
	bytes    atomic.Int64
	requests atomic.Int64
}

// NewCounting wraps s.
func NewCounting(s Store) *Counting { return &Counting{Store: s} }

// Get implements Store.
func (c *Counting) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := c.Store.Get(ctx, key)
	c.bytes.Add(int64(len(b)))
	c.requests.Add(1)
	return b, err
}

// GetRange implements Store.
func (c *Counting) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	b, err := c.Store.GetRange(ctx, key, off, n)
	c.bytes.Add(int64(len(b)))
	c.requests.Add(1)
	return b, err
}

// Bytes is the number of object bytes read so far.
func (c *Counting) Bytes() int64 { return c.bytes.Load() }

// Requests is the number of Get and GetRange calls so far.
func (c *Counting) Requests() int64 { return c.requests.Load() }
