package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// BenchmarkE2ELatency measures, in the kernel lab, the time from the
// external system writing a message to the test system receiving it from
// replay (listen mode), at a fixed rate (TAPLINE_E2E_RATE messages/s,
// default 100, of 4 KiB, for TAPLINE_E2E_SECONDS, default 10). The
// baseline, measured on the same messages, is production's own latency:
// the external system writing to the production client reading.
func BenchmarkE2ELatency(b *testing.B) {
	needLab(b)
	rate := envInt("TAPLINE_E2E_RATE", 100)
	secs := envInt("TAPLINE_E2E_SECONDS", 10)
	n := rate * secs
	for range b.N {
		lab := mirrorlab.New(b, mirrorlab.Options{InboundOnly: true})
		ext := StartServer(b, lab.Ext, mirrorlab.ExtAddr, nil, false)
		p := NewPipeline(b, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String()})
		tsConn := dialTestSystem(b, p, replayListen)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		c, err := Dial(ctx, lab.Prod, "ws://"+ext.Addr.String()+"/feed", nil)
		if err != nil {
			b.Fatal(err)
		}
		conns, err := ext.Accepted(ctx, 1)
		if err != nil {
			b.Fatal(err)
		}
		sc := conns[0]
		sentAt := make([]time.Time, n)
		prodLat := make([]time.Duration, n)
		e2eLat := make([]time.Duration, n)
		var mu sync.Mutex
		reader := func(c *websocket.Conn, lat []time.Duration, done chan<- error) {
			for got := 0; got < n; got++ {
				_, data, err := c.Read(ctx)
				now := time.Now()
				if err != nil {
					done <- err
					return
				}
				i := int(binary.BigEndian.Uint64(data))
				mu.Lock()
				lat[i] = now.Sub(sentAt[i])
				mu.Unlock()
			}
			done <- nil
		}
		prodDone, tsDone := make(chan error, 1), make(chan error, 1)
		go reader(c, prodLat, prodDone)
		go reader(tsConn, e2eLat, tsDone)
		msg := make([]byte, 4<<10)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		b.ResetTimer()
		for i := range n {
			<-tick.C
			binary.BigEndian.PutUint64(msg, uint64(i))
			mu.Lock()
			sentAt[i] = time.Now()
			mu.Unlock()
			if err := sc.C.Write(ctx, websocket.MessageBinary, msg); err != nil {
				b.Fatal(err)
			}
		}
		tick.Stop()
		for _, ch := range []chan error{prodDone, tsDone} {
			if err := <-ch; err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		pp50, pp99 := percentiles(prodLat)
		ep50, ep99 := percentiles(e2eLat)
		b.ReportMetric(float64(ep50.Microseconds())/1000, "e2e_p50_ms")
		b.ReportMetric(float64(ep99.Microseconds())/1000, "e2e_p99_ms")
		b.ReportMetric(float64(pp50.Microseconds())/1000, "prod_p50_ms")
		b.ReportMetric(float64(pp99.Microseconds())/1000, "prod_p99_ms")
		fmt.Printf("e2e latency: %d messages of 4 KiB at %d/s: capture->test system p50 %v p99 %v; production (ext->prod) p50 %v p99 %v; ratio p50 %.0fx p99 %.0fx\n",
			n, rate, ep50, ep99, pp50, pp99, float64(ep50)/float64(pp50), float64(ep99)/float64(pp99))
		cancel()
		_ = c.CloseNow()
	}
}

// BenchmarkE2EPeakRSS relays one 100 MB message (TAPLINE_E2E_MB) through
// the pipeline and reports every stage's peak resident memory (VmHWM)
// afterwards, as a ratio to the message size.
func BenchmarkE2EPeakRSS(b *testing.B) {
	needLab(b)
	mb := int64(envInt("TAPLINE_E2E_MB", 100))
	for range b.N {
		lab := mirrorlab.New(b, mirrorlab.Options{InboundOnly: true})
		ext := StartServer(b, lab.Ext, mirrorlab.ExtAddr, nil, false)
		p := NewPipeline(b, lab, PipelineOptions{Listen: replayListen + "=" + ext.Addr.String()})
		ts := ConnectTestSystem(b, p, replayListen)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		c, err := Dial(ctx, lab.Prod, "ws://"+ext.Addr.String()+"/feed", nil)
		if err != nil {
			b.Fatal(err)
		}
		prod := Collect(c)
		conns, err := ext.Accepted(ctx, 1)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		m, err := send(ctx, conns[0].C, websocket.MessageBinary, payload("binary", 1, mb<<20), 64<<10)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := prod.Wait(ctx, 1); err != nil {
			b.Fatal(err)
		}
		got, err := ts.Wait(ctx, 1)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		requireSame(b, "test system", []Msg{m}, got)
		requireArchiveComplete(b, p)
		line := fmt.Sprintf("peak RSS relaying one %d MB message (send to test system %v):", mb, took.Round(time.Millisecond))
		for _, name := range []string{"nats", "decap", "reassemble", "replay", "archive"} {
			hwm, err := vmHWM(p.Procs[name].Pid())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(hwm)/(1<<20), name+"_MiB")
			line += fmt.Sprintf(" %s %d MiB (%.2fx message);", name, hwm>>20, float64(hwm)/float64(mb<<20))
		}
		fmt.Println(line)
		cancel()
		_ = c.CloseNow()
	}
}

// vmHWM is a process's peak resident set size in bytes.
func vmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
