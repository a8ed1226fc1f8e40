package decap

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/tapline/tapline/decap/batch"
	"github.com/tapline/tapline/decap/decode"
	"github.com/tapline/tapline/decap/publish"
	"github.com/tapline/tapline/decap/shard"
	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto/stage"
)

// Config is decap's configuration: the common stage flags and decap's own.
// Build one with DefaultConfig (or Register and stage.Parse); Validate
// checks it, and Run validates it again.
type Config struct {
	Common stage.Common

	// Network intake.
	VXLANPort   int            // --vxlan-port
	GENEVEPort  int            // --geneve-port
	ListenAddr  stage.ListFlag // --listen-addr: IP addresses to listen on (empty: all, IPv4 and IPv6)
	Sockets     int            // --sockets: SO_REUSEPORT sockets per address and port
	RcvBuf      int            // --rcvbuf: socket receive buffer in bytes
	ReadBatch   int            // --read-batch: datagrams per recvmmsg
	MaxDatagram int            // --max-datagram: largest datagram read whole
	// StopRead (--stop-read) bounds how long the sockets' queues are read
	// at shutdown, new datagrams refused; what is left is counted.
	StopRead time.Duration

	// Read is a pcap/pcapng file to read instead of the network (--read).
	Read string

	// Filters.
	VNI      stage.ListFlag // --vni: allow list of VNIs (empty: all)
	AllowSrc stage.ListFlag // --allow-src: allow list of outer source CIDRs (empty: DefaultAllowSrc)
	// AllowAnySource (--allow-any-source) turns the outer source filter
	// off: any host that can reach the ports may inject traffic.
	AllowAnySource bool
	// MaxVNIs (--max-vnis) caps the distinct VNIs tracked: frames of VNIs
	// beyond the first MaxVNIs seen are dropped and counted.
	MaxVNIs int

	// Batching and publishing.
	BatchBytes  int           // --batch-bytes
	BatchDelay  time.Duration // --batch-delay
	MaxInflight int           // --max-inflight
	// MaxInflightShardBytes (--max-inflight-shard-bytes) bounds one
	// shard's bytes awaiting an ack (see publish.Config).
	MaxInflightShardBytes int64
	BufferBytes           int64         // --buffer-bytes
	ReadAheadBytes        int64         // --read-ahead-bytes: the buffer of --read (it waits for room, never drops)
	AckTimeout            time.Duration // --ack-timeout
	DrainTimeout          time.Duration // --drain-timeout
	EventsInterval        time.Duration // --events-interval
	VerifyChecksums       bool          // --verify-checksums
	FragTable             int           // --frag-table

	// Intake, when not nil, is an already opened intake decap reads from
	// instead of opening sockets (tests open sockets inside a network
	// namespace). Not a flag. The ports of its sockets must be VXLANPort
	// and GENEVEPort (set those to the ports it opened). Run reads it until
	// ctx ends, which stops and closes it (with its own
	// udpin.Config.StopRead, not StopRead).
	Intake *udpin.Intake

	vnis     []uint32
	prefixes []netip.Prefix
}

// DefaultConfig returns a Config with every flag at its default, as if the
// command line were empty (NATS at nats.DefaultURL).
func DefaultConfig() Config {
	var c Config
	fs := flag.NewFlagSet("decap", flag.ContinueOnError)
	c.Register(fs)
	return c
}

