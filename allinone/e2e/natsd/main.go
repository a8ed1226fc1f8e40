// Command natsd is a test-only JetStream server for the end-to-end tests:
// the e2e package runs it inside a mirror lab's target namespace (ip netns
// exec) so the stage processes there can reach it on that namespace's
// loopback, and kills and restarts it (same port, same store) to test a
// NATS restart. It prints "ready" on standard output once it accepts
// connections and shuts down on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tapline/tapline/proto/natstest"
)

func main() {
	host := flag.String("host", "127.0.0.1", "listen host")
	port := flag.Int("port", 4222, "listen port")
	store := flag.String("store", "", "JetStream store directory (required)")
	flag.Parse()
	if *store == "" {
		fmt.Fprintln(os.Stderr, "natsd: --store is required")
		os.Exit(2)
	}
	srv, err := natstest.Start(natstest.Options{Host: *host, Port: *port, StoreDir: *store})
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
