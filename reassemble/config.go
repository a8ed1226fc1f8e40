package reassemble

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/reassemble/message"
	"github.com/tapline/tapline/reassemble/tcp"
)

// DecoderFunc creates the message decoder of one connection. The default
// is message.New.
type DecoderFunc func(meta message.Meta, out message.Output, limits message.Limits) message.Decoder

// Config configures the reassembler. Register binds it to flags; every flag
// also reads TAPLINE_<FLAG> from the environment.
type Config struct {
	Common stage.Common

	// InstanceID names this instance: its consumers' client name and the
	// key of its shard preferences. Default: host name and process id.
	InstanceID string
	// Shards lists the shards this instance consumes (empty: all of
	// 0..Common.Shards-1).
	ShardList stage.ListFlag

	MaxMemory        int64         // bytes charged for all connections and what they hold, over all shards of this instance (see memory.go)
	MaxConnections   int           // connections tracked per shard
	MaxBufferedBytes int64         // out-of-order bytes held per shard
	ReorderWindow    int           // bytes held ahead of a hole in one direction
	IdleTimeout      time.Duration // capture-time idle timeout of a connection
	MaxSeqJump       int64         // bytes in flight assumed when a connection's window is unknown (sequence jump rule)
	MaxFlowRate      int64         // fastest one direction of a connection sends, bytes per second (sequence jump rule)

	// KeepCredentials stores production's credential headers and query
	// parameters in open events; off, they are removed (see credentials.go).
	KeepCredentials bool

	MaxHeader  int   // decoder: largest HTTP upgrade header block
	MaxMessage int64 // decoder: largest message emitted before it is cut
	// MaxInflation is the largest inflated:compressed ratio of a
	// compressed message past message.InflationFree bytes (0: no limit).
	MaxInflation int

	MaxInflight      int           // publishes awaiting their acknowledgement, per shard
	MaxInflightBytes int64         // bytes of those publishes, per shard
	MaxInflightConn  int           // chunks of one connection's message sent since its oldest not acknowledged
	AckWait          time.Duration // consumer ack wait (held batches are kept alive with in-progress acks)
	MaxHeldBatches   int           // frame batches held unacknowledged per shard so open connections can be rebuilt after a failover
	PinnedTTL        time.Duration // how long the server keeps a silent owner pinned before another instance takes over
	TakeoverSpread   time.Duration // start delay spread by which instances prefer different shards
	Consumer         string        // durable consumer name prefix

	TLS          bool          // detect TLS and decrypt it with the secrets of TAPLINE_KEYS
	TLSHoldBytes int64         // ciphertext held per connection waiting for its keys
	TLSHoldTime  time.Duration // how long ciphertext waits for its keys
	TLSMaxKeys   int           // client randoms whose secrets are kept
	TLSKeyMaxAge time.Duration // how long a secret is kept after it arrived

	// NewDecoder overrides the message decoder (tests); nil means
	// message.New.
	NewDecoder DecoderFunc

	crashOnStop bool          // tests: Run's end imitates a crash (no hand-over)
	fetchDelay  time.Duration // tests: a pause before every fetch (a slow, busy client)
}

