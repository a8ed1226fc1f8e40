package allinone

import (
	"flag"
	"fmt"
	"net"
)

// registerTestSystem adds --testsystem: `tapline run --testsystem ADDR`
// runs the built-in test system (allinone/testsystem) in the process and
// replays into it when neither --replay.target nor --replay.listen is
// given — what `make run` does, so the whole pipeline runs on a machine
// with nothing but Go.
func (c *Config) registerTestSystem(fs *flag.FlagSet) {
	fs.StringVar(&c.TestSystem, "testsystem", "", "run the built-in test system on this address (e.g. 127.0.0.1:8080) and replay into it unless --replay.target or --replay.listen is given")
	c.fs = fs
}

// applyTestSystem points replay at the built-in test system when
// --testsystem is set and replay has nowhere else to deliver.
func (c *Config) applyTestSystem() error {
	if c.TestSystem == "" || c.fs == nil {
		return nil
	}
	if _, p, err := net.SplitHostPort(c.TestSystem); err != nil || p == "0" {
		return fmt.Errorf("--testsystem %q: want HOST:PORT with a fixed port", c.TestSystem)
	}
	target, listen := c.fs.Lookup("replay.target"), c.fs.Lookup("replay.listen")
	if target == nil || listen == nil || target.Value.String() != "" || listen.Value.String() != "" {
		return nil // no replay compiled in, or it has a test system already
	}
	return target.Value.Set("ws://" + c.TestSystem)
}
