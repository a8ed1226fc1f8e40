package stage

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// SizeVar defines a byte size flag: a raw integer or a number with a KiB,
// MiB, GiB or TiB suffix (also K, M, G, T, KB, MB, GB, TB, all powers of
// 1024, and B). Every size flag of every Tapline binary is one, so
// `--max-bytes 8GiB` and `--max-bytes 8589934592` work everywhere.
func SizeVar(fs *flag.FlagSet, p *int64, name string, value int64, usage string) {
	*p = value
	fs.Var((*Size)(p), name, usage)
}

// IntSizeVar is SizeVar for an int.
func IntSizeVar(fs *flag.FlagSet, p *int, name string, value int, usage string) {
	*p = value
	fs.Var((*intSizeValue)(p), name, usage)
}

// Size is a flag.Value holding a byte size (see SizeVar), for code that
// registers its flag with fs.Var itself.
type Size int64

// String implements flag.Value.
func (s *Size) String() string { return FormatSize(int64(*s)) }

// Set implements flag.Value.
func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

type intSizeValue int

func (s *intSizeValue) String() string { return FormatSize(int64(*s)) }

func (s *intSizeValue) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	if int64(int(n)) != n {
		return fmt.Errorf("size %q too large", v)
	}
	*s = intSizeValue(n)
	return nil
}

var sizeUnits = []struct {
	s string
	m int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
	{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"TB", 1 << 40},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// ParseSize parses a byte size such as 1048576, 64MiB or 1G.
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	mult := int64(1)
	up := strings.ToUpper(t)
	for _, u := range sizeUnits {
		if strings.HasSuffix(up, u.s) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.s)]), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want e.g. 1048576, 64MiB, 1GiB)", v)
	}
	return n * mult, nil
}

// FormatSize writes n with the largest exact binary unit (8GiB, 64MiB,
// 4KiB, or the plain number).
func FormatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<40) == 0:
		return strconv.FormatInt(n>>40, 10) + "TiB"
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}
