package allinone

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/natstest"
)

func loadClusterCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "compose.yaml"), filepath.Join(repoRoot, "deploy/compose.cluster.yaml")},
		cli.WithWorkingDirectory(repoRoot))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml + deploy/compose.cluster.yaml: %v", err)
	}
	return p
}

// TestComposeClusterOverride: the cluster override runs three NATS nodes
// from cluster.conf, each with its own name and store, and gives every
// stage all three servers and 3 stream replicas.
func TestComposeClusterOverride(t *testing.T) {
	p := loadClusterCompose(t)
	nodes := []string{"nats", "nats-2", "nats-3"}
	names, stores := map[string]bool{}, map[string]bool{}
	for _, n := range nodes {
		svc, ok := p.Services[n]
		if !ok {
			t.Fatalf("no service %s", n)
		}
		if !slices.Contains(svc.Command, "/etc/nats/cluster.conf") {
			t.Errorf("%s runs %v, not cluster.conf", n, svc.Command)
		}
		names[env(t, svc, "NATS_SERVER_NAME")] = true
		for _, v := range svc.Volumes {
			if v.Target == "/data" {
				stores[v.Source] = true
			}
			if v.Target == "/etc/nats" && !strings.HasSuffix(v.Source, filepath.Join("deploy", "nats")) {
				t.Errorf("%s mounts %s on /etc/nats, want deploy/nats", n, v.Source)
			}
		}
		if svc.HealthCheck == nil {
			t.Errorf("%s: no health check", n)
		}
	}
	if len(names) != 3 || len(stores) != 3 {
		t.Errorf("server names %v, stores %v: want three distinct of each", names, stores)
	}
	for _, st := range []string{"decap", "reassemble", "replay", "archive"} {
		svc := p.Services[st]
		for _, n := range nodes {
			if !strings.Contains(env(t, svc, "NATS_URL"), "nats://"+n+":4222") {
				t.Errorf("%s: NATS_URL %q lacks %s", st, env(t, svc, "NATS_URL"), n)
			}
			if _, ok := svc.DependsOn[n]; !ok {
				t.Errorf("%s does not wait for %s", st, n)
			}
		}
		if got := env(t, svc, "TAPLINE_STREAM_REPLICAS"); got != "3" {
			t.Errorf("%s: TAPLINE_STREAM_REPLICAS %q, want 3", st, got)
		}
	}
	if _, ok := p.Services["archive"].DependsOn["s3-init"]; !ok {
		t.Error("archive no longer waits for its bucket")
	}
}

// TestComposeClusterConf runs three real servers from deploy/nats/
// cluster.conf (loopback ports instead of the compose host names) with
// compose's passwords: they form one JetStream cluster, the stage users
// authenticate, and reassemble's user creates R3 streams that decap's user
// publishes into.
func TestComposeClusterConf(t *testing.T) {
	p := loadClusterCompose(t)
	ports, err := natstest.FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	var routes []*url.URL
	for i := range 3 {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[3+i])})
	}
	var urls []string
	for i, n := range []string{"nats", "nats-2", "nats-3"} {
		svc := p.Services[n]
		setNATSConfEnv(t, svc)
		t.Setenv("NATS_SERVER_NAME", env(t, svc, "NATS_SERVER_NAME"))
		opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, "deploy/nats/cluster.conf"))
		if err != nil {
			t.Fatalf("deploy/nats/cluster.conf: %v", err)
		}
		if opts.Cluster.Name != "tapline" || len(opts.Routes) != 3 {
			t.Fatalf("cluster.conf: cluster %q with %d routes, want tapline with 3", opts.Cluster.Name, len(opts.Routes))
		}
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", ports[i], 0
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", ports[3+i]
		opts.Routes = routes
		opts.StoreDir = t.TempDir()
		opts.NoLog, opts.NoSigs = true, true
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		if !srv.ReadyForConnections(30 * time.Second) {
			t.Fatalf("%s not ready", n)
		}
		urls = append(urls, srv.ClientURL())
	}
	all := strings.Join(urls, ",")
	connect := func(stage string) (*nats.Conn, jetstream.JetStream) {
		t.Helper()
		svc := p.Services[stage]
		nc, err := nats.Connect(all, nats.UserInfo(env(t, svc, "TAPLINE_NATS_USER"), env(t, svc, "TAPLINE_NATS_PASSWORD")),
			nats.CustomInboxPrefix(inboxOf(svc)))
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}
	_, rjs := connect("reassemble")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := rjs.AccountInfo(actx)
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("JetStream of the cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	o := proto.StreamOptions{Replicas: 3, Frames: proto.StreamLimits{MaxBytes: 64 << 20}, Msgs: proto.StreamLimits{MaxBytes: 64 << 20}, Events: proto.StreamLimits{MaxBytes: 16 << 20}}
	if err := proto.EnsureStreams(ctx, rjs, o, proto.FramesStream, proto.MsgsStream, proto.EventsStream); err != nil {
		t.Fatalf("R3 streams: %v", err)
	}
	_, djs := connect("decap")
	if _, err := djs.Publish(ctx, proto.FramesSubject(1, 0), []byte("frame batch")); err != nil {
		t.Fatalf("decap publishes into the R3 frames stream: %v", err)
	}
	info, err := rjs.Stream(ctx, proto.FramesStream)
	if err != nil {
		t.Fatal(err)
	}
	ci := info.CachedInfo()
	if ci.Config.Replicas != 3 || ci.Cluster == nil || len(ci.Cluster.Replicas) != 2 {
		t.Fatalf("frames stream: replicas %d, cluster %+v: want a leader and two replicas", ci.Config.Replicas, ci.Cluster)
	}
	if ci.State.Msgs != 1 {
		t.Fatalf("frames stream holds %d messages, want 1", ci.State.Msgs)
	}
}

// inboxOf is the inbox prefix compose gives a stage (the NATS default when
// none).
func inboxOf(svc types.ServiceConfig) string {
	if v, ok := svc.Environment["TAPLINE_NATS_INBOX_PREFIX"]; ok && v != nil {
		return *v
	}
	return "_INBOX"
}
