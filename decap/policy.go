package decap

import (
	"net/netip"
	"strings"
)

// DefaultMaxVNIs is the default of --max-vnis. A mirror target serves a
// handful of mirror sessions (one VNI each); 64 leaves room and keeps the
// per-VNI metric series and archive chunks few.
const DefaultMaxVNIs = 64

// DefaultAllowSrc are the outer sources a network intake accepts when
// neither --allow-src nor --allow-any-source is given: loopback and the
// private ranges a VPC uses (RFC 1918, RFC 6598 shared address space,
// IPv6 unique local). Mirrored ENIs send from their private IPv4 address;
// a VPC's IPv6 addresses are global and must be listed with --allow-src.
var DefaultAllowSrc = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
}

// DefaultAllowSrcString is DefaultAllowSrc comma-separated, as --allow-src
// takes it.
func DefaultAllowSrcString() string {
	s := make([]string, len(DefaultAllowSrc))
	for i, p := range DefaultAllowSrc {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// sourcePolicy is the outer source allow list a network intake applies:
// the --allow-src prefixes, DefaultAllowSrc when there are none, nothing
// (any source) with --allow-any-source.
func (c *Config) sourcePolicy() []netip.Prefix {
	switch {
	case c.AllowAnySource:
		return nil
	case len(c.prefixes) > 0:
		return c.prefixes
	}
	return DefaultAllowSrc
}
