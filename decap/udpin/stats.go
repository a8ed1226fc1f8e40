package udpin

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is a snapshot of an intake's counters.
type Stats struct {
	// Datagrams and Bytes handed to the handler.
	Datagrams, Bytes uint64
	// Truncated counts datagrams larger than MaxDatagram, dropped.
	Truncated uint64
	// KernelDrops counts datagrams the kernel dropped on the intake's
	// sockets (receive buffer full): /proc/net/udp{,6} "drops", or the
	// latest SO_RXQ_OVFL value when /proc is unreadable. Drops after the
	// stop began are StopRefused instead.
	KernelDrops uint64
	// StopDropped counts datagrams still queued when the stop read ended
	// (Config.StopRead), discarded unread.
	StopDropped uint64
	// StopRefused counts datagrams the kernel refused once the stop began
	// (the sockets' drop count since then, from /proc/net/udp{,6}).
	StopRefused uint64
	// QueuedBytes are waiting in the sockets' receive queues now.
	QueuedBytes uint64
	// RcvbufErrors and InErrors are the network namespace's UDP counters
	// (/proc/net/snmp and snmp6, IPv4 + IPv6): every UDP socket of the
	// namespace, not only the intake's.
	RcvbufErrors, InErrors uint64
}

// procFiles are /proc/net files opened in the namespace the sockets were
// created in; reading them later still describes that namespace.
type procFiles struct {
	mu                     sync.Mutex
	udp, udp6, snmp, snmp6 *os.File
	lastDrops, lastQueued  map[uint64]uint64 // by inode of the intake's sockets, kept after Close
	lastRcvbuf, lastInErrs uint64
	closed                 bool
}

func openProcFiles() *procFiles {
	p := &procFiles{lastDrops: map[uint64]uint64{}, lastQueued: map[uint64]uint64{}}
	dir := "/proc/thread-self/net/"
	if _, err := os.Stat(dir); err != nil {
		dir = "/proc/self/net/"
	}
	open := func(name string) *os.File {
		f, err := os.Open(dir + name)
		if err != nil {
			return nil
		}
		return f
	}
	p.udp, p.udp6, p.snmp, p.snmp6 = open("udp"), open("udp6"), open("snmp"), open("snmp6")
	return p
}

func reread(f *os.File) []byte {
	if f == nil {
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(f)
	return b
}

// refresh re-reads the socket tables and UDP counters.
func (p *procFiles) refresh() {
	if p.closed {
		return
	}
	for _, f := range []*os.File{p.udp, p.udp6} {
		parseUDPTable(reread(f), func(inode, queued, drops uint64) {
			if _, ours := p.lastDrops[inode]; ours {
				p.lastDrops[inode] = drops
				p.lastQueued[inode] = queued
			}
		})
	}
	if b := reread(p.snmp); b != nil {
		v4 := parseCounters(b, "Udp:")
		v6 := parseCounters(reread(p.snmp6), "")
		p.lastRcvbuf = v4["RcvbufErrors"] + v6["Udp6RcvbufErrors"]
		p.lastInErrs = v4["InErrors"] + v6["Udp6InErrors"]
	}
}

// track adds a socket (by inode) to the ones refresh follows.
func (p *procFiles) track(inode uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.lastDrops[inode]; !ok {
		p.lastDrops[inode] = 0
	}
}

// close takes a last reading and closes the files (callers hold p.mu).
func (p *procFiles) close() {
	p.refresh()
	for _, f := range []*os.File{p.udp, p.udp6, p.snmp, p.snmp6} {
		if f != nil {
			f.Close()
		}
	}
	p.closed = true
}

// parseUDPTable calls fn for each socket of /proc/net/udp or udp6 with its
// inode, receive queue bytes and drop count.
func parseUDPTable(b []byte, fn func(inode, queued, drops uint64)) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 1<<20)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 13 {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			continue
		}
		queued, err1 := strconv.ParseUint(rx, 16, 64)
		inode, err2 := strconv.ParseUint(f[9], 10, 64)
		drops, err3 := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		fn(inode, queued, drops)
	}
}

// parseCounters reads /proc/net/snmp (prefix "Udp:": a names line and a
// values line) or /proc/net/snmp6 (prefix "": "name value" lines).
func parseCounters(b []byte, prefix string) map[string]uint64 {
	out := map[string]uint64{}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if prefix == "" {
			f := strings.Fields(line)
			if len(f) == 2 {
				if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
					out[f[0]] = v
				}
			}
			continue
		}
		if !strings.HasPrefix(line, prefix+" ") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, prefix))
		if names == nil {
			names = f
			continue
		}
		for i, v := range f {
			if i < len(names) {
				if n, err := strconv.ParseUint(v, 10, 64); err == nil {
					out[names[i]] = n
				}
			}
		}
		break
	}
	return out
}

// sockDrops returns a socket's kernel drops and queued bytes from the last
// refresh, with SO_RXQ_OVFL as a floor; once the stop began (callers hold
// p.mu), the drops since then are refused instead.
func (p *procFiles) sockDrops(s *sock) (drops, refused, queued uint64) {
	drops, queued = p.lastDrops[s.inode], p.lastQueued[s.inode]
	if o := s.ovfl.Load(); o > drops {
		drops = o
	}
	if s.stopping && drops > s.stopBase {
		drops, refused = s.stopBase, drops-s.stopBase
	}
	return drops, refused, queued
}

