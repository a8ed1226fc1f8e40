package reassemble

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/mirrorlab"
)

// TestKernelLabWebSocket: real WebSocket libraries talk between the lab's
// ext and prod namespaces — coder/websocket with permessage-deflate and
// context takeover, gorilla/websocket without compression and with
// 256-byte write buffers so messages span many frames. The kernel mirrors
// prod's interface by VXLAN to the target namespace, where decap (with an
// intake opened there) publishes frame batches and this engine reassembles
// them. Every message each side wrote must come out of TAPLINE_MSGS
// complete and with the same SHA-256; inbound-only mirroring gives exactly
// the client's messages.
func TestKernelLabWebSocket(t *testing.T) {
	if err := mirrorlab.Available(); err != nil {
		t.Skip(err)
	}
	for _, inbound := range []bool{false, true} {
		name := "both-directions"
		if inbound {
			name = "inbound-only"
		}
		t.Run(name, func(t *testing.T) {
			runWSLab(t, inbound)
		})
	}
}

// wsLog records the SHA-256 of each data message one side wrote.
type wsLog struct {
	mu   sync.Mutex
	sums map[string][][32]byte // "<client port>/<dir>" -> sums in order
}

func (l *wsLog) add(key string, b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sums[key] = append(l.sums[key], sha256.Sum256(b))
}

func labMessages(seed int64, n int) [][]byte {
	rng := rand.New(rand.NewSource(seed))
	var out [][]byte
	for i := 0; i < n; i++ {
		switch i % 3 {
		case 0: // compressible JSON text
			out = append(out, []byte(fmt.Sprintf(`{"seq":%d,"data":"%s"}`, i, strings.Repeat("tapline ", rng.Intn(6000)))))
		case 1: // random binary, up to 150 KB
			b := make([]byte, 1+rng.Intn(150_000))
			rng.Read(b)
			out = append(out, b)
		default: // small text
			out = append(out, []byte(fmt.Sprintf("ping %d", i)))
		}
	}
	return out
}

