package replay

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/replay/compare"
	"github.com/tapline/tapline/replay/pace"
)

// Incomplete-message policies (--incomplete).
const (
	IncompleteSkip = "skip" // do not deliver messages touched by mirror loss
	IncompleteSend = "send" // deliver them as they are
	IncompleteMark = "mark" // deliver them with --incomplete-marker prepended
)

// Result-publishing levels (--results).
const (
	ResultsAll      = "all"      // every message and every connection summary
	ResultsProblems = "problems" // skipped, failed and mismatched messages and summaries
	ResultsOff      = "off"
)

// Config is the replay stage's configuration.
type Config struct {
	Common stage.Common

	// Consumption.
	Durable       string
	Deliver       string // all or new
	VNIs          stage.ListFlag
	ShardList     stage.ListFlag
	AckWait       time.Duration
	PullMaxBytes  int
	MaxInflight   int64
	MaxConns      int
	ConnIdle      time.Duration
	RetryMin      time.Duration
	RetryMax      time.Duration
	GiveUp        time.Duration
	WriteTimeout  time.Duration
	DialTimeout   time.Duration
	CloseWait     time.Duration
	ResultsLevel  string
	ResultsSubjFn func(vni uint32, shard int) string // tests only; nil = proto.ResultsSubject

	// Dial mode.
	Targets      stage.ListFlag
	PathOverride string
	Subprotocol  string
	Compression  string
	SetHeaders   stage.ListFlag
	DropHeaders  stage.ListFlag
	ForwardHdrs  bool
	// ForwardCreds also forwards production credentials (Authorization,
	// Proxy-Authorization, Cookie); off by default so production secrets
	// do not reach a test system by accident.
	ForwardCreds bool
	TLSInsecure  bool
	// FollowRedirects lets a test system's HTTP redirect (3xx) move the
	// handshake elsewhere (at most maxRedirects); off, a redirect is a
	// failed dial.
	FollowRedirects bool
	Compare         bool
	CompareMax      int
	IgnoreJSON      stage.ListFlag
	IgnoreRegex     stage.ListFlag

	// Listen mode.
	Listens stage.ListFlag
	// ListenCert and ListenKey (PEM files) make the listeners serve TLS
	// (wss://); see listentls.go.
	ListenCert, ListenKey string

	// Filters.
	Servers    stage.ListFlag
	MatchPaths stage.ListFlag
	Dir        string

	// Fidelity.
	Incomplete       string
	IncompleteMarker string
	Pace             string
	Speed            float64
	RateMsgs         float64
	RateBytes        float64

	// onListen, when set (tests), is told each listen address once bound.
	onListen func(upstream, addr string)
	// noNakOnStop (tests) stops without handing held entries back, as a
	// crash would.
	noNakOnStop bool
	// noDeliveryLedger (benchmarks) turns the delivery ledger off, to
	// measure its cost.
	noDeliveryLedger bool
	// confirmDelay (tests) delays every confirmation, so a crash finds
	// messages read by the test system and not yet confirmed.
	confirmDelay time.Duration
	// beforeAck (tests) is called before an acknowledgement is sent,
	// with the entry's reply subject: a test makes JetStream redeliver
	// the entry first, as a redelivery crossing the acknowledgement does.
	beforeAck func(seq uint64, reply string)
	// afterDispatch (tests) is called when an entry was handed to its
	// connection (or dropped as stale), with its delivery count.
	afterDispatch func(seq, delivered uint64)

	// derived by Validate
	wsTarget  *url.URL
	tcpTarget string
	listens   []listenSpec
	listenTLS *tls.Config
	setHdr    http.Header
	rules     compare.Rules
	pace      pace.Config
	compress  websocket.CompressionMode
	vnis      []uint32
	shards    []int
}

// listenSpec is one --listen addr=upstream.
type listenSpec struct {
	Addr     string
	Upstream string
}

