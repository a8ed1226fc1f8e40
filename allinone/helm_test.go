package allinone

// Checks of the Helm chart (deploy/helm/tapline): `helm lint --strict` and
// `helm template | kubeconform` with every values file under the chart's
// ci/ directory, the rendered objects against the stages' real flags, and
// the values the chart must refuse.

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/tapline/tapline/proto/mirrorlab"
)

var chartDir = filepath.Join(repoRoot, "deploy", "helm", "tapline")

// manifest is the part of a rendered object the checks read.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Name string `yaml:"name"`
					Env  []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
						Protocol      string `yaml:"protocol"`
					} `yaml:"ports"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func (m manifest) env(name string) (string, bool) {
	for _, c := range m.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value, true
			}
		}
	}
	return "", false
}

func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		mirrorlab.Unavailable(t, name+" not installed (.ci/run installs it through the Go module proxy)")
	}
	return p
}

// chartWithoutDependencies copies the chart without its dependency on the
// official NATS chart, which cannot be fetched here: the checks cover
// Tapline's own templates (the NATS chart is validated by its authors).
func chartWithoutDependencies(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "tapline")
	if err := os.CopyFS(dst, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(dst, "Chart.yaml")
	raw, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	var chart map[string]any
	if err := yaml.Unmarshal(raw, &chart); err != nil {
		t.Fatal(err)
	}
	if _, ok := chart["dependencies"]; !ok {
		t.Fatal("Chart.yaml declares no dependency on the NATS chart")
	}
	delete(chart, "dependencies")
	out, err := yaml.Marshal(chart)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meta, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func helmTemplate(helm, chart string, args ...string) ([]byte, error) {
	cmd := exec.Command(helm, append([]string{"template", "tapline", chart, "--namespace", "tapline"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func decodeManifests(t *testing.T, rendered []byte) []manifest {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(rendered))
	var all []manifest
	for {
		var m manifest
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return all
		}
		if err != nil {
			t.Fatalf("rendered chart: %v", err)
		}
		if m.Kind != "" {
			all = append(all, m)
		}
	}
}

func TestHelmChart(t *testing.T) {
	helm := lookTool(t, "helm")
	kubeconform := lookTool(t, "kubeconform")
	schemas := loadKubeSchemas(t)
	chart := chartWithoutDependencies(t)
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files under %s/ci: %v", chartDir, err)
	}
	for _, values := range files {
		t.Run(strings.TrimSuffix(filepath.Base(values), "-values.yaml"), func(t *testing.T) {
			if out, err := exec.Command(helm, "lint", "--strict", chart, "-f", values).CombinedOutput(); err != nil {
				t.Fatalf("helm lint --strict -f %s: %v\n%s", values, err, out)
			}
			rendered, err := helmTemplate(helm, chart, "-f", values)
			if err != nil {
				t.Fatalf("helm template -f %s: %v", values, err)
			}
			objs := decodeManifests(t, rendered)
			for _, m := range objs {
				if !schemas.write(t, m.APIVersion, m.Kind) {
					t.Fatalf("%s %s %s: not a kind of Kubernetes %s", m.APIVersion, m.Kind, m.Metadata.Name, kubernetesModule)
				}
			}
			cmd := exec.Command(kubeconform, "-strict", "-summary", "-schema-location", schemas.location())
			cmd.Stdin = bytes.NewReader(rendered)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("kubeconform: %v\n%s", err, out)
			}
			checkRenderedStages(t, objs)
		})
	}
}

// checkRenderedStages checks what kubeconform cannot: every environment
// variable is a flag of the stage it is given to, the settings all stages
// must agree on agree, and split replays cover every shard once.
func checkRenderedStages(t *testing.T, objs []manifest) {
	t.Helper()
	agree := map[string]string{}
	replayShards := map[int]string{}
	durables := map[string]bool{}
	shards := 0
	for _, m := range objs {
		component := m.Metadata.Labels["app.kubernetes.io/component"]
		if len(m.Spec.Template.Spec.Containers) == 0 {
			continue
		}
		flags := stageFlagEnv(component)
		if flags == nil {
			t.Fatalf("%s %s: component %q is not a stage", m.Kind, m.Metadata.Name, component)
		}
		for _, c := range m.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "AWS_") && component == "archive" {
					continue
				}
				if !flags[e.Name] {
					t.Errorf("%s %s: %s is not an environment variable %s reads", m.Kind, m.Metadata.Name, e.Name, component)
				}
			}
			http, _ := m.env("TAPLINE_HTTP")
			var httpPort string
			for _, p := range c.Ports {
				if p.Name == "http" {
					httpPort = ":" + strconv.Itoa(p.ContainerPort)
				}
			}
			if http == "" || http != httpPort {
				t.Errorf("%s %s: TAPLINE_HTTP %q but the probed port is %q", m.Kind, m.Metadata.Name, http, httpPort)
			}
		}
		for _, name := range []string{"NATS_URL", "TAPLINE_SHARDS", "TAPLINE_STREAM_REPLICAS"} {
			v, ok := m.env(name)
			if !ok {
				t.Errorf("%s %s: %s not set", m.Kind, m.Metadata.Name, name)
			}
			if prev, seen := agree[name]; seen && prev != v {
				t.Errorf("%s %s: %s=%q, other stages %q", m.Kind, m.Metadata.Name, name, v, prev)
			}
			agree[name] = v
		}
		shards, _ = strconv.Atoi(agree["TAPLINE_SHARDS"])
		if component == "replay" {
			if d, ok := m.env("TAPLINE_DURABLE"); ok {
				if durables[d] {
					t.Errorf("two replays share the durable %s", d)
				}
				durables[d] = true
			}
			if list, ok := m.env("TAPLINE_REPLAY_SHARD"); ok {
				for _, s := range strings.Split(list, ",") {
					n, err := strconv.Atoi(s)
					if err != nil {
						t.Fatalf("%s: TAPLINE_REPLAY_SHARD %q", m.Metadata.Name, list)
					}
					if other, dup := replayShards[n]; dup {
						t.Errorf("shard %d replayed by %s and %s", n, other, m.Metadata.Name)
					}
					replayShards[n] = m.Metadata.Name
				}
			}
		}
	}
	if len(replayShards) > 0 {
		for s := 0; s < shards; s++ {
			if _, ok := replayShards[s]; !ok {
				t.Errorf("shard %d is replayed by no instance", s)
			}
		}
	}
}

// TestHelmChartRefuses: values that would run a broken pipeline fail at
// render time with the reason, not at run time.
func TestHelmChartRefuses(t *testing.T) {
	helm := lookTool(t, "helm")
	chart := chartWithoutDependencies(t)
	base := []string{"--set", "archive.store=s3://b/p"}
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"--set", "archive.store="}, "archive.store"},
		{[]string{"--set", "replay.enabled=true"}, "replay.target"},
		{[]string{"--set", "reassemble.replicas=17"}, "more than shards"},
		{[]string{"--set", "replay.enabled=true,replay.target=ws://t:1,replay.instances=20"}, "more than shards"},
		{[]string{"--set", "decap.mode=hostport"}, "/decap/mode"},
		{[]string{"--set", "nats.enabled=false"}, "natsUrl is required"},
		{[]string{"--set", "reassemble.replica=2"}, "replica"},
		{[]string{"--set", "streamReplicas=2"}, "streamReplicas"},
		{[]string{"--set", "replay.enabled=true,replay.target=http://t:1"}, "/replay/target"},
	} {
		_, err := helmTemplate(helm, chart, slices.Concat(base, c.set)...)
		if err == nil {
			t.Errorf("helm template %v: rendered, want a refusal naming %q", c.set, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("helm template %v: %v, want it to name %q", c.set, err, c.want)
		}
	}
}