// Register adds the common flags and the reassembler's own to fs.
func (c *Config) Register(fs *flag.FlagSet) {
	c.Common.Register(fs, ":9102")
	host, _ := os.Hostname()
	fs.StringVar(&c.InstanceID, "instance-id", host+"-"+strconv.Itoa(os.Getpid()), "name of this instance (consumer client name, shard preference key)")
	fs.Var(&c.ShardList, "shard", "shards to consume, comma-separated or repeated (default: all)")
	stage.SetEnvName(fs, "shard", "TAPLINE_REASSEMBLE_SHARD", "TAPLINE_SHARD")
	stage.SizeVar(fs, &c.MaxMemory, "max-memory", 1<<30, "bytes for all connections and what they hold (table entries, out-of-order and held bytes, header buffers, inflater windows, hunt buffers, partial messages), split evenly over this instance's shards; past it the least recently active connection is closed (reason memory)")
	fs.IntVar(&c.MaxConnections, "max-connections", 100000, "connections tracked per shard; past it the least recently active is closed (reason evicted)")
	stage.SizeVar(fs, &c.MaxBufferedBytes, "max-buffered-bytes", 256<<20, "out-of-order bytes held per shard; past it the oldest hole is declared lost")
	stage.IntSizeVar(fs, &c.ReorderWindow, "reorder-window", 1<<20, "bytes held ahead of a hole in one direction before the hole is declared lost")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", tcp.DefaultIdleTimeout, "close a connection after this long without packets (capture time); --max-memory evicts the least recently active earlier under pressure")
	stage.SizeVar(fs, &c.MaxSeqJump, "max-seq-jump", tcp.DefaultMaxSeqJump, "bytes a direction may have in flight when its window is not known from the handshake; a sequence jump beyond what the window and --max-flow-rate allow closes the connection (reason seq_jump) instead of being reported as loss")
	stage.SizeVar(fs, &c.MaxFlowRate, "max-flow-rate", tcp.DefaultMaxFlowRate, "fastest one direction of a connection can send, in bytes per second (sequence jump rule)")
	fs.BoolVar(&c.KeepCredentials, "keep-credentials", false, "store production's Authorization, Cookie and credential-like headers and query parameters (X-Api-Key, access_token, … and --redact-names) in open events on the messages stream, for replay --forward-credentials; off, they are removed and only their names are kept (protect the stream with NATS permissions before turning this on)")
	stage.IntSizeVar(fs, &c.MaxHeader, "max-header", 64<<10, "largest HTTP upgrade header block held by the decoder")
	stage.SizeVar(fs, &c.MaxMessage, "max-message", 1<<30, "largest message emitted; longer ones are cut and flagged incomplete")
	fs.IntVar(&c.MaxInflation, "max-inflation-ratio", 200, "decompression amplification bound: a permessage-deflate message that inflates past 1 MiB and past this many times the compressed bytes it took is cut there and flagged incomplete (reason inflation-limit); 0: no limit")
	fs.IntVar(&c.MaxInflight, "max-inflight", 256, "publishes awaiting acknowledgement per shard")
	stage.SizeVar(fs, &c.MaxInflightBytes, "max-inflight-bytes", 16<<20, "bytes of publishes awaiting acknowledgement per shard")
	fs.IntVar(&c.MaxInflightConn, "max-inflight-conn", 16, fmt.Sprintf("chunks of one connection's message sent since its oldest not acknowledged (below %d: what a reader puts back in order); its next message or event waits until its entries are stored", proto.ReorderChunks))
	fs.DurationVar(&c.AckWait, "ack-wait", 30*time.Second, "frames consumer ack wait")
	fs.IntVar(&c.MaxHeldBatches, "max-held-batches", 4096, "frame batches per shard kept unacknowledged so open connections can be rebuilt after a failover")
	fs.DurationVar(&c.PinnedTTL, "pinned-ttl", 15*time.Second, "a shard owner silent for this long loses the shard to another instance")
	fs.DurationVar(&c.TakeoverSpread, "takeover-spread", 2*time.Second, "start delay spread by which instances prefer different shards")
	fs.StringVar(&c.Consumer, "consumer", "reassemble", "durable consumer name prefix (one consumer per shard: <prefix>-<shard>)")
	fs.BoolVar(&c.TLS, "tls", true, "detect TLS connections (a ClientHello on any port) and decrypt them with the key log lines of TAPLINE_KEYS")
	stage.SizeVar(fs, &c.TLSHoldBytes, "tls-hold-bytes", 4<<20, "ciphertext held per TLS connection while its keys have not arrived (counted in --max-memory); past it the oldest records are given up as undecryptable")
	fs.DurationVar(&c.TLSHoldTime, "tls-hold-time", 30*time.Second, "how long TLS records wait for their keys before they are given up as undecryptable")
	fs.IntVar(&c.TLSMaxKeys, "tls-max-keys", 200000, "TLS connections (client randoms) whose secrets are kept; the oldest are forgotten first")
	fs.DurationVar(&c.TLSKeyMaxAge, "tls-key-max-age", 24*time.Hour, "how long a TLS secret is kept after it arrived")
}

