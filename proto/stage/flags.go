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
	"sync"
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
// It returns one error line naming the flag or variable at fault. A
// positional argument left after the flags (an unknown sub-command, or a
// stray word) is an error too: sub-commands a binary has are dispatched
// before Parse, so whatever reaches it is not one. A tool that takes
// positional arguments (`decap keys FILE`) declares them with SetArgs.
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
	if max := lookupMeta(fs).maxArgs; fs.NArg() > max {
		return fmt.Errorf("unknown command or argument %q (--help lists the commands and flags)", fs.Arg(max))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := envNameOf(fs, f.Name)
		v, ok := os.LookupEnv(name)
		if old := lookupMeta(fs).retired[f.Name]; !ok && old != "" && os.Getenv(old) != "" {
			err = fmt.Errorf("%s is no longer read: --%s reads %s (the stages gave %s different meanings)", old, f.Name, name, old)
			return
		}
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

// PrintUsage writes the summary of fs (SetSummary), then its flags with
// their environment variables. The NATS server URL names its NATS_URL
// fallback too.
func PrintUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage of %s:\n", fs.Name())
	if s := lookupMeta(fs).summary; s != "" {
		fmt.Fprintf(w, "%s\n\nFlags:\n", strings.TrimRight(s, "\n"))
	}
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
		env := "$" + envNameOf(fs, f.Name)
		if alias := Aliases[f.Name]; alias != "" {
			env += ", else $" + alias
		}
		fmt.Fprintf(w, " [%s]\n", env)
	})
}

// meta is what a FlagSet carries besides its flags: the environment prefix
// and the usage summary.
type meta struct {
	envPrefix string
	shared    map[string]bool
	envNames  map[string]string // flag name to its own variable (SetEnvName)
	retired   map[string]string // flag name to the variable it no longer reads
	summary   string
	maxArgs   int
}

var (
	metaMu sync.Mutex
	metas  = map[*flag.FlagSet]meta{}
)

func lookupMeta(fs *flag.FlagSet) meta {
	metaMu.Lock()
	defer metaMu.Unlock()
	return metas[fs]
}

func updateMeta(fs *flag.FlagSet, f func(*meta)) {
	metaMu.Lock()
	defer metaMu.Unlock()
	m := metas[fs]
	f(&m)
	metas[fs] = m
}

// SetArgs lets Parse leave up to max positional arguments after the flags
// of fs (e.g. 1 for `decap keys FILE`), for the tool to check itself;
// beyond max, Parse rejects the first extra one.
func SetArgs(fs *flag.FlagSet, max int) {
	updateMeta(fs, func(m *meta) { m.maxArgs = max })
}

// SetEnvPrefix makes the flags of fs read prefix+<FLAG> instead of
// TAPLINE_<FLAG> (e.g. "TAPLINE_DEMO_" for `tapline demo`), so a tool's
// variables cannot collide with another tool's of the same flag name. The
// flags Common registers (the NATS connection, logging) and those named in
// shared keep TAPLINE_<FLAG>: they mean the same in every tool.
func SetEnvPrefix(fs *flag.FlagSet, prefix string, shared ...string) {
	updateMeta(fs, func(m *meta) {
		m.envPrefix = prefix
		m.shared = commonFlagNames()
		for _, n := range shared {
			m.shared[n] = true
		}
	})
}

// commonFlagNames are the names of the flags Common registers.
func commonFlagNames() map[string]bool {
	var c Common
	fs := flag.NewFlagSet("common", flag.ContinueOnError)
	c.Register(fs, "")
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// SetEnvName makes flag flagName of fs read env instead of its usual
// variable, for a flag whose name other stages use with another meaning
// (decap's --vni drops other VNIs, replay's --vni only leaves them to
// others: TAPLINE_DECAP_VNI and TAPLINE_REPLAY_VNI). If retired is not
// empty, it is the variable the flag read before: Parse refuses to start
// when it is set (non-empty) and env is not, naming env, so an old
// environment is not silently ignored.
func SetEnvName(fs *flag.FlagSet, flagName, env, retired string) {
	updateMeta(fs, func(m *meta) {
		if m.envNames == nil {
			m.envNames, m.retired = map[string]string{}, map[string]string{}
		}
		m.envNames[flagName] = env
		if retired != "" {
			m.retired[flagName] = retired
		}
	})
}

// SetSummary sets the text PrintUsage writes before the flags: what the
// command does and the sub-commands it has.
func SetSummary(fs *flag.FlagSet, summary string) {
	updateMeta(fs, func(m *meta) { m.summary = summary })
}

// EnvNameIn is the environment variable of flag flagName of fs: EnvName,
// or the SetEnvPrefix prefix with the same upper-case form.
func EnvNameIn(fs *flag.FlagSet, flagName string) string { return envNameOf(fs, flagName) }

func envNameOf(fs *flag.FlagSet, flagName string) string {
	m := lookupMeta(fs)
	if env := m.envNames[flagName]; env != "" {
		return env
	}
	if m.envPrefix != "" && !m.shared[flagName] {
		p := m.envPrefix
		return p + strings.ToUpper(envReplacer.Replace(flagName))
	}
	return EnvName(flagName)
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
