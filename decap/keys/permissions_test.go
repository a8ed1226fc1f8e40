package keys

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tapline/tapline/proto"
	"github.com/tapline/tapline/proto/stage"
)

// authConf is the NATS users snippet of docs/production-keys.md.
const authConf = "../../deploy/nats/keys-auth.conf"

// violations records the permission violations the server reports to one
// client.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

// wait waits for a violation mentioning subject.
func (v *violations) wait(t *testing.T, kind, subject string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, e := range v.errs {
			if strings.Contains(e, "Permissions Violation for "+kind) && strings.Contains(e, subject) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no permissions violation for %s %q (got %v)", kind, subject, v.errs)
}

func connectAs(t *testing.T, url, user, password, inbox string) (*nats.Conn, jetstream.JetStream, *violations) {
	t.Helper()
	v := &violations{}
	opts := []nats.Option{nats.UserInfo(user, password), nats.ErrorHandler(v.handler)}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, v
}

// TestPermissionsSnippet runs a NATS server with deploy/nats/keys-auth.conf
// (the snippet docs/production-keys.md shows) and checks what it promises:
// the producer publishes keys with `decap keys` and can neither read them
// nor publish anything else; reassemble reads TAPLINE_KEYS; another stage
// cannot reach the keys by subscription, JetStream API or reply snooping.
func TestPermissionsSnippet(t *testing.T) {
	conf, err := os.ReadFile(authConf)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/production-keys.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), string(conf)) {
		t.Fatalf("docs/production-keys.md does not show %s as it is", authConf)
	}
	opts, err := server.ProcessConfigFile(authConf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	url := srv.ClientURL()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// reassemble provisions the stream (the producer may not).
	_, rjs, _ := connectAs(t, url, "reassemble", "change-me-reassemble", "_INBOX_reassemble")
	if err := proto.EnsureStreams(ctx, rjs, proto.StreamOptions{}, proto.KeysStream); err != nil {
		t.Fatal(err)
	}

	// The other stage watches everything it may subscribe to.
	snc, sjs, sv := connectAs(t, url, "stage", "change-me-stage", "")
	var seen []string
	var seenMu sync.Mutex
	all, err := snc.Subscribe(">", func(m *nats.Msg) {
		seenMu.Lock()
		seen = append(seen, m.Subject+" "+string(m.Data))
		seenMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Unsubscribe()
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The producer ships a key log with decap keys.
	path := filepath.Join(t.TempDir(), "keylog")
	lines := keyLines("perm", 0, 20)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(url, path)
	cfg.Common.NATSUser, cfg.Common.NATSPassword = "keys-producer", "change-me-producer"
	cfg.Common.NATSInboxPrefix = "_INBOX_keys"
	cfg.Provision = false
	d, _ := stage.TestDeps("decap-keys")
	if err := Run(ctx, cfg, d); err != nil {
		t.Fatalf("decap keys as keys-producer: %v", err)
	}
	// Provisioning is a JetStream API call it is not allowed.
	cfg.Provision, cfg.Timeout = true, time.Second
	d, _ = stage.TestDeps("decap-keys")
	if err := Run(ctx, cfg, d); err == nil {
		t.Error("keys-producer could provision the stream")
	}

	// The producer may not subscribe to keys, read the stream, or publish
	// anywhere else.
	pnc, pjs, pv := connectAs(t, url, "keys-producer", "change-me-producer", "_INBOX_keys")
	if _, err := pnc.SubscribeSync(proto.KeysPrefix + ".>"); err != nil {
		t.Fatal(err)
	}
	pnc.Flush()
	pv.wait(t, "Subscription", proto.KeysPrefix+".>")
	if err := pnc.Publish(proto.MsgsSubject(1, 0), []byte("x")); err != nil {
		t.Fatal(err)
	}
	pnc.Flush()
	pv.wait(t, "Publish", proto.MsgsSubject(1, 0))
	short, scancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := pjs.Stream(short, proto.KeysStream); err == nil {
		t.Error("keys-producer could look up TAPLINE_KEYS")
	}
	scancel()

	// reassemble reads every line.
	rs, err := rjs.Stream(ctx, proto.KeysStream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := rs.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < len(lines) {
		b, err := cons.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			for _, l := range strings.SplitAfter(string(m.Data()), "\n") {
				if l != "" {
					got = append(got, l)
				}
			}
		}
		if n == 0 {
			t.Fatalf("reassemble read %d of %d lines", len(got), len(lines))
		}
	}

	// The other stage can neither subscribe to keys nor use the API on
	// the stream, and saw no key line on its ">" subscription: not the
	// publishes, not reassemble's pull deliveries.
	if _, err := snc.SubscribeSync(proto.KeysPrefix + ".>"); err != nil {
		t.Fatal(err)
	}
	snc.Flush()
	sv.wait(t, "Subscription", proto.KeysPrefix+".>")
	short, scancel = context.WithTimeout(ctx, 2*time.Second)
	if _, err := sjs.Stream(short, proto.KeysStream); err == nil {
		t.Error("stage could look up TAPLINE_KEYS")
	}
	if _, err := sjs.CreateOrUpdateConsumer(short, proto.KeysStream, jetstream.ConsumerConfig{}); err == nil {
		t.Error("stage could create a consumer on TAPLINE_KEYS")
	}
	scancel()
	if _, err := snc.Request("$JS.API.DIRECT.GET."+proto.KeysStream, []byte(`{"seq":1}`), time.Second); err == nil {
		t.Error("stage could get a key message directly")
	}
	if _, err := snc.Request("$JS.API.STREAM.MSG.GET."+proto.KeysStream, []byte(`{"seq":1}`), time.Second); err == nil {
		t.Error("stage could get a key message")
	}
	snc.Flush()
	seenMu.Lock()
	defer seenMu.Unlock()
	for _, s := range seen {
		subj := strings.Fields(s)[0]
		for _, p := range []string{proto.KeysPrefix + ".", "_INBOX_keys.", "_INBOX_reassemble."} {
			if strings.HasPrefix(subj, p) {
				t.Fatalf("stage received a message on %s", subj)
			}
		}
		for _, l := range lines {
			if strings.Contains(s, strings.Fields(l)[2]) {
				t.Fatalf("stage saw a secret on %s", strings.Fields(s)[0])
			}
		}
	}
}
