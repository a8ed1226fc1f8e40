package replay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

// TestCoalescer: held writes reach the socket as one write when released,
// in order; a confirmation writes what is held and lets its ping out at
// once; a full buffer goes out by itself; a failed write is returned by
// every later write.
func TestCoalescer(t *testing.T) {
	client, server := tcpPair(t)
	cc := &countingConn{Conn: client}
	co := &coalescer{Conn: cc}
	var want bytes.Buffer
	write := func(p []byte) {
		t.Helper()
		if n, err := co.Write(p); err != nil || n != len(p) {
			t.Fatalf("write: %d, %v", n, err)
		}
		want.Write(p)
	}

	co.hold()
	for i := range 100 {
		write([]byte{byte(i), 1, 2, 3})
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d socket writes while held", n)
	}
	if err := co.release(); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load(); n != 1 {
		t.Fatalf("%d socket writes for 100 held frames, want 1", n)
	}
	write([]byte("not held"))
	if n := cc.writes.Load(); n != 2 {
		t.Fatalf("a write after release did not go out at once (%d writes)", n)
	}

	// A confirmation while held: what is held goes out, then the ping.
	co.hold()
	write([]byte("frame"))
	if err := co.confirming(); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load(); n != 3 {
		t.Fatalf("confirming did not write the held frame (%d writes)", n)
	}
	write([]byte("ping"))
	if n := cc.writes.Load(); n != 4 {
		t.Fatalf("the ping after confirming waited in the buffer (%d writes)", n)
	}
	write([]byte("held again"))
	if n := cc.writes.Load(); n != 4 {
		t.Fatalf("the write after the ping was not held (%d writes)", n)
	}

	// More than coalesceMax: the buffer goes out with the write that
	// overflows it (one writev), the rest is held.
	big := bytes.Repeat([]byte{7}, coalesceMax)
	write(big)
	n := cc.writes.Load() // 5 (6 here: countingConn has no writev)
	if n <= 4 {
		t.Fatalf("a full buffer was not written (%d writes)", n)
	}
	write([]byte("tail"))
	if m := cc.writes.Load(); m != n {
		t.Fatalf("the write after a full buffer was not held (%d writes)", m)
	}
	if err := co.release(); err != nil {
		t.Fatal(err)
	}

	got := make([]byte, want.Len())
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the bytes read differ from the bytes written: order or content lost")
	}

	// A failed socket write is kept: the next write and release fail too.
	_ = client.Close()
	co.hold()
	if _, err := co.Write([]byte("lost")); err != nil {
		t.Fatalf("a held write failed early: %v", err)
	}
	if err := co.release(); err == nil {
		t.Fatal("release on a closed connection succeeded")
	}
	if _, err := co.Write([]byte("after")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after a failed release: %v, want the connection's error", err)
	}
}