// Register adds the common flags (HTTP default :9103) and replay's own.
func (c *Config) Register(fs *flag.FlagSet) {
	c.Common.Register(fs, ":9103")
	fs.StringVar(&c.Durable, "durable", "tapline-replay", "durable consumer name on TAPLINE_MSGS (one replay instance per name)")
	fs.StringVar(&c.Deliver, "deliver", "all", "where a new durable consumer starts: all (everything in the stream) or new")
	fs.Var(&c.VNIs, "vni", "replay only these VNIs (comma-separated or repeated; default all)")
	stage.SetEnvName(fs, "vni", "TAPLINE_REPLAY_VNI", "TAPLINE_VNI")
	fs.Var(&c.ShardList, "shard", "replay only these shards (comma-separated or repeated; default all)")
	stage.SetEnvName(fs, "shard", "TAPLINE_REPLAY_SHARD", "TAPLINE_SHARD")
	fs.DurationVar(&c.AckWait, "ack-wait", 30*time.Second, "JetStream ack wait; held messages are kept alive with in-progress acks")
	stage.IntSizeVar(fs, &c.PullMaxBytes, "pull-max-bytes", 4<<20, "bytes of messages buffered from JetStream ahead of delivery")
	stage.SizeVar(fs, &c.MaxInflight, "max-inflight-bytes", 8<<20, "payload bytes held in memory across all connections")
	fs.IntVar(&c.MaxConns, "max-conns", 4096, "connections replayed at once")
	fs.DurationVar(&c.ConnIdle, "conn-idle", 5*time.Minute, "end a replayed connection after this long without entries (its close event never came)")
	fs.DurationVar(&c.RetryMin, "retry-min", 100*time.Millisecond, "first retry delay when the test system is down")
	fs.DurationVar(&c.RetryMax, "retry-max", 5*time.Second, "largest retry delay")
	fs.DurationVar(&c.GiveUp, "give-up", 10*time.Minute, "report a connection failed after the test system refused it this long (0: retry forever)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 30*time.Second, "timeout of one write to the test system")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", 10*time.Second, "timeout of one connection attempt to the test system")
	fs.DurationVar(&c.CloseWait, "close-wait", 5*time.Second, "how long to wait for the test system's last responses when a connection ends")
	fs.StringVar(&c.ResultsLevel, "results", ResultsAll, "results published on tapline.results.<vni>.<shard>: all, problems or off")

	fs.Var(&c.Targets, "target", "dial mode: test system URL, ws://host:port, wss://host:port or tcp://host:port (a ws and a tcp target may both be given)")
	fs.StringVar(&c.PathOverride, "path", "", "dial mode: request path (and query) instead of the original")
	fs.StringVar(&c.Subprotocol, "subprotocol", "", "dial mode: subprotocol to request instead of the original (\"-\": none)")
	fs.StringVar(&c.Compression, "compression", "off", "permessage-deflate toward the test system: off, on (no context takeover) or context-takeover")
	fs.Var(&c.SetHeaders, "set-header", "handshake header 'Name: value' to set (repeatable), e.g. 'Authorization: Bearer test'")
	fs.Var(&c.DropHeaders, "drop-header", "handshake header to drop (repeatable), e.g. Cookie")
	fs.BoolVar(&c.ForwardHdrs, "forward-headers", true, "dial mode: send the original upgrade request's headers (Origin, User-Agent, custom headers, ...) before --drop-header/--set-header")
	fs.BoolVar(&c.ForwardCreds, "forward-credentials", false, "dial mode: with --forward-headers, also send production's Authorization, Proxy-Authorization, Cookie and credential-like headers such as X-Api-Key (off: production secrets never reach the test system)")
	fs.BoolVar(&c.FollowRedirects, "follow-redirects", false, "dial mode: follow the test system's HTTP redirects of the handshake (at most 10); off, a redirect fails the dial, so production's messages never go where the target did not name")
	fs.BoolVar(&c.TLSInsecure, "tls-insecure", false, "wss: do not verify the test system's certificate")
	fs.BoolVar(&c.Compare, "compare", true, "dial mode: compare the test system's responses with production's")
	stage.IntSizeVar(fs, &c.CompareMax, "compare-max-bytes", 1<<20, "responses larger than this are compared by SHA-256 only (ignore rules not applied)")
	fs.Var(&c.IgnoreJSON, "ignore-json-path", "comparison: JSON path to ignore, e.g. data.timestamp or items.*.id (repeatable)")
	fs.Var(&c.IgnoreRegex, "ignore-regex", "comparison: regular expression whose matches are ignored (repeatable)")

	fs.Var(&c.Listens, "listen", "listen mode: addr=upstream, e.g. 127.0.0.1:9001=203.0.113.7:443 or :9002=/feed (repeatable): serve the upstream's server-to-client messages to every test connection on addr")
	fs.StringVar(&c.ListenCert, "listen-cert", "", "listen mode: PEM certificate (chain) file; with --listen-key the listeners serve TLS (wss://)")
	fs.StringVar(&c.ListenKey, "listen-key", "", "listen mode: PEM private key file of --listen-cert")

	fs.Var(&c.Servers, "server", "replay only connections to these original servers: ip:port, ip or :port (repeatable)")
	fs.Var(&c.MatchPaths, "match-path", "replay only connections whose original path matches this glob, e.g. /v1/* (repeatable)")
	fs.StringVar(&c.Dir, "dir", "", "direction replayed: c2s or s2c (default c2s in dial mode, s2c in listen mode)")

	fs.StringVar(&c.Incomplete, "incomplete", IncompleteSkip, "messages touched by mirror loss: skip, send or mark")
	fs.StringVar(&c.IncompleteMarker, "incomplete-marker", "TAPLINE-INCOMPLETE:", "prefix of incomplete messages with --incomplete=mark")
	fs.StringVar(&c.Pace, "pace", string(pace.Original), "timing: original (the captured gaps, scaled by --speed) or fast")
	fs.Float64Var(&c.Speed, "speed", 1, "with --pace original: speed factor (2 = twice as fast)")
	fs.Float64Var(&c.RateMsgs, "rate-msgs", 0, "cap on messages per second (0: none)")
	fs.Float64Var(&c.RateBytes, "rate-bytes", 0, "cap on payload bytes per second (0: none)")
}