// Register adds the common flags (HTTP default :9101) and decap's own.
func (c *Config) Register(fs *flag.FlagSet) {
	c.Common.Register(fs, ":9101")
	fs.IntVar(&c.VXLANPort, "vxlan-port", 4789, "UDP port receiving VXLAN (0: off)")
	fs.IntVar(&c.GENEVEPort, "geneve-port", 6081, "UDP port receiving GENEVE (0: off)")
	fs.Var(&c.ListenAddr, "listen-addr", "IP addresses to listen on, comma-separated (default: all IPv4 and IPv6 addresses)")
	fs.IntVar(&c.Sockets, "sockets", 0, "SO_REUSEPORT sockets (reader goroutines) per address and port (0: one per CPU)")
	stage.IntSizeVar(fs, &c.RcvBuf, "rcvbuf", 64<<20, "socket receive buffer in bytes (SO_RCVBUFFORCE when permitted)")
	fs.IntVar(&c.ReadBatch, "read-batch", 64, "datagrams read per recvmmsg call")
	stage.IntSizeVar(fs, &c.MaxDatagram, "max-datagram", 65535, "largest datagram read whole, in bytes")
	fs.DurationVar(&c.StopRead, "stop-read", udpin.DefaultStopRead, "at shutdown, the sockets refuse new datagrams and their queues are read and published for at most this long; what is still queued then is dropped and counted (tapline_decap_udp_stop_dropped_total)")
	fs.StringVar(&c.Read, "read", "", "read this pcap/pcapng file (encapsulated or plain) instead of the network, publish it, drain and exit")
	fs.Var(&c.VNI, "vni", "allow list of VNIs, comma-separated (default: all)")
	stage.SetEnvName(fs, "vni", "TAPLINE_DECAP_VNI", "TAPLINE_VNI")
	fs.Var(&c.AllowSrc, "allow-src", "allow list of outer source CIDRs or addresses, comma-separated; replaces the default (private and loopback addresses: "+DefaultAllowSrcString()+")")
	fs.BoolVar(&c.AllowAnySource, "allow-any-source", false, "accept VXLAN/GENEVE from any outer source (anyone who can reach the ports can inject traffic; only behind a security group that admits the mirror sources alone)")
	fs.IntVar(&c.MaxVNIs, "max-vnis", DefaultMaxVNIs, "distinct VNIs tracked (metrics, shards, archive chunks); frames of further VNIs are dropped and counted (reason vni_cap)")
	stage.IntSizeVar(fs, &c.BatchBytes, "batch-bytes", batch.DefaultMaxBytes, "frame batch size at which a batch is published")
	fs.DurationVar(&c.BatchDelay, "batch-delay", batch.DefaultDelay, "longest a frame waits in a batch")
	fs.IntVar(&c.MaxInflight, "max-inflight", publish.DefaultMaxInflight, "batches awaiting a JetStream ack at most")
	stage.SizeVar(fs, &c.MaxInflightShardBytes, "max-inflight-shard-bytes", publish.DefaultMaxInflightShardBytes, "bytes of one shard's batches awaiting a JetStream ack at most; keep it below reassemble's --reorder-window, so a batch resent after a lost ack lands within it")
	stage.SizeVar(fs, &c.BufferBytes, "buffer-bytes", publish.DefaultBufferBytes, "bytes of batches buffered while JetStream is slow or down; past it batches are dropped and counted")
	stage.SizeVar(fs, &c.ReadAheadBytes, "read-ahead-bytes", DefaultReadAheadBytes, "with --read: bytes of batches read ahead of JetStream's acks (the buffer of a file, which waits for room instead of dropping; at most --buffer-bytes)")
	fs.DurationVar(&c.AckTimeout, "ack-timeout", publish.DefaultAckTimeout, "wait for a JetStream ack before retrying a batch")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "at shutdown, how long to keep publishing buffered batches")
	fs.DurationVar(&c.EventsInterval, "events-interval", 10*time.Second, "how often drop reports are published on tapline.events.decap.drops (when drops grew)")
	fs.BoolVar(&c.VerifyChecksums, "verify-checksums", true, "verify inner IPv4/TCP/UDP checksums and count bad ones (never drops)")
	fs.IntVar(&c.FragTable, "frag-table", shard.DefaultFragTable, "fragmented datagrams remembered to keep their fragments on one shard")
}

// DefaultReadAheadBytes is --read-ahead-bytes: a file waits for room, so
// a larger buffer only holds more of it in memory (with 256 MiB, decap
// --read peaked at 116-320 MB RSS; issue 16).
const DefaultReadAheadBytes = 8 << 20