func runWSLab(t *testing.T, inbound bool) {
	const shards = 4
	lab := mirrorlab.New(t, mirrorlab.Options{VNI: 4242, InboundOnly: inbound})
	_, url := natstestRun(t)
	_, js := connect(t, url)
	col := collect(t, js)

	var in *udpin.Intake
	if err := mirrorlab.Do(lab.Target, func() (err error) {
		in, err = udpin.Open(udpin.Config{Addrs: []string{lab.TargetAddrPort().String()}, RcvBuf: 64 << 20}, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	dcfg := decap.DefaultConfig()
	dcfg.Common.NATSURL = url
	dcfg.Common.HTTPAddr = ""
	dcfg.Common.Shards = shards
	dcfg.Common.Streams = testStreams
	dcfg.Intake = in
	dcfg.VXLANPort, dcfg.GENEVEPort = lab.DstPort, 0
	dd, _ := labDeps()
	dctx, dcancel := context.WithCancel(context.Background())
	derr := make(chan error, 1)
	go func() { derr <- decap.Run(dctx, dcfg, dd) }()
	t.Cleanup(func() {
		dcancel()
		if err := <-derr; err != nil {
			t.Errorf("decap: %v", err)
		}
	})
	cfg := testConfig(url, shards, "lab")
	cfg.NewDecoder = nil
	cfg.IdleTimeout = time.Hour
	startEngine(t, cfg)

	written := &wsLog{sums: map[string][][32]byte{}}
	ln, err := mirrorlab.Listen(lab.Prod, "tcp", net.JoinHostPort(mirrorlab.ProdAddr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.RemoteAddr[strings.LastIndex(r.RemoteAddr, ":")+1:] + "/s2c"
		if r.URL.Path == "/coder" {
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionContextTakeover})
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.SetReadLimit(1 << 24)
			for {
				typ, b, err := c.Read(r.Context())
				if err != nil {
					return
				}
				reply := append([]byte("echo:"), b...)
				written.add(key, reply)
				if c.Write(r.Context(), typ, reply) != nil {
					return
				}
			}
		}
		up := gorilla.Upgrader{ReadBufferSize: 256, WriteBufferSize: 256}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			reply := append([]byte("echo:"), b...)
			written.add(key, reply)
			if c.WriteMessage(typ, reply) != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "ws://" + ln.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dial := mirrorlab.DialContext(lab.Ext)
	// The client port tells which library a connection is.
	var portsMu sync.Mutex
	libOf := map[string]string{}
	dialAs := func(lib string) func(ctx context.Context, network, addr string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err == nil {
				portsMu.Lock()
				libOf[c.LocalAddr().String()] = lib
				portsMu.Unlock()
			}
			return c, err
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { // coder/websocket, context takeover
		defer wg.Done()
		c, _, err := websocket.Dial(ctx, base+"/coder", &websocket.DialOptions{
			HTTPClient:      &http.Client{Transport: &http.Transport{DialContext: dialAs("coder")}},
			CompressionMode: websocket.CompressionContextTakeover,
		})
		if err != nil {
			errs <- fmt.Errorf("coder dial: %w", err)
			return
		}
		c.SetReadLimit(1 << 24)
		key := "coder"
		for i, m := range labMessages(1, 36) {
			typ := websocket.MessageText
			if i%3 == 1 {
				typ = websocket.MessageBinary
			}
			written.add(key, m)
			if err := c.Write(ctx, typ, m); err != nil {
				errs <- err
				return
			}
			if _, _, err := c.Read(ctx); err != nil {
				errs <- err
				return
			}
		}
		errs <- c.Close(websocket.StatusNormalClosure, "done")
	}()
	go func() { // gorilla/websocket, no compression, small buffers
		defer wg.Done()
		d := gorilla.Dialer{NetDialContext: dialAs("gorilla"), ReadBufferSize: 256, WriteBufferSize: 256}
		c, _, err := d.DialContext(ctx, base+"/gorilla", nil)
		if err != nil {
			errs <- fmt.Errorf("gorilla dial: %w", err)
			return
		}
		key := "gorilla"
		for i, m := range labMessages(2, 36) {
			typ := gorilla.TextMessage
			if i%3 == 1 {
				typ = gorilla.BinaryMessage
			}
			written.add(key, m)
			if err := c.WriteMessage(typ, m); err != nil {
				errs <- err
				return
			}
			if _, _, err := c.ReadMessage(); err != nil {
				errs <- err
				return
			}
		}
		_ = c.WriteMessage(gorilla.CloseMessage, gorilla.FormatCloseMessage(gorilla.CloseNormalClosure, "done"))
		_, _, _ = c.ReadMessage()
		errs <- c.Close()
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, "both connections to close", func() bool { return len(col.closed()) >= 2 })
	col.mu.Lock()
	defer col.mu.Unlock()
	written.mu.Lock()
	defer written.mu.Unlock()
	for _, c := range col.closed2() {
		lib := libOf[c.client]
		if c.open == nil || c.open.Path != "/"+lib {
			// The mirror does not keep the order between the two
			// directions; the causal hold of package tcp delivers the
			// request before the 101 that acknowledges it.
			t.Errorf("%s: open event without the request's path: %+v", lib, c.open)
		}
		port := c.client[strings.LastIndex(c.client, ":")+1:]
		t.Logf("%s %s: open %+v close %+v", lib, c.id, c.open, c.closeEv)
		if lib == "" || c.open == nil || c.open.Protocol != "websocket" {
			t.Errorf("%s: open %+v, client %s", lib, c.open, c.client)
		}
		check := func(dir proto.Direction, want [][32]byte) {
			var got []*gotMsg
			for _, m := range c.msgs[dir] {
				if m.opcode == proto.OpText || m.opcode == proto.OpBinary {
					got = append(got, m)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%s %s: %d messages, want %d", lib, dir, len(got), len(want))
				return
			}
			for i, m := range got {
				if !m.complete || sha256.Sum256(m.body) != want[i] {
					t.Errorf("%s %s #%d: complete %v, %d B, digest differs: %v", lib, dir, i, m.complete, len(m.body), sha256.Sum256(m.body) != want[i])
				}
			}
		}
		check(proto.ClientToServer, written.sums[lib])
		if inbound {
			if n := len(c.msgs[proto.ServerToClient]); n != 0 {
				t.Errorf("%s: %d server messages in an inbound-only mirror", lib, n)
			}
		} else {
			check(proto.ServerToClient, written.sums[port+"/s2c"])
		}
		if len(c.gaps) != 0 {
			t.Errorf("%s: gaps %+v", lib, c.gaps)
		}
		compressed := 0
		for _, m := range c.msgs[proto.ClientToServer] {
			if m.compressed {
				compressed++
			}
		}
		t.Logf("%s: %d client messages compressed on the wire", lib, compressed)
		if lib == "coder" && compressed == 0 {
			t.Errorf("coder: no compressed message: permessage-deflate not exercised")
		}
	}
}
