package stage

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
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

	Shards  int
	Streams proto.StreamOptions

	HTTPAddr  string
	LogLevel  string
	LogFormat string
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
	fs.IntVar(&c.Shards, "shards", proto.DefaultShards, "number of flow shards (all stages must agree)")
	fs.IntVar(&c.Streams.Replicas, "stream-replicas", 1, "JetStream replicas of the streams this stage provisions")
	fs.BoolVar(&c.Streams.Update, "update-streams", false, "change existing streams whose limits or replicas differ from these flags (default: keep them and warn)")
	fs.DurationVar(&c.Streams.Frames.MaxAge, "frames-max-age", proto.DefaultLimits[proto.FramesStream].MaxAge, "max age of the frames stream")
	fs.Int64Var(&c.Streams.Frames.MaxBytes, "frames-max-bytes", proto.DefaultLimits[proto.FramesStream].MaxBytes, "max bytes of the frames stream")
	fs.DurationVar(&c.Streams.Msgs.MaxAge, "msgs-max-age", proto.DefaultLimits[proto.MsgsStream].MaxAge, "max age of the messages stream")
	fs.Int64Var(&c.Streams.Msgs.MaxBytes, "msgs-max-bytes", proto.DefaultLimits[proto.MsgsStream].MaxBytes, "max bytes of the messages stream")
	fs.DurationVar(&c.Streams.Results.MaxAge, "results-max-age", proto.DefaultLimits[proto.ResultsStream].MaxAge, "max age of the results stream")
	fs.Int64Var(&c.Streams.Results.MaxBytes, "results-max-bytes", proto.DefaultLimits[proto.ResultsStream].MaxBytes, "max bytes of the results stream")
	fs.StringVar(&c.HTTPAddr, "http", httpDefault, "listen address for /healthz and /metrics (empty: off)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
}

// Validate checks the common configuration and returns one clear error.
func (c *Common) Validate() error {
	if c.NATSURL == "" {
		return fmt.Errorf("--nats-url (or NATS_URL) is required")
	}
	if c.Shards < 1 || c.Shards > 4096 {
		return fmt.Errorf("--shards must be between 1 and 4096, got %d", c.Shards)
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
func (c *Common) Logger(stageName string) *slog.Logger {
	lvl, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	if c.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	} else {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	return slog.New(h).With("stage", stageName)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// Connect dials NATS with the configured authentication, reconnecting
// forever, and returns the connection and its JetStream context. name
// identifies the client in the server's monitoring.
func (c *Common) Connect(ctx context.Context, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(64 << 20),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
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
			return nil, nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", redact(c.NATSURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	log.Info("nats connecting", "url", redact(c.NATSURL), "name", name)
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
