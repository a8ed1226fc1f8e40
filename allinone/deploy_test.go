package allinone

// Checks of the container deployment without a container engine: the
// compose file through the Compose Specification loader `docker compose`
// uses, the NATS, Prometheus and Grafana files it mounts, and the
// Dockerfile's build step run for every STAGE.

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v4"

	"github.com/tapline/tapline/decap/send"
	"github.com/tapline/tapline/proto/stage"
)

const repoRoot = ".."

// stageHTTP is every stage's default /healthz and /metrics port.
var stageHTTP = map[string]string{"decap": "9101", "reassemble": "9102", "replay": "9103", "archive": "9104"}

func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(repoRoot, "compose.yaml")},
		cli.WithWorkingDirectory(repoRoot), cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return p
}

func serviceNames(p *types.Project) []string {
	var names []string
	for n := range p.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func env(t *testing.T, s types.ServiceConfig, name string) string {
	t.Helper()
	v, ok := s.Environment[name]
	if !ok || v == nil {
		t.Fatalf("service %s: environment %s not set", s.Name, name)
	}
	return *v
}

func hasPort(s types.ServiceConfig, target uint32, proto string) bool {
	for _, p := range s.Ports {
		if p.Target == target && p.Protocol == proto && p.Published != "" {
			return true
		}
	}
	return false
}

// stageFlagEnv returns the environment variables a stage reads, or nil
// when the stage is not compiled into this build yet.
func stageFlagEnv(name string) map[string]bool {
	s := NewConfig().Stage(name)
	if s == nil {
		return nil
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	s.Register(fs)
	envs := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { envs[stage.EnvNameIn(fs, f.Name)] = true })
	for _, alias := range stage.Aliases {
		envs[alias] = true
	}
	return envs
}

func TestComposeDefaultPipeline(t *testing.T) {
	p := loadCompose(t)
	want := []string{"archive", "decap", "nats", "reassemble", "replay", "s3", "s3-init"}
	if got := serviceNames(p); !slices.Equal(got, want) {
		t.Fatalf("default services %v, want %v", got, want)
	}
	for name, svc := range p.Services {
		if svc.ContainerName != "" {
			t.Errorf("%s: container_name %q prevents --scale", name, svc.ContainerName)
		}
		if name != "s3-init" && svc.HealthCheck == nil {
			t.Errorf("%s: no health check", name)
		}
		if name != "s3-init" && svc.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q", name, svc.Restart)
		}
	}

	nats := p.Services["nats"]
	if !strings.HasPrefix(nats.Image, "nats:") {
		t.Errorf("nats image %q is not the official one", nats.Image)
	}
	if !slices.ContainsFunc(nats.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Target == "/data"
	}) {
		t.Errorf("nats: no persistent volume on /data: %+v", nats.Volumes)
	}
	if !strings.Contains(strings.Join(nats.HealthCheck.Test, " "), "js-enabled-only") {
		t.Errorf("nats health check does not check JetStream: %v", nats.HealthCheck.Test)
	}
	setNATSConfEnv(t, nats)
	opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, "deploy/nats/nats.conf"))
	if err != nil {
		t.Fatalf("deploy/nats/nats.conf: %v", err)
	}
	if !opts.JetStream || opts.StoreDir != "/data" || opts.MaxPayload < 2<<20 {
		t.Errorf("nats.conf: jetstream %v store %q max_payload %d (chunks of 1 MiB need more than the 1 MB default)",
			opts.JetStream, opts.StoreDir, opts.MaxPayload)
	}

	if c := p.Services["s3-init"].DependsOn["s3"].Condition; c != types.ServiceConditionHealthy {
		t.Errorf("s3-init waits for s3 with condition %q", c)
	}
	if !strings.Contains(strings.Join(p.Services["s3-init"].Entrypoint, " "), "create-bucket") {
		t.Errorf("s3-init does not create the bucket")
	}

	for name, port := range stageHTTP {
		svc := p.Services[name]
		if svc.Build == nil || svc.Build.Args["STAGE"] == nil || *svc.Build.Args["STAGE"] != name {
			t.Errorf("%s: not built with STAGE=%s", name, name)
		}
		if got := svc.HealthCheck.Test; !slices.Equal(got, []string{"CMD", "/stage", stage.HealthcheckCommand}) {
			t.Errorf("%s: health check %v", name, got)
		}
		if c := svc.DependsOn["nats"].Condition; c != types.ServiceConditionHealthy {
			t.Errorf("%s: waits for nats with %q", name, c)
		}
		if got := env(t, svc, "NATS_URL"); got != "nats://nats:4222" {
			t.Errorf("%s: NATS_URL %q", name, got)
		}
		if got := env(t, svc, "TAPLINE_HTTP"); got != ":"+port {
			t.Errorf("%s: TAPLINE_HTTP %q, want :%s", name, got, port)
		}
		if got := env(t, svc, "TAPLINE_SHARDS"); got != "16" {
			t.Errorf("%s: TAPLINE_SHARDS %q: every stage must agree", name, got)
		}
		if envs := stageFlagEnv(name); envs != nil {
			for k := range svc.Environment {
				if strings.HasPrefix(k, "TAPLINE_") && !envs[k] {
					t.Errorf("%s: environment %s matches no flag of the stage", name, k)
				}
			}
		} else {
			t.Logf("%s not compiled into the all-in-one yet: its environment names are not checked", name)
		}
	}
	decap := p.Services["decap"]
	if !hasPort(decap, 4789, "udp") || !hasPort(decap, 6081, "udp") || !hasPort(decap, 9101, "tcp") {
		t.Errorf("decap must publish UDP 4789, UDP 6081 and its health port: %+v", decap.Ports)
	}
	if _, ok := decap.Environment["TAPLINE_ALLOW_SRC"]; !ok {
		t.Errorf("decap: TAPLINE_ALLOW_SRC (the mirror source allow-list) not exposed")
	}
	if len(p.Services["reassemble"].Ports) != 0 {
		t.Errorf("reassemble publishes ports: --scale reassemble=3 would collide")
	}
	archive := p.Services["archive"]
	if archive.DependsOn["s3-init"].Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("archive must start after the bucket exists")
	}
}

