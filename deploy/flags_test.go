package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// pendingFlags are flags the chart passes only behind an off-by-default value, for a kstate
// feature that has not landed yet. checkFlags accepts them while `kstate serve --help` does not
// list them, and fails once it does, so the entry is removed when the feature lands.
var pendingFlags = map[string]string{}

// serveFlags maps every flag `kstate serve --help` lists to its type ("" for a bool). The binary
// is $KSTATE_BIN, or built from the main module (the parent folder) once per test run.
var serveFlags = sync.OnceValues(func() (map[string]string, error) {
	bin := os.Getenv("KSTATE_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "kstate-deploy-test")
		if err != nil {
			return nil, err
		}
		tmpDirs = append(tmpDirs, dir)
		bin = filepath.Join(dir, "kstate")
		build := exec.Command("go", "build", "-o", bin, "./cmd/kstate")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/kstate: %v\n%s", err, out)
		}
	}
	out, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("kstate serve --help: %v\n%s", err, out)
	}
	return parseHelp(string(out))
})

// tmpDirs are removed by TestMain.
var tmpDirs []string

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range tmpDirs {
		_ = os.RemoveAll(d)
	}
	os.Exit(code)
}

// helpFlag matches a cobra/pflag help line: "  -h, --help", "      --brokers strings   ...".
var helpFlag = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)(?: ([a-zA-Z0-9]+))?(?:\s{2,}|$)`)

func parseHelp(help string) (map[string]string, error) {
	flags := map[string]string{}
	for l := range strings.SplitSeq(help, "\n") {
		if m := helpFlag.FindStringSubmatch(l); m != nil {
			flags[m[1]] = m[2]
		}
	}
	for _, want := range []string{"brokers", "listen", "log-level", "help"} {
		if _, ok := flags[want]; !ok {
			return nil, fmt.Errorf("kstate serve --help: no --%s in\n%s", want, help)
		}
	}
	return flags, nil
}

func TestParseHelp(t *testing.T) {
	flags, err := parseHelp(`Usage:
  kstate serve [flags]

Flags:
      --brokers strings          Kafka bootstrap servers (default [127.0.0.1:9092])
  -h, --help                     help for serve
      --kafka-tls                connect to Kafka over TLS
      --listen string            gRPC address (default ":9000")
      --partitions int32         partitions of every entity topic (default 16)

Global Flags:
      --log-level string   log level: trace, debug, info, warn, error, off (default "info")
`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"brokers": "strings", "help": "", "kafka-tls": "", "listen": "string", "partitions": "int32", "log-level": "string"}
	if fmt.Sprint(flags) != fmt.Sprint(want) {
		t.Errorf("parseHelp = %v, want %v", flags, want)
	}
}

// flagErrors checks the node's flags against `kstate serve --help`: each must exist and its
// value parse as the flag's type.
func flagErrors(n *kstateNode, known map[string]string) []string {
	var errs []string
	for _, name := range n.flagOrder {
		v := n.flags[name]
		typ, ok := known[name]
		if !ok {
			if _, pending := pendingFlags[name]; pending {
				continue
			}
			errs = append(errs, fmt.Sprintf("--%s: kstate serve has no such flag", name))
			continue
		}
		if v == "\x00bool" {
			if typ != "" {
				errs = append(errs, fmt.Sprintf("--%s needs a value (%s)", name, typ))
			}
			continue
		}
		var err error
		switch typ {
		case "":
			_, err = strconv.ParseBool(v)
		case "int32":
			_, err = strconv.ParseInt(v, 10, 32)
		case "int":
			_, err = strconv.Atoi(v)
		case "duration":
			_, err = time.ParseDuration(v)
		case "strings", "string":
		default:
			err = fmt.Errorf("type %s unknown to this test", typ)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("--%s=%s: %v", name, v, err))
		}
	}
	return errs
}

func TestPendingFlags(t *testing.T) {
	known, err := serveFlags()
	if err != nil {
		t.Fatal(err)
	}
	for f, why := range pendingFlags {
		if _, ok := known[f]; ok {
			t.Errorf("kstate serve now has --%s: remove it from pendingFlags (%s) and test it like the others", f, why)
		}
	}
}

func container(t testing.TB, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}
