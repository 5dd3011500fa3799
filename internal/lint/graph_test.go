// Package lint holds tests that keep the code base's shape: the one-way package graph of
// DESIGN.md §6 and the rule that only one package talks to each heavy dependency.
package lint

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/kstatehq/kstate"

// allowed lists, per top-level folder, the other top-level folders of ours it may import directly.
// Because every list points down the graph, the transitive rules (broker and partition never meet)
// follow. Folders not listed (cmd) may import anything of ours.
var allowed = map[string][]string{
	"proto":      {},
	"crdtlog":    {"proto"},
	"sdk":        {"proto", "crdtlog", "internal"},
	"broker":     {"proto", "internal"},
	"partition":  {"proto", "internal"},
	"processor":  {"proto", "crdtlog", "sdk", "partition", "broker", "internal"},
	"projection": {"proto", "broker", "partition", "internal"},
	"examples":   {"proto", "crdtlog", "sdk", "processor"},
	"internal":   {"proto"},
}

// exclusive lists third-party import prefixes that only one folder of ours may import directly.
var exclusive = map[string]string{
	"github.com/cockroachdb/pebble": "partition",
	"github.com/twmb/franz-go":      "broker",
	"github.com/IBM/sarama":         "broker",
	// The OpenTelemetry SDK, exporters and gRPC instrumentation are the node's (its tracing);
	// other packages use the API (go.opentelemetry.io/otel/trace) at most.
	"go.opentelemetry.io/otel/sdk":       "processor",
	"go.opentelemetry.io/otel/exporters": "processor",
	"go.opentelemetry.io/contrib":        "processor",
}

type pkg struct {
	path    string
	imports []string
	deps    []string
}

func list(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-test", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", mod+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "|", 3)
		if len(parts) != 3 {
			continue
		}
		path := parts[0]
		// "-test" adds "p [p.test]" variants and "p.test" mains; the variant carries the test imports.
		if i := strings.Index(path, " "); i >= 0 {
			path = path[:i]
		}
		if strings.HasSuffix(path, ".test") {
			continue
		}
		pkgs = append(pkgs, pkg{path: path, imports: strings.Fields(parts[1]), deps: strings.Fields(parts[2])})
	}
	return pkgs
}

// folder returns the top-level folder of an import path of ours, or "" for third-party paths.
func folder(path string) string {
	if path != mod && !strings.HasPrefix(path, mod+"/") {
		return ""
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(path, mod), "/")
	if i := strings.Index(rest, "/"); i >= 0 {
		rest = rest[:i]
	}
	// An external test package of a top-level folder ("broker_test") belongs to that folder.
	return strings.TrimSuffix(rest, "_test")
}

func TestPackageGraph(t *testing.T) {
	pkgs := list(t)
	if len(pkgs) == 0 {
		t.Fatal("go list returned no packages")
	}
	for _, p := range pkgs {
		from := folder(p.path)
		ok, restricted := allowed[from]
		for _, d := range p.imports {
			to := folder(d)
			if to == "" || to == from {
				continue
			}
			if to == "cmd" {
				t.Errorf("%s imports %s: nothing may import cmd/", p.path, d)
			}
			if restricted && !contains(ok, to) {
				t.Errorf("%s imports %s: %s/ may only import %v (DESIGN.md §6)", p.path, d, from, ok)
			}
		}
		// The one rule worth checking transitively too: broker and partition never meet.
		for _, d := range p.deps {
			if to := folder(d); (from == "broker" && to == "partition") || (from == "partition" && to == "broker") {
				t.Errorf("%s depends on %s: broker and partition never import each other", p.path, d)
			}
		}
		for _, imp := range p.imports {
			for prefix, owner := range exclusive {
				if strings.HasPrefix(imp, prefix) && from != owner && from != "" {
					t.Errorf("%s imports %s: only %s/ may import %s", p.path, imp, owner, prefix)
				}
			}
		}
	}
}

// layers lists, per package inside processor/, the other processor packages it may import
// directly, so the runtime's concepts stay one-way: runtime (processor) → front door → catalog →
// core; metrics (the node's Prometheus metrics) and tracing (its OpenTelemetry spans) are leaves. Tests may also import proctest, the
// shared test helpers. A processor package not listed fails the test, so a new one must take its
// place here.
var layers = map[string][]string{
	mod + "/processor":                    {"frontdoor", "catalog", "core", "metrics", "tracing", "proctest"},
	mod + "/processor/internal/frontdoor": {"catalog", "proctest"},
	mod + "/processor/internal/catalog":   {"core", "proctest"},
	mod + "/processor/internal/core":      {},
	mod + "/processor/internal/metrics":   {},
	mod + "/processor/internal/tracing":   {},
	mod + "/processor/internal/proctest":  {},
}

func TestProcessorLayers(t *testing.T) {
	for _, p := range list(t) {
		if p.path != mod+"/processor" && !strings.HasPrefix(p.path, mod+"/processor/") {
			continue
		}
		path := strings.TrimSuffix(p.path, "_test")
		ok, known := layers[path]
		if !known {
			t.Errorf("%s is not in layers: add it with the processor packages it may import", p.path)
			continue
		}
		for _, d := range p.imports {
			if d == path || (d != mod+"/processor" && !strings.HasPrefix(d, mod+"/processor/")) {
				continue
			}
			name := d[strings.LastIndex(d, "/")+1:]
			if d == mod+"/processor" || !contains(ok, name) {
				t.Errorf("%s imports %s: it may import only %v of processor (runtime → frontdoor → catalog → core)", p.path, d, ok)
			}
		}
	}
}

// pureCores are packages that decide and never do IO (the etcd-raft shape, DESIGN.md §6): they
// may import only these standard-library packages, and nothing of ours or of third parties.
var pureCores = map[string][]string{
	mod + "/processor/internal/core": {"container/heap", "container/list", "errors", "fmt", "time"},
}

func TestPureCoresDoNoIO(t *testing.T) {
	for path, std := range pureCores {
		// The package itself, not its tests: go list without -test.
		cmd := exec.Command("go", "list", "-f", "{{join .Imports \" \"}}", path)
		cmd.Dir = "../.."
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", path, err)
		}
		for _, imp := range strings.Fields(string(out)) {
			if !contains(std, imp) {
				t.Errorf("%s imports %s: a pure core may import only %v", path, imp, std)
			}
		}
	}
}

func TestFolderOf(t *testing.T) {
	for in, want := range map[string]string{
		mod + "/broker":            "broker",
		mod + "/broker/kafkatest":  "broker",
		mod + "/proto/kstate/v1":   "proto",
		mod + "/broker_test":       "broker",
		"github.com/twmb/franz-go": "",
	} {
		if got := folder(in); got != want {
			t.Errorf("folder(%q) = %q, want %q", in, got, want)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}
