package replay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/tlstest"
)

// listenCert writes a self-signed certificate for 127.0.0.1 and its key
// as PEM files and returns their paths and a pool trusting it.
func listenCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	c := tlstest.SelfSigned(t, "127.0.0.1")
	certFile, keyFile = c.Files(t)
	return certFile, keyFile, c.Pool()
}

// TestListenTLS: with --listen-cert and --listen-key, a Go crypto/tls
// WebSocket client that verifies the certificate connects with wss:// and
// receives the upstream's server-to-client messages byte for byte; a
// plain ws:// client is refused by the TLS listener.
func TestListenTLS(t *testing.T) {
	certFile, keyFile, pool := listenCert(t)
	e := newEnv(t)
	addrc := make(chan string, 1)
	e.startReplay(func(c *Config) {
		c.onListen = func(_, addr string) { addrc <- addr }
	}, "--listen", "127.0.0.1:0=/feed", "--listen-cert", certFile, "--listen-key", keyFile)
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(30 * time.Second):
		t.Fatal("listen address not bound")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if c, _, err := websocket.Dial(ctx, "ws://"+addr+"/feed", nil); err == nil {
		c.CloseNow()
		t.Fatal("a plain ws:// client was served by the TLS listener")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ws, _, err := websocket.Dial(ctx, "wss://"+addr+"/feed", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1)
	cv := newConv(0, "/feed")
	for i := range 20 {
		cv.add(proto.ServerToClient, proto.OpBinary, bytes.Repeat([]byte{byte(i)}, 100+i*997))
	}
	e.publish(cv.entries("websocket")...)
	for i, m := range cv.msgs {
		_, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, m.Payload) {
			t.Fatalf("message %d differs", i)
		}
	}
}

// TestListenTLSFlags: the certificate flags go together, only with
// --listen, and a bad file is a clear error.
func TestListenTLSFlags(t *testing.T) {
	certFile, keyFile, _ := listenCert(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "127.0.0.1:0=/f", "--listen-cert", certFile}, "go together"},
		{[]string{"--target", "ws://127.0.0.1:1", "--listen-cert", certFile, "--listen-key", keyFile}, "only for listen mode"},
		{[]string{"--listen", "127.0.0.1:0=/f", "--listen-cert", keyFile, "--listen-key", keyFile}, "--listen-cert/--listen-key"},
		{[]string{"--listen", "127.0.0.1:0=/f", "--listen-cert", certFile, "--listen-key", keyFile}, ""},
	} {
		var cfg Config
		fs := flag.NewFlagSet("replay", flag.ContinueOnError)
		cfg.Register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if tc.want == "" {
			if err != nil || cfg.listenTLS == nil {
				t.Errorf("%v: %v", tc.args, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
