package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// sendThenCut writes one whole message, then the first frame of a second,
// fragmented one, and ends the connection without a close handshake (as a
// process killed by SIGKILL does).
func sendThenCut(t *testing.T, c *websocket.Conn) {
	ctx := context.Background()
	if err := c.Write(ctx, websocket.MessageBinary, []byte("whole")); err != nil {
		t.Error(err)
		return
	}
	w, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := w.Write(bytes.Repeat([]byte{7}, 64<<10)); err != nil { // one frame, not final
		t.Error(err)
	}
	_ = c.CloseNow()
}

// checkCut reads what sendThenCut sent: the whole message, then an error
// for the cut one (coder/websocket alone returns it as a complete 64 KiB
// message).
func checkCut(t *testing.T, c *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, started, err := receiveStarted(ctx, c)
	if err != nil || m.Size != 5 {
		t.Fatalf("first message: %d bytes, %v", m.Size, err)
	}
	m, started, err = receiveStarted(ctx, c)
	if err == nil || !started {
		t.Fatalf("a message cut by the end of the connection was read as complete: %d bytes (started %v, err %v)", m.Size, started, err)
	}
}

// TestMessageCutByConnectionEnd: the test systems count a message whose
// connection ended inside it as aborted, on accepted and on dialled
// connections alike.
func TestMessageCutByConnectionEnd(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("accepted", func(t *testing.T) {
		got := make(chan *websocket.Conn, 1)
		srv := &http.Server{ConnContext: endConnContext, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			if ec, ok := r.Context().Value(endConnKey{}).(*endConn); ok {
				watchEnd(c, ec)
			}
			got <- c
			<-r.Context().Done()
		})}
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(endListener{ln}) }()
		defer srv.Close()
		cl, _, err := websocket.Dial(context.Background(), "ws://"+ln.Addr().String()+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		sc := <-got
		go sendThenCut(t, cl)
		checkCut(t, sc)
	})
	t.Run("dialled", func(t *testing.T) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			sendThenCut(t, c)
		})}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		var ec *endConn
		var d net.Dialer
		o := &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: endDialer(d.DialContext, &ec)}}}
		c, _, err := websocket.Dial(context.Background(), "ws://"+ln.Addr().String()+"/", o)
		if err != nil {
			t.Fatal(err)
		}
		watchEnd(c, ec)
		c.SetReadLimit(-1)
		checkCut(t, c)
	})
}
