package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// startProdDecap runs bin/decap with args in the production namespace as
// process name of p (log <name>.log, its tail shown when the test fails,
// stopped at the end), and waits until its /healthz on addr answers 200.
// `decap capture` and `decap keys --follow` run there, beside production.
func startProdDecap(t *testing.T, p *Pipeline, name, addr string, args []string) *Proc {
	t.Helper()
	pr := &Proc{Name: name, ns: p.Lab.Prod, bin: filepath.Join(binDir, "decap"), args: args,
		log: filepath.Join(p.Dir, name+".log")}
	p.Procs[name] = pr
	t.Cleanup(func() {
		if pr.Running() {
			pr.Stop()
		}
		if t.Failed() {
			t.Logf("--- %s log (tail) ---\n%s", name, pr.Tail(40))
		}
	})
	pr.Start(t)
	waitProdHealthy(t, p, name, addr)
	return pr
}

// waitProdHealthy waits until process name of p, in the production
// namespace, answers 200 on its /healthz at addr; it fails the test at
// once if the process exited.
func waitProdHealthy(t *testing.T, p *Pipeline, name, addr string) {
	t.Helper()
	pr := p.Procs[name]
	waitFor(t, 60*time.Second, "decap "+name+" healthy", func() error {
		if !pr.Running() {
			t.Fatalf("decap %s exited:\n%s", name, pr.Tail(30))
		}
		resp, err := nsHTTPClient(p.Lab.Prod).Get("http://" + addr + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", addr, resp.Status)
		}
		return nil
	})
}
