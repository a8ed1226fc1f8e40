package pcapfilter

import (
	"testing"

	"golang.org/x/net/bpf"
)

// FuzzCompile: any expression either fails with an error or compiles to a
// program the kernel's rules accept (it assembles, and runs on the corpus
// without a VM error unless it uses the packet-type extension, which the
// Go VM lacks).
func FuzzCompile(f *testing.F) {
	for _, e := range exprs {
		f.Add(e)
	}
	for _, e := range []string{"inbound", "outbound and tcp", "port 80 or 443 or", "((((", "not not not ip", "net ::1 mask ffff::"} {
		f.Add(e)
	}
	pkts := corpus()
	f.Fuzz(func(t *testing.T, expr string) {
		prog, err := Compile(expr, 0)
		if err != nil {
			return
		}
		if len(prog) > maxInsns {
			t.Fatalf("%d instructions", len(prog))
		}
		if _, err := bpf.Assemble(prog); err != nil {
			t.Fatalf("%q: assemble: %v", expr, err)
		}
		for _, ins := range prog {
			if _, ok := ins.(bpf.LoadExtension); ok {
				return
			}
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatalf("%q: NewVM: %v", expr, err)
		}
		for _, p := range pkts {
			if _, err := vm.Run(p); err != nil {
				t.Fatalf("%q: run: %v", expr, err)
			}
		}
	})
}