func TestComposeScaleReassemble(t *testing.T) {
	p := loadCompose(t)
	p, err := p.WithServicesEnabled("reassemble")
	if err != nil {
		t.Fatal(err)
	}
	svc := p.Services["reassemble"]
	svc.SetScale(3)
	if svc.GetScale() != 3 || svc.ContainerName != "" || len(svc.Ports) != 0 {
		t.Fatalf("reassemble cannot scale: %+v", svc)
	}
}

func TestComposeDemoProfile(t *testing.T) {
	p := loadCompose(t, "demo")
	for _, name := range []string{"traffic", "testsystem"} {
		if _, ok := p.Services[name]; !ok {
			t.Fatalf("profile demo lacks %s", name)
		}
	}
	traffic := p.Services["traffic"]
	if len(traffic.Command) == 0 || traffic.Command[0] != "send" || !slices.Contains(traffic.Command, "--loop") || !slices.Contains(traffic.Command, "decap:4789") {
		t.Errorf("traffic is not `decap send --loop` to decap: %v", traffic.Command)
	}
	// The command line as `decap send` parses it (FILE first or after the
	// flags; one file).
	var sc send.Config
	sfs := flag.NewFlagSet("decap send", flag.ContinueOnError)
	sc.Register(sfs)
	args := []string(traffic.Command[1:])
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sc.File, args = args[0], args[1:]
	}
	if err := sfs.Parse(args); err != nil {
		t.Fatalf("traffic: decap send rejects %v: %v", traffic.Command, err)
	}
	if sc.File == "" && sfs.NArg() > 0 {
		sc.File = sfs.Arg(0)
	}
	if err := sc.Validate(); err != nil || sfs.NArg() > 1 || sc.Loop != 0 {
		t.Errorf("traffic: decap send %v: %v, %d extra args, loop %d (want forever)", traffic.Command, err, sfs.NArg(), sc.Loop)
	}
	for _, arg := range traffic.Command {
		if strings.HasPrefix(arg, "/captures/") {
			if _, err := os.Stat(filepath.Join(repoRoot, "testdata/captures", strings.TrimPrefix(arg, "/captures/"))); err != nil {
				t.Errorf("traffic sends a capture that is not bundled: %v", err)
			}
		}
	}
	ts := p.Services["testsystem"]
	if len(ts.Command) == 0 || ts.Command[0] != "testsystem" || *ts.Build.Args["STAGE"] != "tapline" {
		t.Errorf("testsystem is not the all-in-one's test system: %v", ts.Command)
	}
	if !strings.Contains(env(t, p.Services["replay"], "TAPLINE_TARGET"), "testsystem:8080") {
		t.Errorf("replay does not target the demo test system by default")
	}
	p2 := loadCompose(t)
	if _, ok := p2.Services["traffic"]; ok {
		t.Errorf("traffic runs without the demo profile")
	}
}

