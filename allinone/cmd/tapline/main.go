// Command tapline is the all-in-one: every Tapline stage in one process
// next to an embedded JetStream server, archiving to a local directory.
//
//	tapline run [flags]         run the pipeline (the default command)
//	tapline demo [flags]        the whole flow on a bundled capture
//	tapline testsystem [flags]  a WebSocket/TCP server printing what it receives
//	tapline healthcheck [flags] probe the running all-in-one's /healthz
//	tapline ledger [flags]      reconcile production's messages with the streams
//	tapline watch [flags]       live view of the connections and their loss
//	tapline report [flags]      the loss report of a time window (--json)
//	tapline sub SUBJECT [flags] print the messages of a tapline subject
//
// `tapline run --help` lists every flag, each stage's prefixed with its
// name (--decap.listen …) and its environment variable.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/tapline/tapline/allinone"
	"github.com/tapline/tapline/allinone/demo"
	"github.com/tapline/tapline/allinone/ledger"
	"github.com/tapline/tapline/allinone/testsystem"
	"github.com/tapline/tapline/allinone/views"
	"github.com/tapline/tapline/proto/stage"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd = "help" // the commands, not run's flags (tapline run --help)
	} else if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		cfg := allinone.NewConfig()
		fs := flag.NewFlagSet("tapline", flag.ContinueOnError)
		cfg.Register(fs)
		validate := func() error { return cfg.ValidatePorts(fs) }
		return stage.MainCode(fs, &cfg.Common, args, validate, func(ctx context.Context, d stage.Deps) error {
			return allinone.Run(ctx, cfg, d, nil)
		})
	case stage.HealthcheckCommand:
		cfg := allinone.NewConfig()
		fs := flag.NewFlagSet("tapline", flag.ContinueOnError)
		cfg.Register(fs)
		return stage.MainCode(fs, &cfg.Common, append([]string{cmd}, args...), nil, nil)
	case "demo":
		return demo.Main(args)
	case "testsystem":
		return testsystem.Main(args)
	case "ledger":
		return ledger.Main(args, os.Stdout, os.Stderr)
	case "watch":
		return views.WatchMain(args, os.Stdout, os.Stderr)
	case "report":
		return views.ReportMain(args, os.Stdout, os.Stderr)
	case "sub":
		return views.SubMain(args, os.Stdout, os.Stderr)
	case "help", "-h", "--help":
		usage()
		return 0
	default:
		fmt.Fprintf(os.Stderr, "tapline: unknown command %q (run, demo, testsystem, ledger, watch, report, sub, healthcheck)\n", cmd)
		return 2
	}
}

func usage() {
	fmt.Print(`Usage: tapline <command> [flags]

  run          every stage in one process with an embedded JetStream server
               (the default command; --help lists every flag)
  demo         the whole flow on a bundled capture, within a minute
  testsystem   a WebSocket/TCP server that prints what it receives
  healthcheck  probe the running all-in-one's /healthz (exit 0 when healthy)
  ledger       reconcile the messages production received (--expected, JSON
               lines) with TAPLINE_MSGS, TAPLINE_RESULTS and the test system
  watch        live view of the connections: messages, loss, replay outcome
               (keys sort and filter; --plain for one line per change)
  report       the loss report of a window (--since 1h, --json), with the
               mirror's own drop counters
  sub SUBJECT  print the messages of a subject (e.g. 'tapline.msgs.>'): what
               the stream holds (--all, --last N, --since D), then live
`)
}
