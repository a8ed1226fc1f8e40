package natsserver

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestStartServesJetStream(t *testing.T) {
	srv, err := Start(Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if !srv.JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	if got := nc.MaxPayload(); got != 8<<20 {
		t.Fatalf("max payload %d, want 8 MiB", got)
	}
}

func TestStartRefusesHalfAClusterNode(t *testing.T) {
	_, err := Start(Options{StoreDir: t.TempDir(), Cluster: ClusterNode{Name: "n1"}})
	if err == nil || !strings.Contains(err.Error(), "route port") {
		t.Fatalf("got %v, want an error naming what a cluster node needs", err)
	}
}
