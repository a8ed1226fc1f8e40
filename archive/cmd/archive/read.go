package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tapline/tapline/archive"
	"github.com/tapline/tapline/archive/query"
	"github.com/tapline/tapline/archive/store"
	"github.com/tapline/tapline/proto/stage"
)

// readFlags are the flags shared by ls and query.
type readFlags struct {
	store    archive.StoreConfig
	from, to string
	vnis     stage.ListFlag
	hosts    stage.ListFlag
	ports    stage.ListFlag
	flows    stage.ListFlag
}

func (r *readFlags) register(fs *flag.FlagSet) {
	r.store.Register(fs)
	fs.StringVar(&r.from, "from", "-1h", "start of the time range (inclusive): RFC 3339, YYYY-MM-DD[ HH:MM[:SS]] UTC, Unix seconds, now, or -DURATION before now")
	fs.StringVar(&r.to, "to", "now", "end of the time range (exclusive), same forms as --from")
	fs.Var(&r.vnis, "vni", "only these VNIs (comma-separated or repeated)")
	fs.Var(&r.hosts, "host", "only packets from or to these IP addresses")
	fs.Var(&r.ports, "port", "only packets from or to these ports")
	fs.Var(&r.flows, "flow", "only these flows, either direction: [tcp:|udp:]ADDR:PORT-ADDR:PORT")
}

func (r *readFlags) filter(now time.Time) (query.Filter, error) {
	var f query.Filter
	from, err := parseTime(r.from, now)
	if err != nil {
		return f, fmt.Errorf("--from: %v", err)
	}
	to, err := parseTime(r.to, now)
	if err != nil {
		return f, fmt.Errorf("--to: %v", err)
	}
	if !to.After(from) {
		return f, fmt.Errorf("--to (%s) must be after --from (%s)", to.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano))
	}
	f.FromNs, f.ToNs = from.UnixNano(), to.UnixNano()
	for _, v := range r.vnis {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return f, fmt.Errorf("--vni %q: not a VNI", v)
		}
		f.VNIs = append(f.VNIs, uint32(n))
	}
	for _, h := range r.hosts {
		a, err := netip.ParseAddr(h)
		if err != nil {
			return f, fmt.Errorf("--host %q: not an IP address", h)
		}
		f.Hosts = append(f.Hosts, a.Unmap())
	}
	for _, p := range r.ports {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return f, fmt.Errorf("--port %q: not a port", p)
		}
		f.Ports = append(f.Ports, uint16(n))
	}
	for _, s := range r.flows {
		fl, err := query.ParseFlow(s)
		if err != nil {
			return f, fmt.Errorf("--flow: %v", err)
		}
		f.Flows = append(f.Flows, fl)
	}
	if err := r.store.Validate(); err != nil {
		return f, err
	}
	if !strings.HasPrefix(r.store.Location, "s3://") {
		if fi, err := os.Stat(r.store.Location); err != nil || !fi.IsDir() {
			return f, fmt.Errorf("--store %s: no archive directory there", r.store.Location)
		}
	}
	return f, nil
}

