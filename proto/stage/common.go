package stage

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	mask "github.com/tapline/tapline/proto/redact"
)

// Common holds the configuration every stage has: the NATS connection, the
// stream limits, the HTTP address for /healthz and /metrics, and logging.
type Common struct {
	NATSURL      string
	NATSUser     string
	NATSPassword string
	NATSToken    string
	NATSCreds    string
	NATSNKey     string
	NATSTLSCA    string
	NATSTLSCert  string
	NATSTLSKey   string
	// NATSInboxPrefix is the subject prefix of the client's reply
	// subjects (acknowledgements, pull deliveries): one per user lets NATS
	// permissions keep each user to its own replies.
	NATSInboxPrefix string

	// ConnectWait bounds the retries of the first connection to NATS
	// (0: retry until stopped); after a first connection, an outage is
	// retried forever.
	ConnectWait time.Duration

	Shards  int
	Streams proto.StreamOptions

	HTTPAddr  string
	LogLevel  string
	LogFormat string
	// RedactNames (--redact-names) are further query parameter and header
	// names whose values are masked in logs and results (proto/redact).
	RedactNames ListFlag
}

// Aliases are the environment variables accepted besides TAPLINE_<FLAG>.
var Aliases = map[string]string{"nats-url": "NATS_URL"}

// Register adds the common flags to fs, with httpDefault as the default
// listen address of /healthz and /metrics.
func (c *Common) Register(fs *flag.FlagSet, httpDefault string) {
	fs.StringVar(&c.NATSURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated")
	fs.StringVar(&c.NATSUser, "nats-user", "", "NATS user name")
	fs.StringVar(&c.NATSPassword, "nats-password", "", "NATS password (never logged)")
	fs.StringVar(&c.NATSToken, "nats-token", "", "NATS authentication token (never logged)")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials file (JWT + NKey)")
	fs.StringVar(&c.NATSNKey, "nats-nkey", "", "NATS NKey seed file")
	fs.StringVar(&c.NATSTLSCA, "nats-tls-ca", "", "CA certificate file to verify the NATS server")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", "", "client certificate file for NATS TLS")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", "", "client key file for NATS TLS")
	fs.StringVar(&c.NATSInboxPrefix, "nats-inbox-prefix", nats.InboxPrefix[:len(nats.InboxPrefix)-1], "subject prefix of this client's reply subjects (acknowledgements, pull deliveries)")
	fs.DurationVar(&c.ConnectWait, "nats-connect-wait", DefaultConnectWait, "how long to retry the first connection to NATS before exiting with the cause (0: until stopped); later outages are retried forever")
	fs.IntVar(&c.Shards, "shards", proto.DefaultShards, "number of flow shards (all stages must agree)")
	fs.IntVar(&c.Streams.Replicas, "stream-replicas", 1, "JetStream replicas of the streams this stage provisions")
	fs.BoolVar(&c.Streams.Update, "update-streams", false, "change existing streams whose limits or replicas differ from these flags (default: keep them and warn)")
	fs.DurationVar(&c.Streams.Frames.MaxAge, "frames-max-age", proto.DefaultLimits[proto.FramesStream].MaxAge, "max age of the frames stream")
	SizeVar(fs, &c.Streams.Frames.MaxBytes, "frames-max-bytes", proto.DefaultLimits[proto.FramesStream].MaxBytes, "max bytes of the frames stream")
	fs.DurationVar(&c.Streams.Msgs.MaxAge, "msgs-max-age", proto.DefaultLimits[proto.MsgsStream].MaxAge, "max age of the messages stream")
	SizeVar(fs, &c.Streams.Msgs.MaxBytes, "msgs-max-bytes", proto.DefaultLimits[proto.MsgsStream].MaxBytes, "max bytes of the messages stream")
	fs.DurationVar(&c.Streams.Results.MaxAge, "results-max-age", proto.DefaultLimits[proto.ResultsStream].MaxAge, "max age of the results stream")
	SizeVar(fs, &c.Streams.Results.MaxBytes, "results-max-bytes", proto.DefaultLimits[proto.ResultsStream].MaxBytes, "max bytes of the results stream")
	fs.DurationVar(&c.Streams.Keys.MaxAge, "keys-max-age", proto.DefaultLimits[proto.KeysStream].MaxAge, "max age of the TLS keys stream")
	SizeVar(fs, &c.Streams.Keys.MaxBytes, "keys-max-bytes", proto.DefaultLimits[proto.KeysStream].MaxBytes, "max bytes of the TLS keys stream")
	fs.StringVar(&c.HTTPAddr, "http", httpDefault, "listen address for /healthz and /metrics (empty: off)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.Var(&c.RedactNames, "redact-names", "more query parameter and header names (case-insensitive, also as parts of longer names) whose values are masked in logs and results, besides the built-in token/secret/password/auth/key/cookie/session… ones")
}

// DefaultConnectWait is the default of --nats-connect-wait: long enough
// for a NATS server started next to the stage (compose) to come up.
const DefaultConnectWait = 30 * time.Second

// Validate checks the common configuration and returns one clear error.
func (c *Common) Validate() error {
	if c.NATSURL == "" {
		return fmt.Errorf("--nats-url (or NATS_URL) is required")
	}
	if err := validateNATSURL(c.NATSURL); err != nil {
		return err
	}
	if c.ConnectWait < 0 {
		return fmt.Errorf("--nats-connect-wait must not be negative, got %s", c.ConnectWait)
	}
	if c.Shards < 1 || c.Shards > 4096 {
		return fmt.Errorf("--shards must be between 1 and 4096, got %d", c.Shards)
	}
	if p := c.NATSInboxPrefix; p != "" && (strings.ContainsAny(p, "*> \t") || strings.HasSuffix(p, ".")) {
		return fmt.Errorf("--nats-inbox-prefix must be a subject prefix without wildcards, got %q", p)
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return fmt.Errorf("--nats-tls-cert and --nats-tls-key go together")
	}
	if c.NATSCreds != "" && c.NATSNKey != "" {
		return fmt.Errorf("--nats-creds and --nats-nkey are exclusive")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, got %q", c.LogFormat)
	}
	return nil
}

// Logger returns the stage's structured logger, writing to stderr.
// Credentials in its messages and values (URL passwords, secret-looking
// query parameters and headers, see proto/redact and --redact-names) are
// masked.
func (c *Common) Logger(stageName string) *slog.Logger {
	return c.loggerTo(os.Stderr, stageName)
}

func (c *Common) loggerTo(w io.Writer, stageName string) *slog.Logger {
	mask.SetExtra(c.RedactNames)
	lvl, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: redactAttr}
	var h slog.Handler
	if c.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("stage", stageName)
}

