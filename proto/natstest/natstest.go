// Package natstest runs an embedded NATS server with JetStream: the local
// default of the all-in-one binary and the real server every test starts.
package natstest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configure an embedded server.
type Options struct {
	// Host and Port to listen on; Port -1 picks a free port. Defaults:
	// 127.0.0.1 and -1.
	Host string
	Port int
	// StoreDir holds JetStream files. Empty: a new temporary directory.
	StoreDir string
	// MaxStore bounds JetStream file storage in bytes (0: 64 GiB, more than
	// the default limits of all four streams together, 17.25 GiB).
	MaxStore int64
	// MaxPayload raises the per-message limit (0: 8 MiB, which fits a full
	// chunk and a large frame batch).
	MaxPayload int32
	// Cluster makes the server one node of a JetStream cluster: its node
	// name, the cluster's name, the route port it listens on and the route
	// URLs (nats-route://host:port) of the other nodes. Zero: a single
	// server.
	Cluster ClusterNode
}

// ClusterNode is one node's cluster configuration (see Options.Cluster).
type ClusterNode struct {
	Name    string   // server name, unique in the cluster
	Cluster string   // cluster name, the same on every node
	Port    int      // route listen port
	Routes  []string // nats-route://host:port of the other nodes
}

// Start runs an embedded JetStream server and waits until it accepts
// connections.
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = -1
	}
	if o.StoreDir == "" {
		dir, err := os.MkdirTemp("", "tapline-nats-*")
		if err != nil {
			return nil, err
		}
		o.StoreDir = dir
	}
	if o.MaxStore == 0 {
		o.MaxStore = 64 << 30
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = 8 << 20
	}
	so := &server.Options{
		Host:               o.Host,
		Port:               o.Port,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamMaxStore:  o.MaxStore,
		JetStreamMaxMemory: 1 << 30,
		MaxPayload:         o.MaxPayload,
		NoSigs:             true,
		NoLog:              true,
	}
	if err := o.Cluster.apply(so, o.Host); err != nil {
		return nil, err
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("natstest: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natstest: server not ready after 10s")
	}
	return srv, nil
}

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
