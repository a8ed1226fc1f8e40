package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3 is a Store in an S3 bucket under a key prefix. Credentials come from
// the standard AWS chain (environment, shared config and credentials files,
// web identity, ECS/EC2 roles). A successful PutObject (or completed
// multipart upload) is durable by S3's contract.
type S3 struct {
	client   *s3.Client
	uploader *transfermanager.Client
	bucket   string
	prefix   string
	partSize int64
	desc     string
	sse      string
	kmsKey   string
}

// MinPartSize is the smallest multipart upload part S3 accepts (every part
// but the last).
const MinPartSize = 5 << 20

// HTTPClient, when set on S3Options via WithHTTPClient, replaces the SDK's
// HTTP client (tests count bytes with it).
type HTTPClient = s3.HTTPClient

// NewS3 returns the store for bucket and prefix.
func NewS3(ctx context.Context, bucket, prefix string, o S3Options) (*S3, error) {
	return NewS3WithClient(ctx, bucket, prefix, o, nil)
}

// NewS3WithClient is NewS3 with a custom HTTP client (nil: the SDK's).
func NewS3WithClient(ctx context.Context, bucket, prefix string, o S3Options, hc HTTPClient) (*S3, error) {
	if err := o.ValidateSSE(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var loadOpts []func(*config.LoadOptions) error
	if o.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("store: AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		if hc != nil {
			so.HTTPClient = hc
		}
		// Checksums only where S3 requires them: S3-compatible servers
		// differ in their support of the newer flexible checksums.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	ps := o.PartSize
	if ps <= 0 {
		ps = 16 << 20
	}
	if ps < MinPartSize {
		ps = MinPartSize
	}
	// The transfer manager (feature/s3/manager's successor) uploads parts
	// of ps bytes, 4 at a time, and aborts the upload when one fails (no
	// parts left behind), with a fresh context if ours was cancelled.
	up := transfermanager.New(client, func(o *transfermanager.Options) {
		o.PartSizeBytes = ps
		o.MultipartUploadThreshold = ps
		o.Concurrency = 4
		o.FailTimeout = 30 * time.Second
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	})
	desc := "s3://" + bucket + "/" + strings.Trim(prefix, "/")
	if o.Endpoint != "" {
		desc += " at " + o.Endpoint
	}
	return &S3{client: client, uploader: up, bucket: bucket, prefix: cleanPrefix(prefix), partSize: ps, desc: desc, sse: o.SSE, kmsKey: o.SSEKMSKeyID}, nil
}

// String implements Store.
func (s *S3) String() string { return s.desc }

// Put implements Store. Objects larger than the part size go up as a
// multipart upload.
func (s *S3) Put(ctx context.Context, key string, data []byte) error {
	k := s.prefix + key
	var kms *string
	if s.kmsKey != "" {
		kms = aws.String(s.kmsKey)
	}
	// --sse on every write: single PUTs and multipart uploads (the
	// transfer manager passes it to CreateMultipartUpload).
	var err error
	if int64(len(data)) > s.partSize {
		_, err = s.uploader.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: &s.bucket, Key: &k,
			Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
			ServerSideEncryption: tmtypes.ServerSideEncryption(s.sse), SSEKMSKeyID: kms})
	} else {
		_, err = s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &k,
			Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
			ServerSideEncryption: types.ServerSideEncryption(s.sse), SSEKMSKeyId: kms})
	}
	if err != nil {
		return fmt.Errorf("store: put s3://%s/%s: %w", s.bucket, k, err)
	}
	return nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string) ([]byte, error) {
	return s.get(ctx, key, "", -1)
}

// GetRange implements Store with an HTTP range request.
func (s *S3) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if off < 0 || n <= 0 {
		if n == 0 && off >= 0 {
			return []byte{}, nil
		}
		return nil, fmt.Errorf("store: bad range %d+%d", off, n)
	}
	return s.get(ctx, key, fmt.Sprintf("bytes=%d-%d", off, off+n-1), n)
}

func (s *S3) get(ctx context.Context, key, rng string, n int64) ([]byte, error) {
	k := s.prefix + key
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &k}
	if rng != "" {
		in.Range = &rng
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		var nsk *types.NoSuchKey
		var ae smithy.APIError
		if errors.As(err, &nsk) || (errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound")) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, k)
		}
		return nil, fmt.Errorf("store: get s3://%s/%s: %w", s.bucket, k, err)
	}
	defer out.Body.Close()
	var b []byte
	if n >= 0 {
		b = make([]byte, n)
		if _, err = io.ReadFull(out.Body, b); err != nil {
			return nil, fmt.Errorf("store: get s3://%s/%s %s: %w", s.bucket, k, rng, err)
		}
		return b, nil
	}
	b, err = io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("store: get s3://%s/%s: %w", s.bucket, k, err)
	}
	return b, nil
}

// List implements Store.
func (s *S3) List(ctx context.Context, prefix string) ([]string, error) {
	p := s.prefix + prefix
	var keys []string
	pg := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &p})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("store: list s3://%s/%s: %w", s.bucket, p, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), s.prefix))
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Dirs implements Store.
func (s *S3) Dirs(ctx context.Context, prefix string) ([]string, error) {
	p := s.prefix + prefix
	if p != "" && !strings.HasSuffix(p, "/") {
		p += "/"
	}
	var out []string
	pg := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &p, Delimiter: aws.String("/")})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("store: list s3://%s/%s: %w", s.bucket, p, err)
		}
		for _, cp := range page.CommonPrefixes {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), p), "/"))
		}
	}
	sort.Strings(out)
	return out, nil
}
