// Package natstest gives tests a real embedded NATS server with JetStream
// (natsserver), single or clustered, and clients that survive its restarts.
package natstest

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto/natsserver"
)

// Options configure an embedded server (natsserver.Options).
type Options = natsserver.Options

// ClusterNode is one node's cluster configuration (natsserver.ClusterNode).
type ClusterNode = natsserver.ClusterNode

// Start runs an embedded JetStream server (natsserver.Start).
func Start(o Options) (*server.Server, error) { return natsserver.Start(o) }

// Run starts a server for one test in t.TempDir() and shuts it down when the
// test ends. It returns the client URL.
func Run(t testing.TB) (*server.Server, string) {
	t.Helper()
	srv, err := Start(Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv, srv.ClientURL()
}

// Restart shuts srv down and starts a new server on the same port with the
// same JetStream store, as an operator restarting NATS would. The new server
// is shut down when the test ends.
func Restart(t testing.TB, srv *server.Server) *server.Server {
	t.Helper()
	port := srv.Addr().(*net.TCPAddr).Port
	dir := srv.JetStreamConfig().StoreDir
	srv.Shutdown()
	srv.WaitForShutdown()
	// The store directory of JetStreamConfig ends in "jetstream"; the
	// server adds that itself.
	dir = filepath.Dir(dir)
	var next *server.Server
	var err error
	for range 50 {
		if next, err = Start(Options{Port: port, StoreDir: dir}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		next.Shutdown()
		next.WaitForShutdown()
	})
	return next
}

// Connect is a test's JetStream client for url: it reconnects forever (so
// it survives Restart) and is closed when the test ends.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// StoredMsgs reads every message stream holds, in stream order, through an
// ordered consumer: what a test checks the stored order and duplicates of.
func StoredMsgs(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	var out []jetstream.Msg
	for {
		m, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		md, _ := m.Metadata()
		if md.Sequence.Stream >= info.State.LastSeq {
			return out
		}
	}
}