// Stats returns the intake's counters now.
func (in *Intake) Stats() Stats {
	p := in.procs
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refresh()
	var st Stats
	for _, s := range in.socks {
		st.Datagrams += s.packets.Load()
		st.Bytes += s.bytes.Load()
		st.Truncated += s.trunc.Load()
		d, r, q := p.sockDrops(s)
		st.KernelDrops += d
		st.StopDropped += s.stop.Dropped.Load()
		st.StopRefused += r
		st.QueuedBytes += q
	}
	st.RcvbufErrors, st.InErrors = p.lastRcvbuf, p.lastInErrs
	return st
}

// collector exports an intake's counters as Prometheus metrics, read at
// scrape time.
type collector struct {
	in                                                 *Intake
	datagrams, bytes, trunc, drops, queued, rcvbuf, sk *prometheus.Desc
	stopDropped, stopRefused                           *prometheus.Desc
	rcvbufErrs, inErrs                                 *prometheus.Desc
}

// Register adds the intake's metrics to reg (all named tapline_decap_udp_*;
// per-address ones labelled listen="<configured address>").
func (in *Intake) Register(reg prometheus.Registerer) error {
	l := []string{"listen"}
	c := &collector{
		in:          in,
		datagrams:   prometheus.NewDesc("tapline_decap_udp_datagrams_total", "UDP datagrams received whole and handed to decoding.", l, nil),
		bytes:       prometheus.NewDesc("tapline_decap_udp_received_bytes_total", "UDP payload bytes received.", l, nil),
		trunc:       prometheus.NewDesc("tapline_decap_udp_truncated_total", "UDP datagrams larger than --max-datagram, dropped.", l, nil),
		drops:       prometheus.NewDesc("tapline_decap_udp_kernel_drops_total", "UDP datagrams the kernel dropped on decap's sockets (receive buffer full).", l, nil),
		queued:      prometheus.NewDesc("tapline_decap_udp_queued_bytes", "Bytes waiting in decap's socket receive queues.", l, nil),
		rcvbuf:      prometheus.NewDesc("tapline_decap_udp_rcvbuf_bytes", "Effective socket receive buffer size, per socket.", l, nil),
		sk:          prometheus.NewDesc("tapline_decap_udp_sockets", "SO_REUSEPORT sockets (reader goroutines).", l, nil),
		stopDropped: prometheus.NewDesc("tapline_decap_udp_stop_dropped_total", "UDP datagrams still queued on decap's sockets when the stop read (--stop-read) ended, dropped.", l, nil),
		stopRefused: prometheus.NewDesc("tapline_decap_udp_stop_refused_total", "UDP datagrams decap's sockets refused once decap began to stop.", l, nil),
		rcvbufErrs:  prometheus.NewDesc("tapline_decap_udp_rcvbuf_errors_total", "The network namespace's UDP RcvbufErrors (IPv4+IPv6, all sockets).", nil, nil),
		inErrs:      prometheus.NewDesc("tapline_decap_udp_in_errors_total", "The network namespace's UDP InErrors (IPv4+IPv6, all sockets).", nil, nil),
	}
	return reg.Register(c)
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.datagrams, c.bytes, c.trunc, c.drops, c.queued, c.rcvbuf, c.sk, c.stopDropped, c.stopRefused, c.rcvbufErrs, c.inErrs} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	in := c.in
	p := in.procs
	p.mu.Lock()
	p.refresh()
	type agg struct {
		datagrams, bytes, trunc, drops, queued, rcvbuf, sockets uint64
		stopDropped, stopRefused                                uint64
	}
	by := map[string]*agg{}
	var order []string
	for _, s := range in.socks {
		a := by[s.listen]
		if a == nil {
			a = &agg{}
			by[s.listen] = a
			order = append(order, s.listen)
		}
		d, r, q := p.sockDrops(s)
		a.stopDropped += s.stop.Dropped.Load()
		a.stopRefused += r
		a.datagrams += s.packets.Load()
		a.bytes += s.bytes.Load()
		a.trunc += s.trunc.Load()
		a.drops += d
		a.queued += q
		a.rcvbuf = uint64(s.rcvbuf)
		a.sockets++
	}
	rcvbufErrs, inErrs := p.lastRcvbuf, p.lastInErrs
	p.mu.Unlock()
	for _, l := range order {
		a := by[l]
		ch <- prometheus.MustNewConstMetric(c.datagrams, prometheus.CounterValue, float64(a.datagrams), l)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(a.bytes), l)
		ch <- prometheus.MustNewConstMetric(c.trunc, prometheus.CounterValue, float64(a.trunc), l)
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(a.drops), l)
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(a.queued), l)
		ch <- prometheus.MustNewConstMetric(c.rcvbuf, prometheus.GaugeValue, float64(a.rcvbuf), l)
		ch <- prometheus.MustNewConstMetric(c.sk, prometheus.GaugeValue, float64(a.sockets), l)
		ch <- prometheus.MustNewConstMetric(c.stopDropped, prometheus.CounterValue, float64(a.stopDropped), l)
		ch <- prometheus.MustNewConstMetric(c.stopRefused, prometheus.CounterValue, float64(a.stopRefused), l)
	}
	ch <- prometheus.MustNewConstMetric(c.rcvbufErrs, prometheus.CounterValue, float64(rcvbufErrs))
	ch <- prometheus.MustNewConstMetric(c.inErrs, prometheus.CounterValue, float64(inErrs))
}
