package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// tlsConnKey is the request context key of the accepted *tls.Conn.
type tlsConnKey struct{}

// TestTLSCloseNotifyRST: inbound-only mirroring of a wss:// production
// client. The external system ends with its close_notify only (no FIN
// yet); the production client answers with an RST (outbound, not
// mirrored), so the external socket is gone and its FIN never comes. The
// mirror shows no TCP end at all: reassemble ends the connection at the
// decrypted close_notify (reason close_notify) instead of its idle
// timeout (6 h), and every message is exact at the test system.
func TestTLSCloseNotifyRST(t *testing.T) {
	needLab(t)
	lab := mirrorlab.New(t, mirrorlab.Options{InboundOnly: true})
	cert, pool := labCert(t)
	ln, err := mirrorlab.Listen(lab.Ext, "tcp4", netip.AddrPortFrom(mirrorlab.ExtAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	type accepted struct {
		ws *websocket.Conn
		tc *tls.Conn
	}
	acc := make(chan accepted, 1)
	srv := &http.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, tlsConnKey{}, c) },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			tc, _ := r.Context().Value(tlsConnKey{}).(*tls.Conn)
			acc <- accepted{c, tc}
			<-r.Context().Done()
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		_ = srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}))
	}()
	t.Cleanup(func() { _ = srv.Close() })
	ext := ln.Addr().String()

	p := NewPipeline(t, lab, PipelineOptions{Listen: replayListen + "=" + ext, NATSHost: "0.0.0.0"})
	ts := ConnectTestSystem(t, p, replayListen)
	keyPath := filepath.Join(p.Dir, "prod-sslkeylog.txt")
	keyLog, err := os.OpenFile(keyPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keyLog.Close() })
	startKeys(t, p, keyPath)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := dialTLS(ctx, lab.Prod, "wss://"+ext+"/feed", pool, keyLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	prod := Collect(c)
	var a accepted
	select {
	case a = <-acc:
	case <-ctx.Done():
		t.Fatal("no connection accepted")
	}
	if a.tc == nil {
		t.Fatal("the accepted connection is not TLS")
	}
	var sent []Msg
	for i, size := range []int64{3000, 200000, 1 << 20} {
		m, err := send(ctx, a.ws, websocket.MessageBinary, payload("binary", uint64(i), size), 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, m)
	}
	got, err := prod.Wait(ctx, len(sent))
	if err != nil {
		t.Fatal(err)
	}
	requireSame(t, "production client", sent, got)

	// close_notify alone (tls.Conn.CloseWrite sends no FIN), then the
	// production client's RST.
	if err := a.tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	v, ok := endConns.Load(c)
	if !ok {
		t.Fatal("production connection unknown")
	}
	if tcp, ok := v.(*endConn).Conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
		_ = tcp.Close()
	} else {
		t.Fatalf("production connection is a %T", v.(*endConn).Conn)
	}

	tsGot, err := waitMsgs(ctx, ts, len(sent))
	if err != nil {
		t.Fatalf("test system: %v", err)
	}
	requireSame(t, "test system", sent, tsGot)
	waitFor(t, 60*time.Second, "the connection's close event", func() error {
		es, err := p.Entries()
		if err != nil {
			return err
		}
		for _, e := range es {
			if e.Close == nil {
				continue
			}
			if e.Close.Reason != "close_notify" || e.Close.TLS == nil || e.Close.TLS.Undecryptable || e.Close.S2C.BytesMissing != 0 {
				t.Fatalf("close event %+v tls %+v", e.Close, e.Close.TLS)
			}
			return nil
		}
		return errors.New("no close event")
	})
}
