package pcapfilter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// node is a boolean expression over a frame.
type node interface{ isNode() }

type andNode struct{ a, b node }
type orNode struct{ a, b node }
type notNode struct{ a node }

func (andNode) isNode() {}
func (orNode) isNode()  {}
func (notNode) isNode() {}

// qual is a primitive's qualifiers: protocol, direction and type.
type qual struct {
	proto string // "", ip, ip6, tcp, udp, sctp
	dir   string // "", src, dst
	kind  string // host, net, port, portrange
}

type parser struct {
	toks  []token
	i     int
	last  *qual // qualifiers of the previous primitive, for "port 80 or 443"
	depth int
}

// maxDepth bounds nesting of parentheses and not.
const maxDepth = 64

func parse(expr string) (node, error) {
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, nil // the empty filter accepts everything
	}
	p := &parser{toks: toks}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, p.errf("unexpected %q", p.toks[p.i].text)
	}
	return n, nil
}

func (p *parser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i].text
	}
	return ""
}

func (p *parser) next() string {
	s := p.peek()
	if p.i < len(p.toks) {
		p.i++
	}
	return s
}

func (p *parser) errf(format string, a ...any) error {
	pos := -1
	if p.i < len(p.toks) {
		pos = p.toks[p.i].pos
	}
	msg := fmt.Sprintf(format, a...)
	if pos < 0 {
		return fmt.Errorf("filter: at end: %s", msg)
	}
	return fmt.Errorf("filter: at %d: %s", pos, msg)
}

// or parses a chain of and / or: as in pcap-filter(7) both have the same
// precedence and associate left to right ("tcp or udp and port 53" is
// "(tcp or udp) and port 53").
func (p *parser) or() (node, error) {
	a, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		s := p.peek()
		if s != "or" && s != "||" && s != "and" && s != "&&" {
			return a, nil
		}
		p.next()
		b, err := p.unary()
		if err != nil {
			return nil, err
		}
		if s == "or" || s == "||" {
			a = orNode{a, b}
		} else {
			a = andNode{a, b}
		}
	}
}

func (p *parser) unary() (node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, p.errf("nested deeper than %d", maxDepth)
	}
	switch p.peek() {
	case "":
		return nil, p.errf("expression expected")
	case "not", "!":
		p.next()
		a, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notNode{a}, nil
	case "(":
		p.next()
		a, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.next() != ")" {
			p.i--
			return nil, p.errf("missing )")
		}
		return a, nil
	}
	return p.primitive()
}

var protos = map[string]bool{"ip": true, "ip6": true, "tcp": true, "udp": true, "sctp": true}

func (p *parser) primitive() (node, error) {
	var q qual
	s := p.peek()
	switch s {
	case "arp":
		p.next()
		return etherType(0x0806), nil
	case "icmp":
		p.next()
		return l4(4, 1), nil
	case "icmp6":
		p.next()
		return l4(6, 58), nil
	case "inbound":
		p.next()
		return pktType(false), nil
	case "outbound":
		p.next()
		return pktType(true), nil
	}
	if protos[s] {
		p.next()
		q.proto = s
		s = p.peek()
	}
	if s == "src" || s == "dst" {
		p.next()
		q.dir = s
		s = p.peek()
	}
	switch s {
	case "host", "net", "port", "portrange":
		p.next()
		q.kind = s
	default:
		if q.dir != "" {
			return nil, p.errf("host, net, port or portrange expected after %s", q.dir)
		}
		if q.proto != "" {
			return protoOnly(q.proto), nil
		}
		if s != "" && s != ")" && !isKeyword(s) && p.last != nil {
			// A bare value reuses the previous primitive's qualifiers.
			q = *p.last
			break
		}
		return nil, p.errf("unknown primitive %q", s)
	}
	v := p.next()
	if v == "" || isKeyword(v) || v == ")" || v == "(" || v == "!" || v == "&&" || v == "||" {
		if v != "" {
			p.i--
		}
		return nil, p.errf("value expected after %s", q.kind)
	}
	n, err := p.value(q, v)
	if err != nil {
		return nil, err
	}
	p.last = &q
	return n, nil
}

