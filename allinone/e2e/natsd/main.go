// Command natsd is a test-only JetStream server for the end-to-end tests:
// the e2e package runs it inside a mirror lab's target namespace (ip netns
// exec) so the stage processes there can reach it on that namespace's
// loopback, and kills and restarts it (same port, same store) to test a
// NATS restart. It prints "ready" on standard output once it accepts
// connections and shuts down on SIGTERM or SIGINT. With --cluster-port it
// is one node of a JetStream cluster (--name, --routes to the others).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tapline/tapline/proto/natsserver"
)

func main() {
	host := flag.String("host", "127.0.0.1", "listen host")
	port := flag.Int("port", 4222, "listen port")
	store := flag.String("store", "", "JetStream store directory (required)")
	name := flag.String("name", "", "server name: with --cluster-port, one node of a JetStream cluster")
	clusterPort := flag.Int("cluster-port", 0, "route listen port of this cluster node")
	routes := flag.String("routes", "", "comma-separated nats-route://host:port of the other nodes")
	flag.Parse()
	if *store == "" {
		fmt.Fprintln(os.Stderr, "natsd: --store is required")
		os.Exit(2)
	}
	o := natsserver.Options{Host: *host, Port: *port, StoreDir: *store}
	if *clusterPort != 0 {
		o.Cluster = natsserver.ClusterNode{Name: *name, Cluster: "tapline", Port: *clusterPort}
		if *routes != "" {
			o.Cluster.Routes = strings.Split(*routes, ",")
		}
	}
	srv, err := natsserver.Start(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Shutdown()
	srv.WaitForShutdown()
}