func TestComposeObservabilityProfile(t *testing.T) {
	p := loadCompose(t, "observability")
	for _, name := range []string{"prometheus", "grafana"} {
		if _, ok := p.Services[name]; !ok {
			t.Fatalf("profile observability lacks %s", name)
		}
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
			DNS     []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	scraped := map[string]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, d := range sc.DNS {
			for _, n := range d.Names {
				scraped[n] = strconv.Itoa(d.Port)
			}
		}
	}
	for name, port := range stageHTTP {
		if scraped[name] != port {
			t.Errorf("prometheus does not scrape %s on %s (got %q)", name, port, scraped[name])
		}
	}
	for _, f := range []string{"deploy/grafana/provisioning/datasources/prometheus.yml", "deploy/grafana/provisioning/dashboards/tapline.yml"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	dash := loadDashboard(t)
	var titles []string
	for _, p := range dash.Panels {
		titles = append(titles, strings.ToLower(p.Title))
	}
	all := strings.Join(titles, "|")
	for _, want := range []string{"intake", "kernel drops", "gap", "incomplete", "replay lag", "archive backlog"} {
		if !strings.Contains(all, want) {
			t.Errorf("dashboard has no panel about %q (panels: %v)", want, titles)
		}
	}
}

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/grafana/dashboards/tapline.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	return d
}

// dashboardMetrics returns every tapline_* metric the dashboard queries.
func dashboardMetrics(t *testing.T) []string {
	re := regexp.MustCompile(`tapline_[a-z0-9_]+`)
	seen := map[string]bool{}
	for _, p := range loadDashboard(t).Panels {
		for _, tg := range p.Targets {
			for _, m := range re.FindAllString(tg.Expr, -1) {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					m = strings.TrimSuffix(m, suf)
				}
				seen[m] = true
			}
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// dockerBuildStep returns the ARG defaults and the shell script of the
// Dockerfile's RUN instruction that runs go build.
func dockerBuildStep(t *testing.T) (args map[string]string, script string, bases []string) {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var instrs []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if cur.Len() == 0 && (strings.HasPrefix(strings.TrimSpace(line), "#") || strings.TrimSpace(line) == "") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + "\n")
			continue
		}
		cur.WriteString(line)
		instrs = append(instrs, cur.String())
		cur.Reset()
	}
	args = map[string]string{}
	for _, in := range instrs {
		kw, rest, _ := strings.Cut(in, " ")
		switch strings.ToUpper(kw) {
		case "ARG":
			k, v, _ := strings.Cut(strings.TrimSpace(rest), "=")
			args[k] = v
		case "FROM":
			bases = append(bases, strings.Fields(rest)[0])
		case "RUN":
			if !strings.Contains(rest, "go build") {
				continue
			}
			fields := strings.TrimSpace(rest)
			for strings.HasPrefix(fields, "--") {
				_, after, _ := strings.Cut(fields, " ")
				fields = strings.TrimSpace(after)
			}
			script = fields
		}
	}
	if script == "" {
		t.Fatal("Dockerfile: no RUN with go build")
	}
	return args, script, bases
}

func hasGoFiles(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	return len(m) > 0
}

func TestDockerfileBuildsStaticBinaries(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not on PATH")
	}
	args, script, bases := dockerBuildStep(t)
	work, err := os.ReadFile(filepath.Join(repoRoot, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(work); m == nil || args["GO_VERSION"] != string(m[1]) {
		t.Errorf("Dockerfile GO_VERSION %q differs from go.work's go version", args["GO_VERSION"])
	}
	final := bases[len(bases)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final image %q is not distroless static or scratch", final)
	}
	if !strings.Contains(script, "CGO_ENABLED=0") || !strings.Contains(script, "-trimpath") {
		t.Errorf("build step lacks CGO_ENABLED=0 or -trimpath: %s", script)
	}

	stages := map[string]string{"tapline": "allinone/cmd/tapline"}
	for s := range stageHTTP {
		stages[s] = s + "/cmd/" + s
	}
	for name, dir := range stages {
		t.Run(name, func(t *testing.T) {
			if !hasGoFiles(filepath.Join(repoRoot, dir)) {
				t.Skipf("%s has no main package yet", dir)
			}
			if testing.Short() && name != "tapline" {
				t.Skip("-short: only the all-in-one")
			}
			out := t.TempDir()
			cmd := exec.Command("sh", "-c", script)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "STAGE="+name, "OUT="+out, "CGO_ENABLED=1")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("Dockerfile build step for STAGE=%s: %v\n%s", name, err, b)
			}
			bin := filepath.Join(out, "stage")
			ef, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer ef.Close()
			for _, p := range ef.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("%s is dynamically linked", name)
				}
			}
			bi, err := buildinfo.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range bi.Settings {
				settings[s.Key] = s.Value
			}
			if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
				t.Errorf("%s built with CGO_ENABLED=%q -trimpath=%q", name, settings["CGO_ENABLED"], settings["-trimpath"])
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "STAGE=nope", "OUT="+t.TempDir())
		b, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(b), "STAGE must be") {
			t.Fatalf("unknown STAGE accepted: %v %s", err, b)
		}
	})
}