func isKeyword(s string) bool {
	switch s {
	case "and", "or", "not", "host", "net", "port", "portrange", "src", "dst", "mask",
		"ip", "ip6", "tcp", "udp", "sctp", "icmp", "icmp6", "arp", "inbound", "outbound":
		return true
	}
	return false
}

func (p *parser) value(q qual, v string) (node, error) {
	switch q.kind {
	case "host":
		if q.proto != "" && q.proto != "ip" && q.proto != "ip6" {
			return nil, p.errf("%s does not qualify host", q.proto)
		}
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return nil, p.errf("host %q: an IPv4 or IPv6 address expected (names are not resolved)", v)
		}
		a = a.Unmap()
		if err := checkFamily(q.proto, a); err != nil {
			return nil, p.errf("%v", err)
		}
		return addrMatch(q.proto, q.dir, netip.PrefixFrom(a, a.BitLen())), nil
	case "net":
		if q.proto != "" && q.proto != "ip" && q.proto != "ip6" {
			return nil, p.errf("%s does not qualify net", q.proto)
		}
		pre, err := p.netValue(v)
		if err != nil {
			return nil, err
		}
		if err := checkFamily(q.proto, pre.Addr()); err != nil {
			return nil, p.errf("%v", err)
		}
		return addrMatch(q.proto, q.dir, pre), nil
	case "port", "portrange":
		lo, hi, err := portValue(q.kind, v)
		if err != nil {
			return nil, p.errf("%v", err)
		}
		return portMatch(q.proto, q.dir, lo, hi), nil
	}
	return nil, p.errf("unknown qualifier %q", q.kind)
}

func checkFamily(proto string, a netip.Addr) error {
	if proto == "ip" && !a.Is4() || proto == "ip6" && !a.Is6() {
		return fmt.Errorf("address %s is not of %s", a, proto)
	}
	return nil
}

// netValue parses "CIDR", "ADDR" (a host) or "ADDR mask MASK".
func (p *parser) netValue(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		pre, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, p.errf("net %q: %v", v, err)
		}
		if pre.Addr().Zone() != "" {
			return netip.Prefix{}, p.errf("net %q: zones are not supported", v)
		}
		if pre.Masked() != pre {
			return netip.Prefix{}, p.errf("net %q: non-network bits set (did you mean %s?)", v, pre.Masked())
		}
		return pre, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, p.errf("net %q: a CIDR prefix expected", v)
	}
	a = a.Unmap()
	if p.peek() != "mask" {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p.next()
	ms := p.next()
	m, err := netip.ParseAddr(ms)
	if err != nil || m.Is4() != a.Is4() {
		return netip.Prefix{}, p.errf("mask %q: a mask of the address's family expected", ms)
	}
	b := m.AsSlice()
	bits := 0
	for i, x := range b {
		ones := 0
		for ; ones < 8 && x&(0x80>>ones) != 0; ones++ {
		}
		if x != byte(0xff<<(8-ones)) || (ones < 8 && i+1 < len(b) && anyNonZero(b[i+1:])) {
			return netip.Prefix{}, p.errf("mask %q: not contiguous", ms)
		}
		bits += ones
		if ones < 8 {
			break
		}
	}
	pre := netip.PrefixFrom(a, bits)
	if pre.Masked() != pre {
		return netip.Prefix{}, p.errf("net %s mask %s: non-network bits set", a, ms)
	}
	return pre, nil
}

func anyNonZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return true
		}
	}
	return false
}

func portValue(kind, v string) (lo, hi uint16, err error) {
	num := func(s string) (uint16, error) {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%s %q: a port number 0-65535 expected (names are not resolved)", kind, v)
		}
		return uint16(n), nil
	}
	if kind == "port" {
		lo, err = num(v)
		return lo, lo, err
	}
	a, b, ok := strings.Cut(v, "-")
	if !ok {
		return 0, 0, fmt.Errorf("portrange %q: N-M expected", v)
	}
	if lo, err = num(a); err != nil {
		return
	}
	if hi, err = num(b); err != nil {
		return
	}
	if lo > hi {
		lo, hi = hi, lo
	}
	return lo, hi, nil
}
