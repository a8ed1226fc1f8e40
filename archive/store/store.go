// Package store is where the archive keeps its objects: a local directory
// or an S3 bucket (AWS or any S3-compatible server). Keys are relative to
// the store's prefix and use "/" as separator.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound is returned (wrapped) when a key does not exist.
var ErrNotFound = errors.New("store: not found")

// Store holds archive objects.
type Store interface {
	// Put stores data under key durably: when Put returns nil the object
	// survives a crash of this process and of the machine.
	Put(ctx context.Context, key string, data []byte) error
	// Get returns the whole object.
	Get(ctx context.Context, key string) ([]byte, error)
	// GetRange returns n bytes of the object from offset off.
	GetRange(ctx context.Context, key string, off, n int64) ([]byte, error)
	// List returns the keys under prefix (recursively), sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// Dirs returns the names of the immediate "sub-directories" of prefix
	// (the next key segment, without its trailing "/"), sorted.
	Dirs(ctx context.Context, prefix string) ([]string, error)
	// String describes the store for logs (no secrets).
	String() string
}

// S3Options configure the S3 backend.
type S3Options struct {
	// Endpoint is a custom endpoint URL (S3-compatible servers); empty for
	// AWS.
	Endpoint string
	// Region; empty uses the standard chain (AWS_REGION, config files),
	// falling back to us-east-1.
	Region string
	// PathStyle addresses buckets as endpoint/bucket instead of
	// bucket.endpoint.
	PathStyle bool
	// PartSize is the multipart part size; objects larger than it are
	// uploaded in parts (0: 16 MiB).
	PartSize int64
	// SSE is the server-side encryption asked for on every write: ""
	// (the bucket's default), SSEAES256 (S3-managed keys) or SSEKMS.
	SSE string
	// SSEKMSKeyID is the KMS key (id, ARN or alias) with SSE aws:kms;
	// empty uses the account's AWS-managed key for S3.
	SSEKMSKeyID string
}

// Server-side encryption modes of S3Options.SSE.
const (
	SSEAES256 = "AES256"
	SSEKMS    = "aws:kms"
)

// ValidateSSE checks the encryption options and returns one clear error.
func (o S3Options) ValidateSSE() error {
	switch o.SSE {
	case "", SSEAES256, SSEKMS:
	default:
		return fmt.Errorf("--sse must be %s or %s, got %q", SSEAES256, SSEKMS, o.SSE)
	}
	if o.SSEKMSKeyID != "" && o.SSE != SSEKMS {
		return fmt.Errorf("--sse-kms-key-id needs --sse %s", SSEKMS)
	}
	return nil
}

// Open returns the store for location: "s3://bucket/prefix" or a local
// directory path (created if missing).
func Open(ctx context.Context, location string, o S3Options) (Store, error) {
	if rest, ok := strings.CutPrefix(location, "s3://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return nil, fmt.Errorf("store %q: no bucket", location)
		}
		return NewS3(ctx, bucket, prefix, o)
	}
	if strings.Contains(location, "://") {
		return nil, fmt.Errorf("store %q: only s3:// URLs and local directories are supported", location)
	}
	if location == "" {
		return nil, fmt.Errorf("store: empty location")
	}
	return NewDir(location)
}

func cleanPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p != "" {
		p += "/"
	}
	return p
}
