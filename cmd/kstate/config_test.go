package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kstatehq/kstate/broker/kafkatest"
)

// parsed returns the named subcommand of a fresh root with args parsed and the config applied.
func parsed(t *testing.T, name string, args ...string) (*cobra.Command, error) {
	t.Helper()
	root := newRootCmd()
	cmd, rest, err := root.Find(append(strings.Fields(name), args...))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return cmd, err
	}
	return cmd, applyConfig(cmd)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kstate.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigPrecedence: flag > environment > the command's section > top-level key > default.
func TestConfigPrecedence(t *testing.T) {
	both := writeFile(t, "partitions: 8\nserve:\n  partitions: 6\n")
	top := writeFile(t, "partitions: 8\n")
	for _, tc := range []struct {
		name string
		env  string // KSTATE_PARTITIONS, "" for unset
		args []string
		want string
	}{
		{"default", "", nil, "16"},
		{"top-level key", "", []string{"--config", top}, "8"},
		{"section over top-level", "", []string{"--config", both}, "6"},
		{"env over file", "4", []string{"--config", both}, "4"},
		{"flag over env", "4", []string{"--config", both, "--partitions", "2"}, "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("KSTATE_PARTITIONS", tc.env)
			}
			cmd, err := parsed(t, "serve", tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := cmd.Flags().Lookup("partitions").Value.String(); got != tc.want {
				t.Errorf("--partitions = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestConfigListsAndAliases(t *testing.T) {
	brokers := func(cmd *cobra.Command) string { return cmd.Flags().Lookup("brokers").Value.String() }
	file := writeFile(t, "brokers: [k0:9092, k1:9092]\nstatus:\n  json: true\n")

	cmd, err := parsed(t, "topics", "--config", file)
	if err != nil || brokers(cmd) != "[k0:9092,k1:9092]" {
		t.Fatalf("brokers from the file: %s, %v", brokers(cmd), err)
	}
	t.Setenv("KSTATE_BROKERS", "e0:9092,e1:9092")
	if cmd, err = parsed(t, "topics", "--config", file); err != nil || brokers(cmd) != "[e0:9092,e1:9092]" {
		t.Fatalf("brokers from KSTATE_BROKERS: %s, %v", brokers(cmd), err)
	}
	if cmd, err = parsed(t, "topics", "--bootstrap-server", "f0:9092"); err != nil || brokers(cmd) != "[f0:9092]" {
		t.Fatalf("brokers from --bootstrap-server: %s, %v", brokers(cmd), err)
	}
	// KSTATE_CONFIG names the file when --config is not given; the status section is status's own.
	t.Setenv("KSTATE_CONFIG", file)
	if cmd, err = parsed(t, "status"); err != nil || cmd.Flags().Lookup("json").Value.String() != "true" {
		t.Fatalf("status --json from the file's status section: %v", err)
	}
	// The global flags come from the environment too.
	t.Setenv("KSTATE_LOG_LEVEL", "debug")
	if cmd, err = parsed(t, "topics"); err != nil || cmd.Flags().Lookup("log-level").Value.String() != "debug" {
		t.Fatalf("--log-level from KSTATE_LOG_LEVEL: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, env, want string
	}{
		{"typo at the top", "partitons: 3\n", "", "unknown keys partitons"},
		{"typo in a section", "serve:\n  lissten: :9000\n", "", "unknown keys serve.lissten"},
		{"flag of another command in a section", "topics:\n  partitions: 3\n", "", "unknown keys topics.partitions"},
		{"bad value in the file", "serve:\n  partitions: lots\n", "", "serve.partitions"},
		{"a section for a flag", "partitions:\n  a: 1\n", "", "not a section"},
		{"bad value in the environment", "", "x", "$KSTATE_PARTITIONS"},
		{"not YAML", "a: [", "", "config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{}
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, tc.file))
			}
			if tc.env != "" {
				t.Setenv("KSTATE_PARTITIONS", tc.env)
			}
			if _, err := parsed(t, "serve", args...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := parsed(t, "serve", "--config", filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("a missing file: %v", err)
	}
}

// TestConfigThroughTheBinary: `kstate topics` takes its brokers from KSTATE_BROKERS and its
// namespace from the file, as the binary would.
func TestConfigThroughTheBinary(t *testing.T) {
	addrs := kafkatest.Kfake(t)
	t.Setenv("KSTATE_BROKERS", strings.Join(addrs, ","))
	root := newRootCmd()
	var out bytes.Buffer
	root.SetArgs([]string{"topics", "--log-level", "error", "--config", writeFile(t, "namespace: fromfile\n")})
	root.SetOut(&out)
	if err := root.Execute(); err != nil {
		t.Fatalf("kstate topics: %v", err)
	}
	if !strings.Contains(out.String(), "(no topics with prefix fromfile.)") {
		t.Fatalf("output %q, want the namespace of the file", out.String())
	}
}

// TestEveryFlagDocumented: every flag of the node and operator commands is in
// docs/configuration.md, so each has its documented environment variable.
func TestEveryFlagDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	root := newRootCmd()
	for _, name := range []string{"dev", "serve", "topics", "status", "inspect", "call"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil || cmd.Name() != name {
			t.Fatalf("no command %s", name)
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !bytes.Contains(doc, []byte("`--"+f.Name+"`")) {
				t.Errorf("kstate %s --%s is not in docs/configuration.md", name, f.Name)
			}
		})
	}
}
