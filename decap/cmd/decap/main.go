// Command decap receives AWS VPC Traffic Mirroring (VXLAN) and Gateway Load
// Balancer (GENEVE) traffic, or reads a capture file, and publishes the
// inner frames to JetStream. `decap send FILE --to HOST:PORT` sends a
// capture to a target the way AWS would. `decap capture --iface IFACE`
// captures on the production host itself (AF_PACKET, spooled, uploaded at
// a capped rate). `decap keys [--follow] FILE|-` ships a TLS key log
// (SSLKEYLOGFILE) to TAPLINE_KEYS. See decap/README.md.
package main

import (
	"os"

	"github.com/tapline/tapline/decap"
	"github.com/tapline/tapline/decap/capturecmd"
	"github.com/tapline/tapline/decap/keys"
	"github.com/tapline/tapline/decap/send"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "capture" {
		os.Exit(capturecmd.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "send" {
		os.Exit(send.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "keys" {
		os.Exit(keys.Main(os.Args[2:]))
	}
	d := decap.Stage()
	d.Summary = summary
	os.Exit(d.Main(os.Args[1:]))
}
