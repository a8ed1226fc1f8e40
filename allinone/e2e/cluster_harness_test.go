package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
)

// clusterNATS replaces the single natsd by n cluster nodes in the target
// namespace: client ports 4222…, route ports 6222…, one store each.
func (p *Pipeline) clusterNATS(n int) {
	var urls, routes []string
	for i := range n {
		urls = append(urls, "nats://127.0.0.1:"+strconv.Itoa(4222+i))
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(6222+i))
	}
	for i, name := range natsNodeNames(n) {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		p.Procs[name] = &Proc{Name: name, ns: p.Lab.Target, bin: filepath.Join(binDir, "natsd"),
			args: []string{"--port", strconv.Itoa(4222 + i), "--store", filepath.Join(p.Dir, "jetstream-"+strconv.Itoa(i)),
				"--name", "n" + strconv.Itoa(i), "--cluster-port", strconv.Itoa(6222 + i), "--routes", strings.Join(others, ",")},
			log: filepath.Join(p.Dir, name+".log")}
	}
	p.URL = strings.Join(urls, ",")
}

// Healthy reports whether the stage's /healthz answers 200 now.
func (p *Pipeline) Healthy(name string) bool {
	resp, err := p.HTTPClient().Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPorts[name]))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
