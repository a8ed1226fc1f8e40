package decap

import (
	"context"
	"testing"
	"time"

	"github.com/tapline/tapline/decap/udpin"
	"github.com/tapline/tapline/proto/natstest"
	"github.com/tapline/tapline/proto/stage"
)

// TestStopPublishesQueued: datagrams still in the kernel's receive queue
// when decap is told to stop are read, decoded and published before Run
// returns.
func TestStopPublishesQueued(t *testing.T) {
	const sent = 5000
	_, url := natstest.Run(t)
	in, err := udpin.Open(udpin.Config{Addrs: []string{"127.0.0.1:0"}, Sockets: 1, RcvBuf: 64 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	port := in.Addrs()[0].Port()
	// Queued before decap reads: the sockets are open from udpin.Open.
	c := dialUDP(t, port)
	dg := vxlanDatagram(7)
	for range sent {
		if _, err := c.Write(dg); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.Common.NATSURL = url
	cfg.Common.HTTPAddr = ""
	cfg.Intake = in
	cfg.VXLANPort, cfg.GENEVEPort = int(port), 0
	d, reg := stage.TestDeps("decap")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg, d) }()
	// Stop as soon as the intake has read its first batch: most datagrams
	// are still queued.
	deadline := time.Now().Add(time.Minute)
	for in.Stats().Datagrams == 0 {
		if time.Now().After(deadline) {
			t.Fatal("decap read nothing")
		}
		time.Sleep(100 * time.Microsecond)
	}
	atStop := in.Stats().Datagrams
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("decap did not stop")
	}
	st := in.Stats()
	got := len(fetchFrames(t, url))
	t.Logf("read %d before the stop, %d in all; %d frames published; stop dropped %d", atStop, st.Datagrams, got, st.StopDropped)
	if st.Datagrams != sent || st.StopDropped != 0 || st.KernelDrops != 0 {
		t.Errorf("intake read %d of %d (stop dropped %d, kernel drops %d)", st.Datagrams, sent, st.StopDropped, st.KernelDrops)
	}
	if got != sent {
		t.Errorf("%d frames published, want %d", got, sent)
	}
	if v := metric(t, reg, "tapline_decap_udp_stop_dropped_total"); v != 0 {
		t.Errorf("tapline_decap_udp_stop_dropped_total = %v", v)
	}
}
