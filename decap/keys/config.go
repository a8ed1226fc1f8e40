package keys

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tapline/tapline/proto/stage"
)

// HTTPDefault is where `decap keys` serves /healthz and /metrics by default:
// loopback only, since it runs on a production host.
const HTTPDefault = "127.0.0.1:9105"

// Config is the configuration of `decap keys`: the common stage flags and
// its own. Build one with DefaultConfig (or Register and stage.Parse).
type Config struct {
	Common stage.Common

	// Path is the key log file to read, "-" for stdin (the positional
	// argument).
	Path string
	// Follow (--follow) keeps reading the file as it grows, across rename
	// rotation and truncation, until stopped.
	Follow bool
	// Source (--source) names where the keys come from: the last token of
	// the subject tapline.keys.<source>. Default: the host name.
	Source string
	// BatchBytes (--batch-bytes) bounds the lines of one message.
	BatchBytes int
	// BufferBytes (--buffer-bytes) bounds the lines read and not yet
	// stored (while NATS is away); at the bound reading pauses, the file
	// itself holding the rest.
	BufferBytes int
	// Poll (--poll) is how often a followed file is checked for new lines,
	// rotation and truncation.
	Poll time.Duration
	// RotateWait (--rotate-wait) is how long a rotated-away file is still
	// read after its last growth: a process keeps writing to the file it
	// opened until it reopens its key log.
	RotateWait time.Duration
	// AckTimeout (--ack-timeout) bounds one publish attempt.
	AckTimeout time.Duration
	// Timeout (--timeout): without --follow, give up (exit 1) when NATS
	// stores nothing for this long.
	Timeout time.Duration
	// DrainTimeout (--drain-timeout): on SIGTERM, how long to try to store
	// the lines already read.
	DrainTimeout time.Duration
	// Provision (--provision) creates or updates the TAPLINE_KEYS stream at
	// start. Off for a producer whose NATS user may only publish keys.
	Provision bool

	// Stdin, when not nil, is read for the path "-" instead of os.Stdin
	// (tests). Not a flag.
	Stdin io.Reader
}

// DefaultConfig returns a Config with every flag at its default.
func DefaultConfig() Config {
	var c Config
	fs := flag.NewFlagSet("decap keys", flag.ContinueOnError)
	c.Register(fs)
	return c
}

// Register adds the common flags (HTTP default HTTPDefault) and the key
// shipper's own to fs.
func (c *Config) Register(fs *flag.FlagSet) {
	c.Common.Register(fs, HTTPDefault)
	fs.BoolVar(&c.Follow, "follow", false, "keep reading the file as it grows, across rotation and truncation")
	fs.StringVar(&c.Source, "source", "", "source token of the subject tapline.keys.<source> (default: host name)")
	fs.IntVar(&c.BatchBytes, "batch-bytes", 64<<10, "max bytes of key lines in one message")
	fs.IntVar(&c.BufferBytes, "buffer-bytes", 2<<20, "max bytes of lines read and not yet stored")
	fs.DurationVar(&c.Poll, "poll", 100*time.Millisecond, "with --follow: how often the file is checked")
	fs.DurationVar(&c.RotateWait, "rotate-wait", 30*time.Second, "with --follow: how long a rotated-away file is still read after it last grew")
	fs.DurationVar(&c.AckTimeout, "ack-timeout", 5*time.Second, "timeout of one publish attempt")
	fs.DurationVar(&c.Timeout, "timeout", 15*time.Second, "without --follow: exit 1 when NATS stores nothing for this long")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM: how long to try to store the lines already read")
	fs.BoolVar(&c.Provision, "provision", true, "create or update the TAPLINE_KEYS stream at start (needs JetStream API permissions)")
}

// Validate checks the configuration and fills the defaults that depend on
// the host (Source).
func (c *Config) Validate() error {
	if c.Path == "" {
		return fmt.Errorf("a key log FILE (or - for stdin) is required")
	}
	if c.Source == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("--source is required: no host name (%v)", err)
		}
		c.Source = h
	}
	if c.BatchBytes < 1024 || c.BatchBytes > 1<<20 {
		return fmt.Errorf("--batch-bytes must be between 1024 and 1048576, got %d", c.BatchBytes)
	}
	if c.BufferBytes < 2*c.BatchBytes {
		return fmt.Errorf("--buffer-bytes must be at least twice --batch-bytes (%d), got %d", 2*c.BatchBytes, c.BufferBytes)
	}
	for name, d := range map[string]time.Duration{"--poll": c.Poll, "--ack-timeout": c.AckTimeout, "--timeout": c.Timeout, "--drain-timeout": c.DrainTimeout} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	if c.RotateWait < 0 {
		return fmt.Errorf("--rotate-wait must not be negative, got %s", c.RotateWait)
	}
	return nil
}