// Validate checks the configuration and returns one clear error.
func (c *Config) Validate() error {
	c.wsTarget, c.tcpTarget, c.listens = nil, "", nil
	for _, t := range c.Targets {
		u, err := url.Parse(t)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--target %q: want ws://host:port, wss://host:port or tcp://host:port", t)
		}
		switch u.Scheme {
		case "ws", "wss":
			if c.wsTarget != nil {
				return fmt.Errorf("--target: only one ws:// or wss:// target")
			}
			c.wsTarget = u
		case "tcp":
			if c.tcpTarget != "" {
				return fmt.Errorf("--target: only one tcp:// target")
			}
			if _, _, err := net.SplitHostPort(u.Host); err != nil {
				return fmt.Errorf("--target %q: tcp target needs host:port", t)
			}
			c.tcpTarget = u.Host
		default:
			return fmt.Errorf("--target %q: scheme must be ws, wss or tcp", t)
		}
	}
	for _, l := range c.Listens {
		addr, up, ok := strings.Cut(l, "=")
		if !ok || addr == "" || up == "" {
			return fmt.Errorf("--listen %q: want addr=upstream, e.g. 127.0.0.1:9001=203.0.113.7:443", l)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("--listen %q: bad listen address: %v", l, err)
		}
		c.listens = append(c.listens, listenSpec{Addr: addr, Upstream: up})
	}
	if err := c.validateListenTLS(); err != nil {
		return err
	}
	if len(c.Targets) == 0 && len(c.listens) == 0 {
		return fmt.Errorf("give --target (dial mode) or --listen (listen mode)")
	}
	if len(c.Targets) > 0 && len(c.listens) > 0 {
		return fmt.Errorf("--target and --listen are exclusive: run one replay per mode")
	}
	if c.Dir == "" {
		c.Dir = string(proto.ClientToServer)
		if len(c.listens) > 0 {
			c.Dir = string(proto.ServerToClient)
		}
	}
	if c.Dir != string(proto.ClientToServer) && c.Dir != string(proto.ServerToClient) {
		return fmt.Errorf("--dir must be c2s or s2c, got %q", c.Dir)
	}
	if c.Durable == "" || strings.ContainsAny(c.Durable, ". *>") {
		return fmt.Errorf("--durable %q: want a name without dots, spaces or wildcards", c.Durable)
	}
	if c.Deliver != "all" && c.Deliver != "new" {
		return fmt.Errorf("--deliver must be all or new, got %q", c.Deliver)
	}
	c.vnis, c.shards = nil, nil
	for _, v := range c.VNIs {
		var n uint32
		if _, err := fmt.Sscan(v, &n); err != nil {
			return fmt.Errorf("--vni %q: want a decimal VNI", v)
		}
		c.vnis = append(c.vnis, n)
	}
	for _, v := range c.ShardList {
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil || n < 0 {
			return fmt.Errorf("--shard %q: want a shard number", v)
		}
		c.shards = append(c.shards, n)
	}
	switch c.Compression {
	case "off":
		c.compress = websocket.CompressionDisabled
	case "on":
		c.compress = websocket.CompressionNoContextTakeover
	case "context-takeover":
		c.compress = websocket.CompressionContextTakeover
	default:
		return fmt.Errorf("--compression must be off, on or context-takeover, got %q", c.Compression)
	}
	c.setHdr = http.Header{}
	for _, h := range c.SetHeaders {
		name, val, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("--set-header %q: want 'Name: value'", h)
		}
		c.setHdr.Add(strings.TrimSpace(name), strings.TrimSpace(val))
	}
	rules, err := compare.ParseRules(c.IgnoreJSON, c.IgnoreRegex)
	if err != nil {
		return err
	}
	c.rules = rules
	switch c.Incomplete {
	case IncompleteSkip, IncompleteSend, IncompleteMark:
	default:
		return fmt.Errorf("--incomplete must be skip, send or mark, got %q", c.Incomplete)
	}
	switch c.ResultsLevel {
	case ResultsAll, ResultsProblems, ResultsOff:
	default:
		return fmt.Errorf("--results must be all, problems or off, got %q", c.ResultsLevel)
	}
	mode, err := pace.ParseMode(c.Pace)
	if err != nil {
		return err
	}
	if c.Speed <= 0 {
		return fmt.Errorf("--speed must be > 0, got %v", c.Speed)
	}
	if c.RateMsgs < 0 || c.RateBytes < 0 {
		return fmt.Errorf("--rate-msgs and --rate-bytes must be >= 0")
	}
	c.pace = pace.Config{Mode: mode, Speed: c.Speed, RateMsgs: c.RateMsgs, RateBytes: c.RateBytes}
	for _, p := range c.MatchPaths {
		if _, err := pathMatch(p, "/"); err != nil {
			return fmt.Errorf("--match-path %q: %v", p, err)
		}
	}
	switch {
	case c.AckWait < time.Second:
		return fmt.Errorf("--ack-wait must be at least 1s")
	case c.PullMaxBytes < 2*proto.MaxChunkAccepted:
		return fmt.Errorf("--pull-max-bytes must be at least %d (two full chunks)", 2*proto.MaxChunkAccepted)
	case c.MaxInflight < 2*proto.MaxChunkAccepted:
		return fmt.Errorf("--max-inflight-bytes must be at least %d (two full chunks)", 2*proto.MaxChunkAccepted)
	case c.MaxConns < 1:
		return fmt.Errorf("--max-conns must be >= 1")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("--retry-min must be > 0 and <= --retry-max")
	case c.ConnIdle <= 0 || c.WriteTimeout <= 0 || c.DialTimeout <= 0 || c.CloseWait <= 0:
		return fmt.Errorf("--conn-idle, --write-timeout, --dial-timeout and --close-wait must be > 0")
	case c.CompareMax < 0:
		return fmt.Errorf("--compare-max-bytes must be >= 0")
	}
	return nil
}
