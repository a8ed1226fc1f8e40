// Package stage is the wiring every Tapline binary shares: command-line
// flags with environment equivalents, structured logging, the NATS
// connection and stream provisioning, /healthz and /metrics, and the
// signal-driven shutdown. A stage's main registers its own flags next to
// Common's, calls Parse, then Run.
package stage

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvName is the environment variable that sets a flag when the command line
// does not: TAPLINE_<FLAG>, upper case, dashes and dots as underscores (the
// all-in-one's prefixed flag decap.listen reads TAPLINE_DECAP_LISTEN). The
// NATS server URL also reads NATS_URL (see Common).
func EnvName(flagName string) string {
	return "TAPLINE_" + strings.ToUpper(envReplacer.Replace(flagName))
}

var envReplacer = strings.NewReplacer("-", "_", ".", "_")

// ErrHelp is returned by Parse when --help was asked for; the usage has
// been printed and the program should exit 0.
var ErrHelp = flag.ErrHelp

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable (see EnvName), and from the extra
// aliases (flag name to environment variable, e.g. "nats-url": "NATS_URL").
// It returns one error line naming the flag or variable at fault.
func Parse(fs *flag.FlagSet, args []string, aliases map[string]string) error {
	fs.Init(fs.Name(), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			PrintUsage(os.Stdout, fs)
			return ErrHelp
		}
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := EnvName(f.Name)
		v, ok := os.LookupEnv(name)
		if !ok {
			if alias := aliases[f.Name]; alias != "" {
				name = alias
				v, ok = os.LookupEnv(alias)
			}
		}
		if ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("invalid value %q for %s: %v", v, name, e)
			}
		}
	})
	return err
}

// PrintUsage writes the flags of fs with their environment variables.
func PrintUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage of %s:\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, " [$%s]\n", EnvName(f.Name))
	})
}

// ListFlag is a flag.Value holding a comma-separated list; repeating the
// flag appends.
type ListFlag []string

// String implements flag.Value.
func (l *ListFlag) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *ListFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
