package allinone

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/tapline/tapline/decap/udpin"
)

// CheckPorts tries every port `tapline run` is about to listen on — --http,
// the embedded server's --nats-listen, --testsystem and decap's UDP ports —
// and returns one error line naming each one that is taken with the flag
// that moves it, so a user sees them all at once. fs is the flag set
// Register filled.
func (c *Config) CheckPorts(fs *flag.FlagSet) error {
	var taken []string
	tryTCP := func(addr, flagName string) {
		if addr == "" {
			return
		}
		if _, p, err := net.SplitHostPort(addr); err != nil || !validPort(p) {
			return // Validate names what is wrong with it
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			taken = append(taken, fmt.Sprintf("%s (--%s)", addr, flagName))
			return
		}
		ln.Close()
	}
	tryTCP(c.Common.HTTPAddr, "http")
	if c.Embedded {
		tryTCP(c.NATSListen, "nats-listen")
	}
	tryTCP(c.TestSystem, "testsystem")
	if c.decapSelected() {
		hosts := []string{""}
		if f := fs.Lookup("decap.listen-addr"); f != nil && f.Value.String() != "" {
			hosts = strings.Split(f.Value.String(), ",")
		}
		for _, name := range []string{"vxlan-port", "geneve-port"} {
			f := fs.Lookup("decap." + name)
			if f == nil || !validPort(f.Value.String()) {
				continue
			}
			for _, h := range hosts {
				addr := net.JoinHostPort(strings.TrimSpace(h), f.Value.String())
				pc, err := net.ListenPacket("udp", addr)
				if err != nil {
					taken = append(taken, fmt.Sprintf("udp %s (--decap.%s)", addr, name))
					continue
				}
				pc.Close()
			}
		}
	}
	if len(taken) > 0 {
		return fmt.Errorf("ports in use: %s; stop what holds them or move them with those flags (port 0 picks a free one for --nats-listen)", strings.Join(taken, ", "))
	}
	return nil
}

// ValidatePorts is Validate, then CheckPorts: a bad flag is reported as
// such, and taken ports (decap's own check included) as one line naming
// them all.
func (c *Config) ValidatePorts(fs *flag.FlagSet) error {
	err := c.Validate()
	var shared *udpin.ErrPortShared
	if err != nil && !errors.As(err, &shared) {
		return err
	}
	if perr := c.CheckPorts(fs); perr != nil {
		return perr
	}
	return err
}

// decapSelected reports whether decap runs in this configuration.
func (c *Config) decapSelected() bool {
	return c.Stage("decap") != nil && (len(c.Only) == 0 || slices.Contains(c.Only, "decap"))
}

// validPort reports a port number CheckPorts can try: 1..65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n <= 65535
}
