// Package archive is Tapline's archive stage: it consumes the frames stream
// (TAPLINE_FRAMES) with its own durable consumer and keeps a compressed,
// queryable packet archive in S3 or a local directory.
//
// Frames are gathered per VNI into chunks: pcapng sections (one per
// seekable zstd frame of about 1 MiB) in the zstd seekable format, each
// with a JSON index object (time range, counts, flows, the stream
// sequences it holds and the time-to-offset map of its frames). Frames are
// acknowledged only once their chunk and index are durably stored; see
// README.md for the object layout and the exactly-once argument. The query
// side (ls, query) is in package archive/query.
package archive

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/stage"
)

// Defaults of the archive's own flags.
const (
	DefaultStore      = "./archive-data"
	DefaultChunkBytes = 64 << 20
	DefaultChunkAge   = 5 * time.Minute
	DefaultFrameBytes = 1 << 20
	DefaultMaxPending = 512 << 20
	DefaultConsumer   = "tapline-archive"
)

// StoreConfig says where the archive is: used by the stage and by the ls
// and query commands.
type StoreConfig struct {
	// Location is "s3://bucket/prefix" or a local directory.
	Location string
	S3       store.S3Options
}

// Register adds the store flags.
func (s *StoreConfig) Register(fs *flag.FlagSet) {
	fs.StringVar(&s.Location, "store", DefaultStore, "archive location: s3://bucket/prefix or a local directory")
	fs.StringVar(&s.S3.Endpoint, "s3-endpoint", "", "custom S3 endpoint URL (S3-compatible servers, e.g. http://127.0.0.1:7070)")
	fs.StringVar(&s.S3.Region, "s3-region", "", "S3 region (default: from the AWS configuration chain, else us-east-1)")
	fs.BoolVar(&s.S3.PathStyle, "s3-path-style", false, "address buckets by path (endpoint/bucket) instead of virtual host")
	fs.StringVar(&s.S3.SSE, "sse", "", "S3 server-side encryption on every write: AES256 or aws:kms (default: the bucket's default encryption)")
	fs.StringVar(&s.S3.SSEKMSKeyID, "sse-kms-key-id", "", "KMS key id, ARN or alias for --sse aws:kms (default: the AWS-managed key)")
	fs.Var((*sizeFlag)(&s.S3.PartSize), "s3-part-size", "multipart upload part size; larger objects are uploaded in parts (default 16MiB)")
}

// Validate checks the store flags.
func (s *StoreConfig) Validate() error {
	if s.Location == "" {
		return fmt.Errorf("--store is required (s3://bucket/prefix or a directory)")
	}
	if strings.Contains(s.Location, "://") && !strings.HasPrefix(s.Location, "s3://") {
		return fmt.Errorf("--store %q: only s3:// URLs and local directories are supported", s.Location)
	}
	if rest, ok := strings.CutPrefix(s.Location, "s3://"); ok && strings.Split(rest, "/")[0] == "" {
		return fmt.Errorf("--store %q: no bucket name", s.Location)
	}
	if err := s.S3.ValidateSSE(); err != nil {
		return err
	}
	if s.S3.SSE != "" && !strings.HasPrefix(s.Location, "s3://") {
		return fmt.Errorf("--sse applies to an s3:// --store only")
	}
	if s.S3.PartSize != 0 && s.S3.PartSize < 5<<20 {
		return fmt.Errorf("--s3-part-size must be at least 5MiB (an S3 limit)")
	}
	return nil
}

