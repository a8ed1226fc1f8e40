// Package natsserver runs an embedded NATS server with JetStream: the local
// default of the all-in-one binary (`tapline run`), and the server every
// test starts through natstest. It is production code: it never imports
// testing.
package natsserver

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsserver: server not ready after 10s")
	}
	return srv, nil
}

// apply sets the cluster options of one node on so.
func (c ClusterNode) apply(so *server.Options, host string) error {
	if c.Name == "" && c.Cluster == "" && c.Port == 0 && len(c.Routes) == 0 {
		return nil
	}
	if c.Name == "" || c.Cluster == "" || c.Port == 0 {
		return errors.New("natsserver: a cluster node needs a name, a cluster name and a route port")
	}
	so.ServerName = c.Name
	so.Cluster = server.ClusterOpts{Name: c.Cluster, Host: host, Port: c.Port}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return fmt.Errorf("natsserver: route %q: %w", r, err)
		}
		so.Routes = append(so.Routes, u)
	}
	return nil
}
