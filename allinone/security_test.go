package allinone

// NATS security as every stage uses it (stage.Common.Connect): user and
// password, NKey, TLS with a client certificate; wrong credentials fail
// clearly; secrets never reach the logs.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/tapline/tapline/proto/stage"
	"github.com/tapline/tapline/proto/tlstest"
)

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLog() (*slog.Logger, *logBuf) {
	var b logBuf
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

func startServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host = "127.0.0.1"
	o.Port = -1
	o.JetStream = true
	o.StoreDir = t.TempDir()
	o.NoSigs = true
	o.NoLog = true
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// connect runs Common.Connect and waits (generously) for the outcome:
// nil once JetStream answers, or the first error the client reports.
func connect(t *testing.T, c stage.Common, log *slog.Logger) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := c.Connect(ctx, "security-test", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	for {
		if nc.IsConnected() {
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := js.AccountInfo(actx)
			acancel()
			if err == nil {
				return nil
			}
		}
		if err := nc.LastError(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestNATSUserPassword(t *testing.T) {
	const secret = "s3cr3t-Pa55word-xyz"
	srv := startServer(t, &server.Options{Username: "tapline", Password: secret})
	log, buf := newLog()
	c := stage.Common{NATSURL: srv.ClientURL(), NATSUser: "tapline", NATSPassword: secret}
	if err := connect(t, c, log); err != nil {
		t.Fatalf("right password: %v", err)
	}
	c.NATSPassword = "wrong-" + secret
	err := connect(t, c, log)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("wrong password: want an authorization error, got %v", err)
	}
	// The password in the URL form is redacted too.
	c = stage.Common{NATSURL: strings.Replace(srv.ClientURL(), "nats://", "nats://tapline:"+secret+"@", 1)}
	if err := connect(t, c, log); err != nil {
		t.Fatalf("credentials in URL: %v", err)
	}
	if strings.Contains(buf.String(), secret) {
		t.Fatalf("password logged:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "REDACTED") {
		t.Fatalf("URL with credentials not logged redacted:\n%s", buf.String())
	}
}

func TestNATSToken(t *testing.T) {
	const token = "tok-0123456789abcdef"
	srv := startServer(t, &server.Options{Authorization: token})
	log, buf := newLog()
	if err := connect(t, stage.Common{NATSURL: srv.ClientURL(), NATSToken: token}, log); err != nil {
		t.Fatalf("right token: %v", err)
	}
	if err := connect(t, stage.Common{NATSURL: srv.ClientURL(), NATSToken: "nope"}, log); err == nil {
		t.Fatal("wrong token accepted")
	}
	if strings.Contains(buf.String(), token) {
		t.Fatalf("token logged:\n%s", buf.String())
	}
}

func TestNATSNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	srv := startServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	log, buf := newLog()
	if err := connect(t, stage.Common{NATSURL: srv.ClientURL(), NATSNKey: seedFile}, log); err != nil {
		t.Fatalf("right nkey: %v", err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(dir, "other.nk")
	if err := os.WriteFile(otherFile, otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := connect(t, stage.Common{NATSURL: srv.ClientURL(), NATSNKey: otherFile}, log); err == nil {
		t.Fatal("unknown nkey accepted")
	}
	if err := connect(t, stage.Common{NATSURL: srv.ClientURL(), NATSNKey: filepath.Join(dir, "missing.nk")}, log); err == nil || !strings.Contains(err.Error(), "--nats-nkey") {
		t.Fatalf("missing seed file: %v", err)
	}
	if strings.Contains(buf.String(), string(seed)) {
		t.Fatalf("seed logged:\n%s", buf.String())
	}
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files, and another CA.
type pki struct {
	ca, cliCert, cliKey, otherCA string
	caPool                       *x509.CertPool
	serverTLS                    tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca := tlstest.SelfSigned(t)
	p := &pki{caPool: ca.Pool(), serverTLS: ca.Issue(t, "127.0.0.1").TLS}
	p.ca, _ = ca.Files(t)
	p.otherCA, _ = tlstest.SelfSigned(t).Files(t)
	p.cliCert, p.cliKey = ca.Issue(t).Files(t)
	return p
}

func TestNATSTLS(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, &server.Options{
		TLS:       true,
		TLSVerify: true, // client certificates required
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{p.serverTLS},
			ClientCAs:    p.caPool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
		TLSTimeout: 10,
	})
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
	log, _ := newLog()

	good := stage.Common{NATSURL: url, NATSTLSCA: p.ca, NATSTLSCert: p.cliCert, NATSTLSKey: p.cliKey}
	if err := connect(t, good, log); err != nil {
		t.Fatalf("mutual TLS with the right CA and client certificate: %v", err)
	}

	wrongCA := good
	wrongCA.NATSTLSCA = p.otherCA
	if err := connect(t, wrongCA, log); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("server certificate from an untrusted CA: want a certificate error, got %v", err)
	}

	noClient := good
	noClient.NATSTLSCert, noClient.NATSTLSKey = "", ""
	if err := connect(t, noClient, log); err == nil {
		t.Fatal("connected without the required client certificate")
	}

	half := stage.Common{NATSURL: url, NATSTLSCert: p.cliCert, Shards: 1, LogLevel: "info", LogFormat: "text"}
	if err := half.Validate(); err == nil || !strings.Contains(err.Error(), "--nats-tls-key") {
		t.Fatalf("certificate without key: %v", err)
	}
}

// TestAllInOneNeverLogsSecrets runs the all-in-one with NATS credentials
// given as flags and environment and checks no log line carries them.
func TestAllInOneNeverLogsSecrets(t *testing.T) {
	const secret = "very-secret-passw0rd"
	srv := startServer(t, &server.Options{Username: "tapline", Password: secret})
	c, a, b, fs := newFake(t)
	t.Setenv("TAPLINE_NATS_PASSWORD", secret)
	args := []string{"--nats-embedded=false", "--nats-url", srv.ClientURL(), "--nats-user", "tapline", "--log-level", "debug"}
	if err := stage.Parse(fs, args, stage.Aliases); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	log, buf := newLog()
	d := stage.Deps{Log: log, Metrics: nil, Health: &stage.Health{}}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	// Route every stage's logger into buf as well.
	for _, s := range c.Stages {
		run := s.Run
		s.Run = func(ctx context.Context, sd stage.Deps) error {
			sd.Log = log.With("stage", "x")
			return run(ctx, sd)
		}
	}
	go func() { errc <- Run(ctx, c, d, nil) }()
	deadline := time.Now().Add(60 * time.Second)
	for !(a.ran.Load() && b.ran.Load()) || len(d.Health.Check()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stages not healthy: %v\n%s", d.Health.Check(), buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.Common.NATSPassword != secret {
		t.Fatal("password from TAPLINE_NATS_PASSWORD did not reach the stage")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var usage bytes.Buffer
	stage.PrintUsage(&usage, fs)
	for what, out := range map[string]string{"logs": buf.String(), "--help": usage.String()} {
		if strings.Contains(out, secret) {
			t.Fatalf("secret in %s:\n%s", what, out)
		}
	}
}

// TestNATSCredsFile: decentralised (operator/JWT) authentication with a
// credentials file, as NGS or a NATS cluster with an account resolver uses.
func TestNATSCredsFile(t *testing.T) {
	opKP, _ := nkeys.CreateOperator()
	opPub, _ := opKP.PublicKey()
	op := jwt.NewOperatorClaims(opPub)
	op.Name = "tapline-test"
	if _, err := op.Encode(opKP); err != nil {
		t.Fatal(err)
	}
	accKP, _ := nkeys.CreateAccount()
	accPub, _ := accKP.PublicKey()
	acc := jwt.NewAccountClaims(accPub)
	acc.Limits.JetStreamLimits.DiskStorage = -1
	acc.Limits.JetStreamLimits.MemoryStorage = -1
	accJWT, err := acc.Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	creds := func(name string, signer nkeys.KeyPair) string {
		uKP, _ := nkeys.CreateUser()
		uPub, _ := uKP.PublicKey()
		uSeed, _ := uKP.Seed()
		uc := jwt.NewUserClaims(uPub)
		uc.IssuerAccount = accPub
		uJWT, err := uc.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		b, err := jwt.FormatUserConfig(uJWT, uSeed)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Operator mode with JetStream needs a system account.
	sysKP, _ := nkeys.CreateAccount()
	sysPub, _ := sysKP.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(opKP)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	if err := resolver.Store(sysPub, sysJWT); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{op}, AccountResolver: resolver, SystemAccount: sysPub})
	log, buf := newLog()
	good := creds("good.creds", accKP)
	if err := connect(t, stage.Common{NATSURL: srv.ClientURL(), NATSCreds: good}, log); err != nil {
		t.Fatalf("valid credentials file: %v", err)
	}
	otherAcc, _ := nkeys.CreateAccount() // a user signed by an unknown account
	if err := connect(t, stage.Common{NATSURL: srv.ClientURL(), NATSCreds: creds("bad.creds", otherAcc)}, log); err == nil {
		t.Fatal("credentials of an unknown account accepted")
	}
	seedLine := ""
	if b, err := os.ReadFile(good); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "SU") {
				seedLine = l
			}
		}
	}
	if seedLine == "" || strings.Contains(buf.String(), seedLine) {
		t.Fatalf("seed missing from the creds file or logged:\n%s", buf.String())
	}
}