// redactAttr masks credentials in a log attribute's text.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); s != "" {
			if r := mask.Text(s); r != s {
				a.Value = slog.StringValue(r)
			}
		}
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			a.Value = slog.StringValue(mask.Text(v.Error()))
		case fmt.Stringer:
			a.Value = slog.StringValue(mask.Text(v.String()))
		}
	}
	return a
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// Connect dials NATS with the configured authentication and returns the
// connection and its JetStream context. name identifies the client in the
// server's monitoring. extra options are applied after the common ones and
// override them. The first connection is retried for --nats-connect-wait,
// logging the real cause ("connection refused", not the client's "no
// servers available"); when it cannot be made, the error is a ConfigError
// of one line naming the cause and --nats-url. Once connected, outages are
// retried forever.
func (c *Common) Connect(ctx context.Context, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	dialer := &causeDialer{}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.SetCustomDialer(dialer),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close on a clean stop
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	if c.NATSUser != "" {
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	if c.NATSToken != "" {
		opts = append(opts, nats.Token(c.NATSToken))
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.NATSNKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NATSNKey)
		if err != nil {
			return nil, nil, ConfigError(fmt.Errorf("--nats-nkey: %w", err))
		}
		opts = append(opts, o)
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	if p := c.NATSInboxPrefix; p != "" && p+"." != nats.InboxPrefix {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	opts = append(opts, extra...)
	log.Info("nats connecting", "url", redact(c.NATSURL), "name", name)
	start := time.Now()
	var nc *nats.Conn
	for attempt := 1; ; attempt++ {
		var err error
		if nc, err = nats.Connect(c.NATSURL, opts...); err == nil {
			break
		}
		err = dialer.cause(err)
		if permanent(err) {
			return nil, nil, ConfigError(fmt.Errorf("NATS at %s: %v (check --nats-url and the --nats-* credentials)", redact(c.NATSURL), err))
		}
		if c.ConnectWait > 0 && time.Since(start) >= c.ConnectWait {
			return nil, nil, ConfigError(fmt.Errorf("NATS at %s not reachable after %s: %v (check --nats-url or NATS_URL; --nats-connect-wait waits longer)", redact(c.NATSURL), time.Since(start).Round(time.Second), err))
		}
		if attempt == 1 || attempt%20 == 0 {
			log.Warn("NATS not reachable, retrying", "url", redact(c.NATSURL), "err", err, "waited", time.Since(start).Round(time.Second), "connect_wait", c.ConnectWait)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// redact removes user info from NATS URLs before they are logged.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
				parts[i] = u[:scheme+3] + "REDACTED" + u[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}
