package allinone

// Kubernetes JSON schemas for kubeconform, made from the API server's own
// OpenAPI document. kubeconform fetches its schemas from GitHub by default;
// here they come from the k8s.io/kubernetes module (api/openapi-spec/
// swagger.json) through the Go module proxy, converted the way kubeconform's
// openapi2jsonschema converts them: one file per kind, named
// <kind>-<group>-<version>.json, strict (no unknown fields).

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapline/tapline/proto/mirrorlab"
)

// kubernetesModule is the Kubernetes release whose API the chart is checked
// against (.ci/run downloads it ahead).
const kubernetesModule = "k8s.io/kubernetes@v1.37.2"

// kubeSchemas holds the Kubernetes OpenAPI definitions, strict, and
// writes kubeconform schema files for the kinds a test renders.
type kubeSchemas struct {
	dir  string
	defs map[string]any
	kind map[string]string // "apps/v1 Deployment" -> definition name
}

// loadKubeSchemas reads the OpenAPI document of kubernetesModule.
func loadKubeSchemas(t *testing.T) *kubeSchemas {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", kubernetesModule).Output()
	if err != nil {
		mirrorlab.Unavailable(t, "the Kubernetes OpenAPI document ("+kubernetesModule+") cannot be downloaded: "+err.Error())
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v %s", kubernetesModule, err, out)
	}
	raw, err := os.ReadFile(filepath.Join(mod.Dir, "api", "openapi-spec", "swagger.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	k := &kubeSchemas{dir: t.TempDir(), defs: map[string]any{}, kind: map[string]string{}}
	for name, d := range doc.Definitions {
		k.defs[name] = strictSchema(name, d)
		gvks, _ := d["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			apiVersion := version
			if group != "" {
				apiVersion = group + "/" + version
			}
			k.kind[apiVersion+" "+kind] = name
		}
	}
	if len(k.kind) < 100 {
		t.Fatalf("only %d kinds in %s's OpenAPI document", len(k.kind), kubernetesModule)
	}
	return k
}

// location is kubeconform's -schema-location template for the directory.
func (k *kubeSchemas) location() string {
	return filepath.Join(k.dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json")
}

// write stores the schema of one kind under the name kubeconform looks for
// (<kind>-<first label of the group>-<version>.json); false when this
// Kubernetes release has no such kind.
func (k *kubeSchemas) write(t *testing.T, apiVersion, kind string) bool {
	t.Helper()
	name, ok := k.kind[apiVersion+" "+kind]
	if !ok {
		return false
	}
	group, version, found := strings.Cut(apiVersion, "/")
	file := strings.ToLower(kind)
	if found {
		file += "-" + strings.ToLower(strings.Split(group, ".")[0])
	} else {
		version = group
	}
	file += "-" + strings.ToLower(version) + ".json"
	defs := map[string]any{}
	k.reach(name, defs)
	b, err := json.Marshal(map[string]any{
		"$schema":     "http://json-schema.org/draft-07/schema#",
		"$ref":        "#/definitions/" + name,
		"definitions": defs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.dir, file), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return true
}

// reach collects the definition and every definition it refers to.
func (k *kubeSchemas) reach(name string, into map[string]any) {
	if _, done := into[name]; done {
		return
	}
	d, ok := k.defs[name]
	if !ok {
		return
	}
	into[name] = d
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				k.reach(strings.TrimPrefix(ref, "#/definitions/"), into)
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(d)
}

// strictSchema turns one OpenAPI v2 definition into JSON schema: objects
// with properties refuse unknown fields, int-or-string and quantities
// accept both forms, and references point into the same document.
func strictSchema(name string, d map[string]any) any {
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	}
	return strictify(d)
}

func strictify(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x)+1)
		for k, e := range x {
			if strings.HasPrefix(k, "x-kubernetes-") || k == "description" {
				continue
			}
			if k == "properties" {
				props := map[string]any{}
				for pk, pv := range e.(map[string]any) {
					props[pk] = strictify(pv)
				}
				m[k] = props
				continue
			}
			m[k] = strictify(e)
		}
		if _, ok := m["properties"]; ok {
			if _, set := m["additionalProperties"]; !set {
				m["additionalProperties"] = false
			}
		}
		if f, _ := m["format"].(string); f == "int-or-string" {
			delete(m, "type")
			delete(m, "format")
			m["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = strictify(e)
		}
		return out
	}
	return v
}
