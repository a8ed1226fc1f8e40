package pcapfilter

import (
	"errors"
	"fmt"

	"golang.org/x/net/bpf"
)

// ErrTooLarge is returned for a filter whose program exceeds classic BPF's
// limits (4096 instructions, 255-instruction conditional jumps).
var ErrTooLarge = errors.New("filter: program too large for classic BPF")

// Compile compiles a tcpdump expression for Ethernet frames into a
// classic BPF program that keeps up to snaplen bytes of a matching frame
// (0 means 262144) and drops the others. The empty expression keeps
// every frame.
func Compile(expr string, snaplen uint32) ([]bpf.Instruction, error) {
	if snaplen == 0 {
		snaplen = defaultSnap
	}
	n, err := parse(expr)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return []bpf.Instruction{bpf.RetConstant{Val: snaplen}}, nil
	}
	g := &gen{}
	accept, reject := g.label(), g.label()
	g.node(n, accept, reject)
	g.place(accept)
	g.emit(bpf.RetConstant{Val: snaplen})
	g.place(reject)
	g.emit(bpf.RetConstant{Val: 0})
	return g.resolve()
}

// Assemble compiles expr (see Compile) into the raw form the kernel takes
// (SO_ATTACH_FILTER).
func Assemble(expr string, snaplen uint32) ([]bpf.RawInstruction, error) {
	prog, err := Compile(expr, snaplen)
	if err != nil {
		return nil, err
	}
	return bpf.Assemble(prog)
}

// insn is an instruction whose jumps name labels until resolve.
type insn struct {
	ins    bpf.Instruction
	cond   bpf.JumpTest
	val    uint32
	t, f   int  // labels of a conditional jump
	isCond bool // a conditional jump to t / f
	isJump bool // an unconditional jump to t
}

type gen struct {
	code   []insn
	labels []int // label -> instruction index
}

func (g *gen) label() int {
	g.labels = append(g.labels, -1)
	return len(g.labels) - 1
}

func (g *gen) place(l int) { g.labels[l] = len(g.code) }

func (g *gen) emit(i bpf.Instruction) { g.code = append(g.code, insn{ins: i}) }

// node emits code that jumps to t when n holds and to f when not.
func (g *gen) node(n node, t, f int) {
	switch n := n.(type) {
	case andNode:
		mid := g.label()
		g.node(n.a, mid, f)
		g.place(mid)
		g.node(n.b, t, f)
	case orNode:
		mid := g.label()
		g.node(n.a, t, mid)
		g.place(mid)
		g.node(n.b, t, f)
	case notNode:
		g.node(n.a, f, t)
	case trueNode:
		g.code = append(g.code, insn{isJump: true, t: t})
	case atom:
		switch n.load {
		case loadAbs:
			g.emit(bpf.LoadAbsolute{Off: n.off, Size: n.size})
		case loadIPv4:
			g.emit(bpf.LoadMemShift{Off: 14})
			g.emit(bpf.LoadIndirect{Off: 14 + n.off, Size: n.size})
		case loadType:
			g.emit(bpf.LoadExtension{Num: bpf.ExtType})
		}
		if n.mask != 0 {
			g.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: n.mask})
		}
		g.code = append(g.code, insn{isCond: true, cond: n.cond, val: n.val, t: t, f: f})
	default:
		panic(fmt.Sprintf("pcapfilter: unknown node %T", n))
	}
}

// resolve turns labels into relative jumps. Every label lies after the
// jumps to it, so all offsets are forward.
func (g *gen) resolve() ([]bpf.Instruction, error) {
	if len(g.code) > maxInsns {
		return nil, fmt.Errorf("%w: %d instructions", ErrTooLarge, len(g.code))
	}
	out := make([]bpf.Instruction, len(g.code))
	for i, c := range g.code {
		switch {
		case c.isCond:
			st, sf := g.labels[c.t]-(i+1), g.labels[c.f]-(i+1)
			if st < 0 || sf < 0 {
				panic("pcapfilter: backward jump")
			}
			if st > jumpLimit || sf > jumpLimit {
				return nil, fmt.Errorf("%w: a jump of more than %d instructions", ErrTooLarge, jumpLimit)
			}
			out[i] = bpf.JumpIf{Cond: c.cond, Val: c.val, SkipTrue: uint8(st), SkipFalse: uint8(sf)}
		case c.isJump:
			out[i] = bpf.Jump{Skip: uint32(g.labels[c.t] - (i + 1))}
		default:
			out[i] = c.ins
		}
	}
	return out, nil
}
