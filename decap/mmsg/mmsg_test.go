package mmsg

import (
	"bytes"
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A batch of loopback datagrams read with one call: each message's bytes
// (cut at the slot, with the full length in Hdrs[i].Len under MSG_TRUNC),
// its source address; the headers are reset for the next call; closing
// the socket ends Loop with nil.
func TestLoopReadsBatches(t *testing.T) {
	conn, raw, out := loopback(t)
	sent := [][]byte{[]byte("one"), bytes.Repeat([]byte("x"), 100), []byte("three")}
	for _, p := range sent {
		if _, err := out.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	r := New[unix.RawSockaddrInet4](4, 64, 64)
	var got [][]byte
	var lens []int
	srcPort := out.LocalAddr().(*net.UDPAddr).Port
	done := make(chan error, 1)
	go func() {
		done <- r.Loop(raw, unix.MSG_TRUNC, func(n int) {
			for i := range n {
				got = append(got, bytes.Clone(r.Data(i)))
				lens = append(lens, int(r.Hdrs[i].Len))
				port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&r.Names[i].Port))[:])
				if int(port) != srcPort || r.Names[i].Addr != [4]byte{127, 0, 0, 1} {
					t.Errorf("message %d from %v:%d, want 127.0.0.1:%d", i, r.Names[i].Addr, port, srcPort)
				}
			}
			if len(got) == len(sent) {
				conn.Close()
			}
		})
	}()
	if err := <-done; err != nil {
		t.Fatalf("Loop: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("%d messages, want 3", len(got))
	}
	for i, p := range sent {
		want := p[:min(len(p), r.Slot())]
		if !bytes.Equal(got[i], want) || lens[i] != len(p) {
			t.Errorf("message %d: %q (length %d), want %q (length %d)", i, got[i], lens[i], want, len(p))
		}
	}
}

// TryRead never waits: 0 on an empty queue, the messages queued otherwise
// (also past the socket's read deadline), and an IsClosed error once the
// socket is closed.
func TestTryRead(t *testing.T) {
	conn, raw, out := loopback(t)
	r := New[unix.RawSockaddrInet4](4, 64, 64)
	if n, err := r.TryRead(raw, 0); n != 0 || err != nil {
		t.Fatalf("empty queue: %d, %v", n, err)
	}
	for _, p := range []string{"a", "bb"} {
		if _, err := out.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.SetReadDeadline(time.Unix(0, 1))
	var got []string
	for deadline := time.Now().Add(5 * time.Second); len(got) < 2 && time.Now().Before(deadline); {
		n, err := r.TryRead(raw, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, string(r.Data(i)))
		}
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "bb" {
		t.Fatalf("read %q, want a and bb", got)
	}
	conn.Close()
	if n, err := r.TryRead(raw, 0); n != 0 || !IsClosed(err) {
		t.Fatalf("closed: %d, %v", n, err)
	}
}

// loopback is a UDP socket on 127.0.0.1, its raw connection, and a socket
// sending to it; the test closes the sender, each test its receiver.
func loopback(t *testing.T) (conn *net.UDPConn, raw syscall.RawConn, out *net.UDPConn) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	raw, err = conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	out, err = net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return conn, raw, out
}
