package deploy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	chartDir     = "helm/kstate"
	kustomizeDir = "kustomize"
	// release and its namespace for every Helm render; the Kustomize base uses the same names.
	releaseName      = "kstate"
	releaseNamespace = "kstate"
)

// kubeVersion is the cluster version the chart is rendered for (Helm checks Chart.yaml's
// kubeVersion against it, and templates may read it).
var kubeVersion = chartutil.KubeVersion{Version: "v1.31.0", Major: "1", Minor: "31"}

// helmRender does what `helm install --dry-run` (`helm template`) does, in process and without a
// cluster: load the chart, validate the values against values.schema.json, check kubeVersion,
// render. valuesYAML is a values file's content (merged over values.yaml, as -f does).
func helmRender(t testing.TB, valuesYAML string, kv chartutil.KubeVersion) (manifest, notes string, err error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(valuesYAML), &vals); err != nil {
		t.Fatalf("values: %v", err)
	}
	inst := action.NewInstall(&action.Configuration{Log: t.Logf})
	inst.ClientOnly = true
	inst.DryRun = true
	inst.ReleaseName = releaseName
	inst.Namespace = releaseNamespace
	inst.KubeVersion = &kv
	rel, err := inst.Run(ch, vals)
	if err != nil {
		return "", "", err
	}
	return rel.Manifest, rel.Info.Notes, nil
}

// kustomizeBuild runs `kustomize build dir` (dir relative to kustomizeDir) on an in-memory copy
// of the kustomize folder: a reference outside it (a remote base, ../../helm) fails.
func kustomizeBuild(t testing.TB, dir string) ([]byte, error) {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(kustomizeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile("/"+filepath.ToSlash(path), b)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", kustomizeDir, err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(mem, "/"+kustomizeDir+"/"+dir)
	if err != nil {
		return nil, err
	}
	return rm.AsYaml()
}

// kstateNode is the kstate container of a rendered StatefulSet as one pod sees it: its
// environment resolved and its arguments expanded the way the kubelet does.
type kstateNode struct {
	podName, namespace string
	env                map[string]string // $(VAR) values; secrets as "secret:<name>/<key>"
	flags              map[string]string // --flag=value, a bool flag given alone as "true"
	flagOrder          []string
}

// nodeOf resolves the kstate container of the manifests' only StatefulSet for its pod ordinal 0.
func nodeOf(t testing.TB, m *manifests) *kstateNode {
	t.Helper()
	sets := m.statefulSets()
	if len(sets) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(sets))
	}
	ss := sets[0]
	c := container(t, ss.Spec.Template.Spec.Containers, "kstate")
	n := &kstateNode{podName: ss.Name + "-0", namespace: ss.Namespace, env: map[string]string{}, flags: map[string]string{}}
	if n.namespace == "" {
		// Namespace-less objects (the Kustomize base) go where `kubectl apply -n` puts them: the
		// Helm release's namespace, so that both render the same advertise address.
		n.namespace = releaseNamespace
	}
	for _, e := range c.Env {
		v := expand(e.Value, n.env)
		if vf := e.ValueFrom; vf != nil {
			switch {
			case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.name":
				v = n.podName
			case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.namespace":
				v = n.namespace
			case vf.SecretKeyRef != nil:
				v = "secret:" + vf.SecretKeyRef.Name + "/" + vf.SecretKeyRef.Key
			case vf.ConfigMapKeyRef != nil:
				v = configMapValue(t, m, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
			default:
				t.Fatalf("env %s: unexpected valueFrom %+v", e.Name, vf)
			}
		}
		n.env[e.Name] = v
	}
	if len(c.Command) != 0 {
		t.Errorf("kstate container overrides the image's entrypoint (kstate serve): command %q", c.Command)
	}
	for _, a := range c.Args {
		a = expand(a, n.env)
		if strings.Contains(a, "$(") {
			t.Errorf("argument %q refers to a variable the container does not define", a)
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || name == "" {
			t.Errorf("argument %q is not --flag or --flag=value", a)
			continue
		}
		if !ok {
			value = "\x00bool" // checked against the flag's type by checkFlags
		}
		if _, dup := n.flags[name]; dup {
			t.Errorf("flag --%s given twice", name)
		}
		n.flags[name] = value
		n.flagOrder = append(n.flagOrder, name)
	}
	return n
}

func configMapValue(t testing.TB, m *manifests, name, key string) string {
	for _, cm := range m.configMaps() {
		if cm.Name == name {
			if v, ok := cm.Data[key]; ok {
				return v
			}
		}
	}
	t.Fatalf("ConfigMap %s key %s not rendered", name, key)
	return ""
}

// expand replaces $(VAR) with the variable's value as the kubelet does for env values, command
// and args: $$ is a literal $, and an undefined $(VAR) stays as it is.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_NAME": "kstate-0", "NS": "prod"}
	for in, want := range map[string]string{
		"--node-id=$(POD_NAME)":    "--node-id=kstate-0",
		"$(POD_NAME).h.$(NS).svc":  "kstate-0.h.prod.svc",
		"$$(POD_NAME)":             "$(POD_NAME)",
		"$(UNDEFINED)-$(POD_NAME)": "$(UNDEFINED)-kstate-0",
		"price: $5, $(open":        "price: $5, $(open",
		"plain":                    "plain",
		"trailing $":               "trailing $",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func (n *kstateNode) String() string {
	var b strings.Builder
	for _, f := range n.flagOrder {
		fmt.Fprintf(&b, " --%s=%s", f, n.flags[f])
	}
	return strings.TrimSpace(b.String())
}