// TestDashboardMetricsExist checks that every metric the Grafana dashboard
// queries is registered by its stage's code and documented in
// docs/operations.md.
func TestDashboardMetricsExist(t *testing.T) {
	checkMetricsExist(t, "dashboard", dashboardMetrics(t))
}

// TestAlertRules checks deploy/prometheus/alerts.yml: loaded by the
// Prometheus configuration and mounted by compose, every rule complete,
// every metric real.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/prometheus/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	re := regexp.MustCompile(`tapline_[a-z0-9_]+`)
	seen := map[string]bool{}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" {
				t.Errorf("incomplete rule %+v", r)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("rule %s: unbalanced parentheses in %s", r.Alert, r.Expr)
			}
			for _, m := range re.FindAllString(r.Expr, -1) {
				seen[strings.TrimSuffix(m, "_bucket")] = true
			}
		}
	}
	if n < 5 {
		t.Errorf("only %d alert rules", n)
	}
	var ms []string
	for m := range seen {
		ms = append(ms, m)
	}
	slices.Sort(ms)
	checkMetricsExist(t, "alerts.yml", ms)
	prom, _ := os.ReadFile(filepath.Join(repoRoot, "deploy/prometheus/prometheus.yml"))
	if !strings.Contains(string(prom), "/etc/prometheus/alerts.yml") {
		t.Error("prometheus.yml does not load /etc/prometheus/alerts.yml")
	}
	p := loadCompose(t, "observability")
	if !slices.ContainsFunc(p.Services["prometheus"].Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Target == "/etc/prometheus/alerts.yml" && strings.HasSuffix(v.Source, "deploy/prometheus/alerts.yml")
	}) {
		t.Error("compose does not mount deploy/prometheus/alerts.yml into prometheus")
	}
}

// checkMetricsExist checks each tapline_<stage>_<what> metric is
// registered by its stage's code and documented in docs/operations.md.
func checkMetricsExist(t *testing.T, where string, metrics []string) {
	t.Helper()
	ops, err := os.ReadFile(filepath.Join(repoRoot, "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]string{}
	for _, m := range metrics {
		parts := strings.SplitN(m, "_", 3)
		if len(parts) < 3 {
			t.Errorf("metric %s: not tapline_<stage>_<what>", m)
			continue
		}
		stageName, rest := parts[1], parts[2]
		src, ok := sources[stageName]
		if !ok {
			var b strings.Builder
			_ = filepath.WalkDir(filepath.Join(repoRoot, stageName), func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
					if data, err := os.ReadFile(p); err == nil {
						b.Write(data)
					}
				}
				return nil
			})
			src = b.String()
			sources[stageName] = src
		}
		if !strings.Contains(src, `"`+m+`"`) && !strings.Contains(src, `"`+rest+`"`) {
			t.Errorf("%s queries %s, which %s does not register", where, m, stageName)
		}
		if !strings.Contains(string(ops), "`"+m+"`") {
			t.Errorf("%s metric %s is not documented in docs/operations.md", where, m)
		}
	}
}

func TestComposeAWSOverride(t *testing.T) {
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "compose.yaml"), filepath.Join(repoRoot, "deploy/compose.aws.yaml")},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithEnv([]string{"TAPLINE_BUCKET=tapline-archive", "AWS_REGION=eu-west-1"}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml + deploy/compose.aws.yaml: %v", err)
	}
	for _, name := range []string{"s3", "s3-init"} {
		if _, ok := p.Services[name]; ok {
			t.Errorf("%s runs with the AWS override", name)
		}
	}
	archive := p.Services["archive"]
	if _, ok := archive.DependsOn["s3-init"]; ok || len(archive.DependsOn) != 1 {
		t.Errorf("archive depends on %v, want nats only", archive.DependsOn)
	}
	for k, want := range map[string]string{
		"TAPLINE_STORE": "s3://tapline-archive/tapline", "TAPLINE_S3_ENDPOINT": "", "TAPLINE_S3_PATH_STYLE": "false",
		"TAPLINE_S3_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
	} {
		if got := env(t, archive, k); got != want {
			t.Errorf("archive %s = %q, want %q", k, got, want)
		}
	}
	// Without the bucket the override refuses to load, with a clear message.
	opts, _ = cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "compose.yaml"), filepath.Join(repoRoot, "deploy/compose.aws.yaml")},
		cli.WithWorkingDirectory(repoRoot), cli.WithEnv([]string{"AWS_REGION=eu-west-1"}))
	if _, err := opts.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "TAPLINE_BUCKET") {
		t.Errorf("missing TAPLINE_BUCKET: %v", err)
	}
}