// Config configures the archive stage.
type Config struct {
	Common stage.Common
	Store  StoreConfig

	// ChunkBytes and ChunkAge rotate chunks: a chunk is stored when its
	// uncompressed pcapng reaches ChunkBytes or ChunkAge after its first
	// frame arrived, whichever comes first.
	ChunkBytes int64
	ChunkAge   time.Duration
	// FrameBytes is the uncompressed size of one seekable zstd frame: the
	// unit a query fetches.
	FrameBytes int64
	// Level is the zstd level: fastest, default, better or best.
	Level string
	// MaxPending bounds the bytes of frame batches received and not yet
	// acknowledged (in open chunks and uploads); MaxPendingBatches bounds
	// their number (the consumer's MaxAckPending).
	MaxPending        int64
	MaxPendingBatches int
	// Consumer is the durable consumer name on TAPLINE_FRAMES.
	Consumer string
	// AckWait is the consumer's ack wait; unacknowledged batches are kept
	// alive with progress acks meanwhile, and redelivered this long after a
	// crash.
	AckWait time.Duration
	// Fetch is how many batches one pull request asks for.
	Fetch int
	// Uploaders is the number of chunks stored concurrently.
	Uploaders int
	// UploadTimeout bounds one attempt to store a chunk.
	UploadTimeout time.Duration
	// DrainTimeout bounds how long a stop waits to store open chunks; what
	// is not stored then is redelivered later (never lost).
	DrainTimeout time.Duration
	// StoreWait bounds the retries of the first contact with the store
	// (--store-wait; 0: until stopped).
	StoreWait time.Duration
	// MaxFlows bounds the flows listed in one index.
	MaxFlows int
	// MaxVNIs bounds the distinct VNIs archived (each has its own chunks,
	// so its own objects): batches of VNIs beyond the first MaxVNIs seen
	// are acknowledged without being stored, counted and reported (see
	// vnicap.go). 0: DefaultMaxVNIs.
	MaxVNIs int

	// Keys (--keys) keeps the TLS key log lines of TAPLINE_KEYS with the
	// archive (objects under keys/, see keys.go), for `archive query
	// --with-secrets`. Off by default: they are secrets.
	Keys bool
	// KeysConsumer is the durable consumer name on TAPLINE_KEYS.
	KeysConsumer string
	// KeysFlush is how long key lines are gathered before they are stored
	// (and acknowledged) as one object.
	KeysFlush time.Duration

	// testDropAck, when set, is asked after a chunk is stored; true means
	// "forget this chunk's batches without acknowledging them", as a crash
	// between store and ack would (tests only).
	testDropAck func(key string) bool
}

// Register adds the common flags and the archive's own to fs.
func (c *Config) Register(fs *flag.FlagSet) {
	c.Common.Register(fs, ":9104")
	c.Store.Register(fs)
	c.ChunkBytes, c.ChunkAge, c.FrameBytes = DefaultChunkBytes, DefaultChunkAge, DefaultFrameBytes
	c.MaxPending = DefaultMaxPending
	fs.Var((*sizeFlag)(&c.ChunkBytes), "chunk-bytes", "rotate a chunk when its uncompressed pcapng reaches this size (e.g. 64MiB)")
	fs.DurationVar(&c.ChunkAge, "chunk-age", DefaultChunkAge, "rotate a chunk this long after its first frame arrived")
	fs.Var((*sizeFlag)(&c.FrameBytes), "frame-bytes", "uncompressed size of one seekable zstd frame, the unit a query fetches")
	fs.StringVar(&c.Level, "level", "fastest", "zstd level: fastest, default, better or best")
	fs.Var((*sizeFlag)(&c.MaxPending), "max-pending", "max bytes of frame batches received but not yet stored and acknowledged")
	fs.IntVar(&c.MaxPendingBatches, "max-pending-batches", 20000, "max frame batches received but not yet acknowledged (the consumer's MaxAckPending)")
	fs.StringVar(&c.Consumer, "consumer", DefaultConsumer, "durable consumer name on TAPLINE_FRAMES")
	fs.DurationVar(&c.AckWait, "ack-wait", time.Minute, "consumer ack wait: how soon batches of a crashed archive are redelivered")
	fs.IntVar(&c.Fetch, "fetch", 64, "batches buffered ahead by the pull consumer (bounds client-side prefetch: at most this many batches of at most ~1MiB)")
	fs.IntVar(&c.Uploaders, "uploaders", 2, "chunks stored concurrently")
	fs.DurationVar(&c.UploadTimeout, "upload-timeout", 2*time.Minute, "timeout of one attempt to store a chunk")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "on stop, how long to try to store open chunks")
	fs.DurationVar(&c.StoreWait, "store-wait", DefaultStoreWait, "at start, how long to retry reaching the store before exiting with the cause (0: until stopped)")
	fs.IntVar(&c.MaxFlows, "max-flows", 10000, "max flows listed in one chunk index")
	fs.BoolVar(&c.Keys, "keys", false, "also keep the TLS key log lines of TAPLINE_KEYS with the archive (secrets: for archive query --with-secrets)")
	fs.StringVar(&c.KeysConsumer, "keys-consumer", DefaultConsumer+"-keys", "durable consumer name on TAPLINE_KEYS (with --keys)")
	fs.DurationVar(&c.KeysFlush, "keys-flush", 10*time.Second, "with --keys: how long key lines are gathered into one stored object")
	fs.IntVar(&c.MaxVNIs, "max-vnis", DefaultMaxVNIs, "distinct VNIs archived; batches of further VNIs are not stored, counted (tapline_archive_vni_overflow_*) and reported on tapline.events.archive.drops")
}

