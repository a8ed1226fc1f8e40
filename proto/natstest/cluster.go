package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of embedded servers on loopback, each
// with its own store directory, connected by routes: the production shape
// (three nodes, R3 streams) in one test process.
type Cluster struct {
	mu      sync.Mutex
	servers []*server.Server // nil: the node is down
	opts    []Options
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1 (bound and
// released, so they are free unless something takes them in between).
func FreePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ClusterNodes returns the options of the n nodes of a cluster on
// 127.0.0.1 with free client and route ports and store directories under
// dir (node i in dir/n<i>).
func ClusterNodes(n int, dir string) ([]Options, error) {
	ports, err := FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	var routes []string
	for i := range n {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	opts := make([]Options, n)
	for i := range n {
		opts[i] = Options{Port: ports[i], StoreDir: filepath.Join(dir, "n"+strconv.Itoa(i)),
			Cluster: ClusterNode{Name: "n" + strconv.Itoa(i), Cluster: "tapline", Port: ports[n+i]}}
		for j := range n {
			if j != i {
				opts[i].Cluster.Routes = append(opts[i].Cluster.Routes, routes[j])
			}
		}
	}
	return opts, nil
}

// RunCluster starts an n-node cluster for one test (stores in
// t.TempDir()), waits until JetStream has a meta leader and shuts every
// node down when the test ends.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	opts, err := ClusterNodes(n, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{servers: make([]*server.Server, n), opts: opts}
	t.Cleanup(c.Shutdown)
	// The nodes start together: each waits for its routes only in the
	// background.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var srv *server.Server
			srv, errs[i] = Start(opts[i])
			c.mu.Lock()
			c.servers[i] = srv
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(time.Minute); err != nil {
		t.Fatal(err)
	}
	return c
}

// URLs is the comma-separated client URLs of every node, as a stage's
// --nats-url.
func (c *Cluster) URLs() string {
	var us []string
	for _, o := range c.opts {
		us = append(us, "nats://127.0.0.1:"+strconv.Itoa(o.Port))
	}
	return strings.Join(us, ",")
}

// Server returns node i (nil while it is down).
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// Kill stops node i at once, as a crashed node.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	srv := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts node i again on its ports with its store.
func (c *Cluster) Restart(i int) error {
	var srv *server.Server
	var err error
	for range 50 {
		if srv, err = Start(c.opts[i]); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.servers[i] = srv
	c.mu.Unlock()
	return nil
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.opts {
		c.Kill(i)
	}
}

// WaitReady waits until the cluster's JetStream answers account requests
// (a meta leader is elected) through its client URLs.
func (c *Cluster) WaitReady(d time.Duration) error {
	return WaitJetStream(c.URLs(), d)
}

// WaitJetStream waits until JetStream at urls answers an account info
// request, or d passes.
func WaitJetStream(urls string, d time.Duration) error {
	nc, err := nats.Connect(urls, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natstest: JetStream not ready after %s: %w", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StreamLeader returns the index of the node leading stream name, or -1.
func (c *Cluster) StreamLeader(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, srv := range c.servers {
		if srv != nil && srv.JetStreamIsStreamLeader("$G", name) {
			return i
		}
	}
	return -1
}
