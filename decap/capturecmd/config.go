// Package capturecmd is `decap capture`: capture on the production host
// itself (AF_PACKET on one interface, a tcpdump filter compiled to BPF and
// applied in the kernel), batch the frames as decap's other intakes do,
// keep the batches in a bounded local spool on disk and upload them to the
// central JetStream (TAPLINE_FRAMES) at a capped rate. A burst is delayed,
// never dropped: only a full spool loses frames, and then as counted,
// reported loss. See decap/README.md, section "decap capture".
package capturecmd

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"golang.org/x/net/bpf"

	"github.com/tapline/tapline/decap/afpacket"
	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/decap/pcapfilter"
	"github.com/tapline/tapline/decap/spool"
	"github.com/tapline/tapline/proto/stage"
)

// Defaults of the resource caps.
const (
	DefaultUploadRate = 12_500_000 // bytes/s: 100 Mbit/s
	DefaultMaxCPU     = 1
	DefaultMaxMemory  = 256 << 20
	DefaultVNI        = 1
)

// Config is `decap capture`'s configuration.
type Config struct {
	Common stage.Common

	Iface     string // --iface
	Filter    string // --filter (tcpdump syntax)
	VNI       uint   // --vni: the VNI of the published frames
	Direction string // --direction: both, in, out

	Sockets   int // --sockets: fanout sockets
	RingBytes int // --ring-bytes: each socket's kernel receive queue
	ReadBatch int // --read-batch: frames per recvmmsg
	Snaplen   int // --snaplen

	SpoolDir   string // --spool-dir
	SpoolBytes int64  // --spool-bytes
	UploadRate int64  // --upload-rate: bytes/s (0: no cap)
	MaxCPU     int    // --max-cpu: GOMAXPROCS
	MaxMemory  int64  // --max-memory: Go memory limit

	BatchBytes     int           // --batch-bytes
	BatchDelay     time.Duration // --batch-delay
	AckTimeout     time.Duration // --ack-timeout
	EventsInterval time.Duration // --events-interval
	DrainTimeout   time.Duration // --drain-timeout
	// StopRead (--stop-read) bounds how long the sockets' queues are read
	// at shutdown, new frames refused; what is left is counted.
	StopRead time.Duration

	prog []bpf.RawInstruction
}