// Validate checks the configuration and returns one clear error.
func (c *Config) Validate() error {
	if err := c.Store.Validate(); err != nil {
		return err
	}
	switch {
	case c.FrameBytes < 4<<10 || c.FrameBytes > 16<<20:
		return fmt.Errorf("--frame-bytes must be between 4KiB and 16MiB, got %d", c.FrameBytes)
	case c.ChunkBytes < c.FrameBytes:
		return fmt.Errorf("--chunk-bytes (%d) must be at least --frame-bytes (%d)", c.ChunkBytes, c.FrameBytes)
	case c.ChunkBytes > 4<<30:
		return fmt.Errorf("--chunk-bytes must be at most 4GiB")
	case c.ChunkAge < time.Second:
		return fmt.Errorf("--chunk-age must be at least 1s, got %s", c.ChunkAge)
	case c.MaxPending < 2*c.FrameBytes:
		return fmt.Errorf("--max-pending must be at least twice --frame-bytes")
	case c.MaxPendingBatches < 16:
		return fmt.Errorf("--max-pending-batches must be at least 16")
	case c.Consumer == "" || strings.ContainsAny(c.Consumer, ".*> \t"):
		return fmt.Errorf("--consumer %q is not a valid consumer name", c.Consumer)
	case c.AckWait < time.Second:
		return fmt.Errorf("--ack-wait must be at least 1s")
	case c.Fetch < 1 || c.Fetch > 10000:
		return fmt.Errorf("--fetch must be between 1 and 10000")
	case c.Uploaders < 1 || c.Uploaders > 64:
		return fmt.Errorf("--uploaders must be between 1 and 64")
	case c.UploadTimeout < time.Second:
		return fmt.Errorf("--upload-timeout must be at least 1s")
	case c.MaxFlows < 0:
		return fmt.Errorf("--max-flows must not be negative")
	case c.Keys && (c.KeysConsumer == "" || strings.ContainsAny(c.KeysConsumer, ".*> \t")):
		return fmt.Errorf("--keys-consumer %q is not a valid consumer name", c.KeysConsumer)
	case c.Keys && c.KeysFlush < 100*time.Millisecond:
		return fmt.Errorf("--keys-flush must be at least 100ms, got %s", c.KeysFlush)
	case c.MaxVNIs < 0 || c.MaxVNIs > 1<<24:
		return fmt.Errorf("--max-vnis must be between 1 and 16777216, got %d", c.MaxVNIs)
	}
	if _, err := ParseLevel(c.Level); err != nil {
		return err
	}
	return nil
}

// ParseLevel maps a level name to a zstd encoder level.
func ParseLevel(s string) (zstd.EncoderLevel, error) {
	switch s {
	case "fastest", "":
		return zstd.SpeedFastest, nil
	case "default":
		return zstd.SpeedDefault, nil
	case "better":
		return zstd.SpeedBetterCompression, nil
	case "best":
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("--level must be fastest, default, better or best, got %q", s)
}

// sizeFlag is a byte size flag (stage.Size: a number with an optional
// KiB, MiB, GiB suffix).
type sizeFlag = stage.Size

// ParseSize parses a byte size such as 1048576, 64MiB or 1G (stage.ParseSize).
func ParseSize(v string) (int64, error) { return stage.ParseSize(v) }

// FormatSize writes n with the largest exact binary unit (stage.FormatSize).
func FormatSize(n int64) string { return stage.FormatSize(n) }