// parseTime reads the time forms --from and --to accept.
func parseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-"):
		d, err := time.ParseDuration(s[1:])
		if err == nil {
			return now.Add(-d), nil
		}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	// Unix seconds with up to nine decimals, parsed exactly.
	if secs, frac, _ := strings.Cut(s, "."); len(frac) <= 9 {
		sec, err1 := strconv.ParseInt(secs, 10, 64)
		ns, err2 := int64(0), error(nil)
		if frac != "" {
			ns, err2 = strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		}
		if err1 == nil && err2 == nil && sec >= 0 && ns >= 0 {
			return time.Unix(sec, ns).UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read time %q (RFC 3339, YYYY-MM-DD HH:MM:SS UTC, Unix seconds, now or -1h)", s)
}

func parseArgs(name string, args []string, r *readFlags, extra func(fs *flag.FlagSet)) (int, bool) {
	fs := flag.NewFlagSet("archive "+name, flag.ContinueOnError)
	r.register(fs)
	if extra != nil {
		extra(fs)
	}
	// TAPLINE_QUERY_FROM, TAPLINE_QUERY_VNI …: the stages' TAPLINE_VNI and
	// others mean something else. The store flags keep the archive
	// stage's names (TAPLINE_STORE …): they name the same archive.
	stage.SetEnvPrefix(fs, queryEnvPrefix, storeFlagNames()...)
	if err := stage.Parse(fs, args, nil); err != nil {
		if errors.Is(err, stage.ErrHelp) {
			return 0, false
		}
		fmt.Fprintf(os.Stderr, "archive %s: %v\n", name, err)
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "archive %s: unexpected argument %q\n", name, fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// queryEnvPrefix starts the environment variables of archive ls and
// archive query (until this release TAPLINE_FROM, TAPLINE_VNI, TAPLINE_OUT,
// TAPLINE_L …).
const queryEnvPrefix = "TAPLINE_QUERY_"

// storeFlagNames are the flags StoreConfig registers.
func storeFlagNames() []string {
	var s archive.StoreConfig
	fs := flag.NewFlagSet("store", flag.ContinueOnError)
	s.Register(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

func lsMain(args []string) int {
	var r readFlags
	var long bool
	code, ok := parseArgs("ls", args, &r, func(fs *flag.FlagSet) {
		fs.BoolVar(&long, "l", false, "also show the stream sequences and the flows of each chunk")
	})
	if !ok {
		return code
	}
	f, err := r.filter(time.Now())
	if err != nil {
		fmt.Fprintf(os.Stderr, "archive ls: %v\n", err)
		return 2
	}
	ctx, stop := stage.SignalContext()
	defer stop()
	st, err := store.Open(ctx, r.store.Location, r.store.S3)
	if err != nil {
		fmt.Fprintf(os.Stderr, "archive ls: %v\n", err)
		return 1
	}
	chunks, errs := query.List(ctx, st, f)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHUNK\tVNI\tFIRST\tLAST\tPACKETS\tBYTES\tSTORED\tRATIO")
	for _, c := range chunks {
		x := c.Index
		ratio := 0.0
		if x.CompressedSize > 0 {
			ratio = float64(x.UncompressedSize) / float64(x.CompressedSize)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%.2f\n", x.Chunk, x.VNI, fmtNs(x.FirstNs), fmtNs(x.LastNs), x.Packets, x.CapturedBytes, x.CompressedSize, ratio)
		if long {
			fmt.Fprintf(tw, "  seq %d-%d, %d batches, %d frames, %d flows%s\n", x.FirstSeq, x.LastSeq, len(x.Msgs), len(x.Frames), len(x.Flows), map[bool]string{true: " (truncated)"}[x.FlowsTruncated])
			for _, fl := range x.Flows {
				fmt.Fprintf(tw, "    proto %d %s -> %s\t%d packets\t%d bytes\n", fl.Proto, netip.AddrPortFrom(fl.Src, fl.SrcPort), netip.AddrPortFrom(fl.Dst, fl.DstPort), fl.Packets, fl.Bytes)
			}
		}
	}
	tw.Flush()
	for _, e := range errs {
		fmt.Fprintf(os.Stderr, "archive ls: %v\n", e)
	}
	if len(chunks) == 0 {
		fmt.Fprintf(os.Stderr, "archive ls: no chunk in %s for %s to %s (the archive stores a chunk --chunk-age, default %s, after its first packet, or when it stops)\n", st, fmtNs(f.FromNs), fmtNs(f.ToNs), archive.DefaultChunkAge)
	}
	if len(errs) > 0 {
		return 1
	}
	return 0
}

func fmtNs(ns int64) string { return time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.000000000Z") }

func queryMain(args []string) int {
	var r readFlags
	var out, progress, format string
	var withSecrets bool
	code, ok := parseArgs("query", args, &r, func(fs *flag.FlagSet) {
		fs.BoolVar(&withSecrets, "with-secrets", false, "write the TLS key log lines of the connections returned (matched by ClientHello client random) into the pcapng as a Decryption Secrets Block; needs an archive run with --keys")
		fs.StringVar(&out, "out", "-", "output file (- for stdout)")
		fs.StringVar(&format, "format", query.FormatPcapng, "output format: pcapng (one section, ns timestamps, VNI per interface) or pcap (classic, ns timestamps, one link type)")
		fs.StringVar(&progress, "progress", "auto", "progress on stderr: auto (when stderr is a terminal), always or never")
	})
	if !ok {
		return code
	}
	f, err := r.filter(time.Now())
	if err != nil {
		fmt.Fprintf(os.Stderr, "archive query: %v\n", err)
		return 2
	}
	if format != query.FormatPcapng && format != query.FormatPcap {
		fmt.Fprintf(os.Stderr, "archive query: --format must be pcapng or pcap, got %q\n", format)
		return 2
	}
	if withSecrets && format != query.FormatPcapng {
		fmt.Fprintf(os.Stderr, "archive query: --with-secrets needs --format pcapng (classic pcap has no secrets block)\n")
		return 2
	}
	showProgress := progress == "always" || (progress == "auto" && isTerminal(os.Stderr))
	if progress != "auto" && progress != "always" && progress != "never" {
		fmt.Fprintf(os.Stderr, "archive query: --progress must be auto, always or never\n")
		return 2
	}
	ctx, stop := stage.SignalContext()
	defer stop()
	base, err := store.Open(ctx, r.store.Location, r.store.S3)
	if err != nil {
		fmt.Fprintf(os.Stderr, "archive query: %v\n", err)
		return 1
	}
	st := store.NewCounting(base)
	if withSecrets {
		has, err := query.HasKeys(ctx, st)
		if err != nil {
			fmt.Fprintf(os.Stderr, "archive query: %v\n", err)
			return 1
		}
		if !has {
			fmt.Fprintf(os.Stderr, "archive query: --with-secrets: %s: %v\n", base, query.ErrNoKeys)
			return 1
		}
	}
	var w io.Writer = os.Stdout
	var file *os.File
	if (out == "-" || out == "") && isTerminal(os.Stdout) {
		fmt.Fprintln(os.Stderr, "archive query: not writing binary pcapng to a terminal: pipe it (archive query … | tshark -r -) or give --out FILE")
		return 2
	}
	if out != "-" && out != "" {
		if file, err = os.Create(out); err != nil {
			fmt.Fprintf(os.Stderr, "archive query: %v\n", err)
			return 1
		}
		w = file
	}
	chunks, errs := query.List(ctx, st, f)
	var prog query.Progress
	if showProgress {
		prog = func(done, total int, bytes int64) {
			fmt.Fprintf(os.Stderr, "\rarchive query: %d/%d frames, %.1f MiB fetched", done, total, float64(bytes)/(1<<20))
		}
	}
	var res query.Result
	var sr query.SecretsResult
	if withSecrets {
		res, sr, err = query.WriteWithSecrets(ctx, st, chunks, f, w, prog)
	} else {
		res, err = query.WriteFormat(ctx, st, chunks, f, w, format, prog)
	}
	if showProgress && res.Frames > 0 {
		fmt.Fprintln(os.Stderr)
	}
	if file != nil {
		if cerr := file.Close(); err == nil {
			err = cerr
		}
	}
	errs = append(errs, res.Errors...)
	for _, e := range errs {
		fmt.Fprintf(os.Stderr, "archive query: %v\n", e)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "archive query: %v\n", err)
		return 1
	}
	if len(res.LinkTypes) > 1 {
		fmt.Fprintf(os.Stderr, "archive query: note: the output mixes link types %v (Ethernet and raw IP); tshark and Wireshark read it, tcpdump/libpcap do not: narrow with --vni\n", res.LinkTypes)
	}
	if res.Packets == 0 {
		fmt.Fprintf(os.Stderr, "archive query: no packet matches in %s from %s to %s (%d chunks looked at; the archive stores a chunk --chunk-age, default %s, after its first packet, or when it stops)\n", base, fmtNs(f.FromNs), fmtNs(f.ToNs), res.Chunks, archive.DefaultChunkAge)
	} else {
		fmt.Fprintf(os.Stderr, "archive query: %d packets from %d chunks (%d frames, %.1f MiB fetched", res.Packets, res.Chunks, res.Frames, float64(st.Bytes())/(1<<20))
		if res.Duplicates > 0 {
			fmt.Fprintf(os.Stderr, ", %d duplicate packets dropped", res.Duplicates)
		}
		fmt.Fprintln(os.Stderr, ")")
	}
	if withSecrets {
		fmt.Fprintf(os.Stderr, "archive query: TLS keys of %d of %d connections with a ClientHello in the output (%d key log lines) written as a Decryption Secrets Block\n", sr.Connections, sr.ClientHellos, sr.Lines)
	}
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "archive query: %d chunks or frames could not be read; the output holds the rest\n", len(errs))
		return 1
	}
	if res.Packets == 0 {
		return 1 // nothing matched: the (valid, empty) capture is no answer
	}
	return 0
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