// Validate checks the configuration and returns one clear error.
func (c *Config) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"--vxlan-port", c.VXLANPort}, {"--geneve-port", c.GENEVEPort}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("%s must be a UDP port (0-65535), got %d", p.name, p.v)
		}
	}
	if c.VXLANPort != 0 && c.VXLANPort == c.GENEVEPort {
		return errors.New("--vxlan-port and --geneve-port must differ")
	}
	if c.Read == "" && c.Intake == nil && c.VXLANPort == 0 && c.GENEVEPort == 0 {
		return errors.New("nothing to read: both --vxlan-port and --geneve-port are 0 and no --read file")
	}
	for _, a := range c.ListenAddr {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("--listen-addr %q is not an IP address", a)
		}
	}
	c.vnis = c.vnis[:0]
	for _, v := range c.VNI {
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil || n > 0xffffff {
			return fmt.Errorf("--vni %q is not a VNI (0-16777215)", v)
		}
		c.vnis = append(c.vnis, uint32(n))
	}
	if c.MaxVNIs < 1 || c.MaxVNIs > decode.MaxVNIs {
		return fmt.Errorf("--max-vnis must be between 1 and %d, got %d", decode.MaxVNIs, c.MaxVNIs)
	}
	if len(c.vnis) > c.MaxVNIs {
		return fmt.Errorf("--vni lists %d VNIs, more than --max-vnis %d: raise --max-vnis", len(c.vnis), c.MaxVNIs)
	}
	if c.AllowAnySource && len(c.AllowSrc) > 0 {
		return errors.New("--allow-src and --allow-any-source exclude each other: give one")
	}
	c.prefixes = c.prefixes[:0]
	for _, s := range c.AllowSrc {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("--allow-src %q is not a CIDR prefix or address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.prefixes = append(c.prefixes, p.Masked())
	}
	if c.Sockets < 0 || c.Sockets > 256 {
		return fmt.Errorf("--sockets must be between 0 and 256, got %d", c.Sockets)
	}
	if c.MaxDatagram < 9216 || c.MaxDatagram > 65535 {
		return fmt.Errorf("--max-datagram must be between 9216 and 65535, got %d", c.MaxDatagram)
	}
	if c.StopRead <= 0 {
		return errors.New("--stop-read must be positive")
	}
	if c.ReadBatch < 1 || c.ReadBatch > 1024 {
		return fmt.Errorf("--read-batch must be between 1 and 1024, got %d", c.ReadBatch)
	}
	if c.BatchBytes < 1024 || c.BatchBytes > 4<<20 {
		return fmt.Errorf("--batch-bytes must be between 1024 and 4194304, got %d", c.BatchBytes)
	}
	if c.BatchDelay <= 0 {
		return errors.New("--batch-delay must be positive")
	}
	if c.MaxInflight < 1 {
		return errors.New("--max-inflight must be at least 1")
	}
	if c.MaxInflightShardBytes < 1 {
		return errors.New("--max-inflight-shard-bytes must be positive")
	}
	if c.BufferBytes < int64(c.BatchBytes) {
		return fmt.Errorf("--buffer-bytes (%d) must hold at least one batch (--batch-bytes %d)", c.BufferBytes, c.BatchBytes)
	}
	if c.Read != "" && c.ReadAheadBytes > 0 && c.ReadAheadBytes < int64(c.BatchBytes) {
		return fmt.Errorf("--read-ahead-bytes (%d) must hold at least one batch (--batch-bytes %d)", c.ReadAheadBytes, c.BatchBytes)
	}
	if c.AckTimeout <= 0 || c.DrainTimeout < 0 || c.EventsInterval <= 0 {
		return errors.New("--ack-timeout and --events-interval must be positive, --drain-timeout not negative")
	}
	return c.checkPorts()
}

// checkPorts refuses to start a network intake on a port another process
// already listens on (see udpin.CheckPort); Run's udpin.Open checks again
// once bound, for two processes starting at the same moment.
func (c *Config) checkPorts() error {
	if c.Read != "" || c.Intake != nil {
		return nil
	}
	hosts := []netip.Addr{{}}
	if len(c.ListenAddr) > 0 {
		hosts = hosts[:0]
		for _, a := range c.ListenAddr {
			hosts = append(hosts, netip.MustParseAddr(a))
		}
	}
	for _, h := range hosts {
		for _, p := range []int{c.VXLANPort, c.GENEVEPort} {
			if err := udpin.CheckPort(h, uint16(p)); err != nil {
				return err
			}
		}
	}
	return nil
}

// publishBuffer is the publisher's buffer: --buffer-bytes for live
// traffic; with --read, --read-ahead-bytes (at most --buffer-bytes): a
// file is read only as fast as JetStream acknowledges it, so its memory
// follows that flag, not the live buffer.
func (c *Config) publishBuffer() int64 {
	if c.Read != "" {
		ra := c.ReadAheadBytes
		if ra <= 0 {
			ra = DefaultReadAheadBytes
		}
		return min(c.BufferBytes, max(ra, int64(c.BatchBytes)))
	}
	return c.BufferBytes
}