// Validate checks the configuration and returns one clear error.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if _, err := c.shards(); err != nil {
		return err
	}
	switch {
	case c.InstanceID == "":
		return fmt.Errorf("--instance-id must not be empty")
	case c.MaxMemory < int64(c.shardCount())*minShardMemory:
		return fmt.Errorf("--max-memory must be at least %d per shard consumed (%d shards), got %d", minShardMemory, c.shardCount(), c.MaxMemory)
	case c.MaxConnections < 1:
		return fmt.Errorf("--max-connections must be at least 1, got %d", c.MaxConnections)
	case c.MaxBufferedBytes < 1<<16:
		return fmt.Errorf("--max-buffered-bytes must be at least 65536, got %d", c.MaxBufferedBytes)
	case c.ReorderWindow < 1<<12 || int64(c.ReorderWindow) > c.MaxBufferedBytes:
		return fmt.Errorf("--reorder-window must be between 4096 and --max-buffered-bytes, got %d", c.ReorderWindow)
	case c.IdleTimeout < time.Second:
		return fmt.Errorf("--idle-timeout must be at least 1s, got %s", c.IdleTimeout)
	case c.MaxSeqJump < 1<<16 || c.MaxSeqJump > 1<<30:
		return fmt.Errorf("--max-seq-jump must be between 65536 and 1073741824 (the largest TCP window), got %d", c.MaxSeqJump)
	case c.MaxFlowRate < 1<<20:
		return fmt.Errorf("--max-flow-rate must be at least 1048576 bytes per second, got %d", c.MaxFlowRate)
	case c.MaxHeader < 1024:
		return fmt.Errorf("--max-header must be at least 1024, got %d", c.MaxHeader)
	case c.MaxMessage < 1:
		return fmt.Errorf("--max-message must be positive, got %d", c.MaxMessage)
	case c.MaxInflation < 0:
		return fmt.Errorf("--max-inflation-ratio must not be negative, got %d", c.MaxInflation)
	case c.MaxInflight < 1:
		return fmt.Errorf("--max-inflight must be at least 1, got %d", c.MaxInflight)
	case c.MaxInflightConn < 1 || c.MaxInflightConn >= proto.ReorderChunks:
		return fmt.Errorf("--max-inflight-conn must be from 1 to %d (a reader puts fewer than %d chunks back in order), got %d", proto.ReorderChunks-1, proto.ReorderChunks, c.MaxInflightConn)
	case c.MaxInflightBytes < proto.MaxChunk:
		return fmt.Errorf("--max-inflight-bytes must be at least %d (one chunk), got %d", proto.MaxChunk, c.MaxInflightBytes)
	case c.AckWait < time.Second:
		return fmt.Errorf("--ack-wait must be at least 1s, got %s", c.AckWait)
	case c.MaxHeldBatches < 0:
		return fmt.Errorf("--max-held-batches must not be negative, got %d", c.MaxHeldBatches)
	case c.PinnedTTL < time.Second:
		return fmt.Errorf("--pinned-ttl must be at least 1s, got %s", c.PinnedTTL)
	case c.TakeoverSpread < 0:
		return fmt.Errorf("--takeover-spread must not be negative, got %s", c.TakeoverSpread)
	case c.Consumer == "":
		return fmt.Errorf("--consumer must not be empty")
	case c.TLS && c.TLSHoldBytes < 1<<16:
		return fmt.Errorf("--tls-hold-bytes must be at least 65536, got %d", c.TLSHoldBytes)
	case c.TLS && c.TLSHoldTime < time.Second:
		return fmt.Errorf("--tls-hold-time must be at least 1s, got %s", c.TLSHoldTime)
	case c.TLS && c.TLSMaxKeys < 1:
		return fmt.Errorf("--tls-max-keys must be at least 1, got %d", c.TLSMaxKeys)
	case c.TLS && c.TLSKeyMaxAge < time.Minute:
		return fmt.Errorf("--tls-key-max-age must be at least 1m, got %s", c.TLSKeyMaxAge)
	}
	return nil
}

// shards returns the shards to consume.
func (c *Config) shards() ([]int, error) {
	if len(c.ShardList) == 0 {
		all := make([]int, c.Common.Shards)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	seen := map[int]bool{}
	var out []int
	for _, s := range c.ShardList {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n >= c.Common.Shards {
			return nil, fmt.Errorf("--shard %q: want a number between 0 and %d", s, c.Common.Shards-1)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}