// Register adds the common flags (HTTP default :9106) and capture's own.
func (c *Config) Register(fs *flag.FlagSet) {
	c.Common.Register(fs, ":9106")
	fs.StringVar(&c.Iface, "iface", "", "network interface to capture on (required)")
	fs.StringVar(&c.Filter, "filter", "", "tcpdump filter applied in the kernel, e.g. 'tcp port 443 and not host 10.0.0.5' (empty: every frame; exclude the upload to NATS)")
	fs.UintVar(&c.VNI, "vni", DefaultVNI, "VNI the captured frames are published under (tapline.frames.<vni>.<shard>)")
	fs.StringVar(&c.Direction, "direction", "both", "frames to capture: both, in (received by the host) or out (sent by it)")
	fs.IntVar(&c.Sockets, "sockets", afpacket.DefaultSockets, "AF_PACKET sockets in the fanout group (readers)")
	fs.IntVar(&c.RingBytes, "ring-bytes", afpacket.DefaultRcvBuf, "kernel receive queue of each socket in bytes: absorbs bursts while the reader is busy")
	fs.IntVar(&c.ReadBatch, "read-batch", afpacket.DefaultBatch, "frames read per recvmmsg call")
	fs.IntVar(&c.Snaplen, "snaplen", afpacket.DefaultSnaplen, "largest frame kept whole (offloaded segments can reach 64 KiB and more)")
	fs.StringVar(&c.SpoolDir, "spool-dir", "/var/lib/tapline/spool", "directory of the local spool (kept across restarts)")
	fs.Int64Var(&c.SpoolBytes, "spool-bytes", spool.DefaultMaxBytes, "bytes of frame batches the spool holds at most before frames are dropped and counted")
	fs.Int64Var(&c.UploadRate, "upload-rate", DefaultUploadRate, "upload cap to NATS in bytes per second (0: none); keep it well below the host's link")
	fs.IntVar(&c.MaxCPU, "max-cpu", DefaultMaxCPU, "CPUs the capture may use (GOMAXPROCS)")
	fs.Int64Var(&c.MaxMemory, "max-memory", DefaultMaxMemory, "memory limit of the Go runtime in bytes (GOMEMLIMIT); buffers are sized within it")
	fs.IntVar(&c.BatchBytes, "batch-bytes", batch.DefaultMaxBytes, "frame batch size at which a batch is spooled")
	fs.DurationVar(&c.BatchDelay, "batch-delay", batch.DefaultDelay, "longest a frame waits in a batch")
	fs.DurationVar(&c.AckTimeout, "ack-timeout", 10*time.Second, "wait for a JetStream ack before sending a batch again")
	fs.DurationVar(&c.EventsInterval, "events-interval", 10*time.Second, "how often drop reports are published on tapline.events.decap.drops (when drops grew)")
	fs.DurationVar(&c.StopRead, "stop-read", afpacket.DefaultStopRead, "at shutdown, the sockets refuse new frames and their queues are read and spooled for at most this long; what is still queued then is dropped and counted (tapline_capture_stop_dropped_total)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "at shutdown, how long to keep uploading the spool (what is left stays spooled)")
}

// Validate checks the configuration, compiles the filter, and returns one
// clear error.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	switch {
	case c.Iface == "":
		return errors.New("--iface is required")
	case c.VNI > 1<<24-1:
		return fmt.Errorf("--vni must be below 2^24, got %d", c.VNI)
	case c.Direction != "both" && c.Direction != "in" && c.Direction != "out":
		return fmt.Errorf("--direction must be both, in or out, got %q", c.Direction)
	case c.Sockets < 1 || c.Sockets > 64:
		return fmt.Errorf("--sockets must be 1..64, got %d", c.Sockets)
	case c.RingBytes < 1<<16:
		return fmt.Errorf("--ring-bytes must be at least 65536, got %d", c.RingBytes)
	case c.ReadBatch < 1 || c.ReadBatch > 1024:
		return fmt.Errorf("--read-batch must be 1..1024, got %d", c.ReadBatch)
	case c.Snaplen < 1518 || c.Snaplen > 1<<20:
		return fmt.Errorf("--snaplen must be 1518..1048576, got %d", c.Snaplen)
	case c.SpoolDir == "":
		return errors.New("--spool-dir is required")
	case c.SpoolBytes < 1<<20:
		return fmt.Errorf("--spool-bytes must be at least 1 MiB, got %d", c.SpoolBytes)
	case c.UploadRate < 0:
		return fmt.Errorf("--upload-rate must not be negative")
	case c.UploadRate > 0 && c.UploadRate < 64<<10:
		return fmt.Errorf("--upload-rate below 64 KiB/s (%d) cannot carry a batch a second", c.UploadRate)
	case c.MaxCPU < 1:
		return fmt.Errorf("--max-cpu must be at least 1, got %d", c.MaxCPU)
	case c.BatchBytes < 1<<10 || c.BatchBytes > 1<<20:
		return fmt.Errorf("--batch-bytes must be 1 KiB..1 MiB, got %d", c.BatchBytes)
	case c.StopRead <= 0:
		return errors.New("--stop-read must be positive")
	case c.BatchDelay <= 0 || c.AckTimeout <= 0 || c.EventsInterval <= 0 || c.DrainTimeout < 0:
		return errors.New("--batch-delay, --ack-timeout and --events-interval must be positive, --drain-timeout not negative")
	}
	// The readers' buffers (sockets × batch × snaplen, resident as frames
	// fill them), the batches in the making, the NATS client's reconnect
	// buffer (64 MiB) and the upload window must fit the memory limit with
	// room for the runtime.
	if need := int64(c.Sockets*c.ReadBatch*c.Snaplen) + 4*int64(c.BatchBytes)*int64(c.Common.Shards) + 64<<20 + 32<<20; c.MaxMemory < need {
		return fmt.Errorf("--max-memory %d is below what --sockets × --read-batch × --snaplen and the batches need (%d)", c.MaxMemory, need)
	}
	prog, err := pcapfilter.Assemble(c.kernelFilter(), uint32(c.Snaplen))
	if err != nil {
		return fmt.Errorf("--filter: %w", err)
	}
	c.prog = prog
	return nil
}

// kernelFilter is --filter with --direction applied.
func (c *Config) kernelFilter() string {
	dir := map[string]string{"in": "inbound", "out": "outbound"}[c.Direction]
	switch {
	case dir == "":
		return c.Filter
	case c.Filter == "":
		return dir
	}
	return dir + " and (" + c.Filter + ")"
}
