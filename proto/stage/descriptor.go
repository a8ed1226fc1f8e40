package stage

import "flag"

// Descriptor is one stage as its package exports it (decap.Stage(),
// reassemble.Stage(), …): the same description runs the stage as its own
// command (Main) and inside the all-in-one, which prefixes its flags.
// Each call of a stage's constructor returns a new configuration.
type Descriptor struct {
	// Name is the stage's name: its command name and its flag prefix in
	// the all-in-one.
	Name string
	// Summary, when set, is what --help prints before the flags.
	Summary string
	// Common points at the stage configuration's Common; the all-in-one
	// overwrites it with its own before Validate and Run.
	Common *Common
	// Register adds the stage's flags (common ones included) to fs.
	Register func(fs *flag.FlagSet)
	// Validate checks the stage's configuration (and derives nothing: Run
	// does that).
	Validate func() error
	// Run runs the stage until ctx ends.
	Run RunFunc
	// Off, when set and returning a reason, leaves the stage out of an
	// all-in-one run (e.g. replay without a test system to replay into).
	Off func() string
}

// Main runs the stage as its own command with args (os.Args[1:]) and
// returns the exit code: MainCode with the stage's flags.
func (d *Descriptor) Main(args []string) int {
	fs := flag.NewFlagSet(d.Name, flag.ContinueOnError)
	d.Register(fs)
	if d.Summary != "" {
		SetSummary(fs, d.Summary)
	}
	return MainCode(fs, d.Common, args, d.Validate, d.Run)
}
