package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every flag of every command can also come from the environment and from a config file
// (docs/configuration.md). For each flag, the first of these that gives it a value wins:
//
//  1. the command line;
//  2. the environment variable KSTATE_<FLAG> (the flag's name in upper snake case:
//     --kafka-sasl-user is KSTATE_KAFKA_SASL_USER);
//  3. the config file (--config FILE or KSTATE_CONFIG; YAML): the key under the command's own
//     section (serve: {listen: ":9000"}), else the top-level key (brokers: [...]), which every
//     command that has the flag takes;
//  4. the flag's default.
//
// A key of the file that is neither a flag of some command nor a command's section is an error,
// so a typo does not go unnoticed.

// envPrefix starts the environment variable of every flag.
const envPrefix = "KSTATE_"

// configFlag names the flag (and, through envName, the variable) of the config file.
const configFlag = "config"

// envName is the environment variable of flag name: KSTATE_ and the name in upper snake case.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// normalizeFlag maps Kafka's own name of the bootstrap servers flag onto kstate's, so
// --bootstrap-server works wherever --brokers does (Kafka users' habit).
func normalizeFlag(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if name == "bootstrap-server" || name == "bootstrap-servers" {
		name = "brokers"
	}
	return pflag.NormalizedName(name)
}

// applyConfig fills the flags of cmd that the command line did not set, from the environment and
// the config file. It runs before every command (the root's PersistentPreRunE).
func applyConfig(cmd *cobra.Command) error {
	fs := cmd.Flags()
	path := ""
	if f := fs.Lookup(configFlag); f != nil {
		path = f.Value.String()
		if !f.Changed {
			if v, ok := os.LookupEnv(envName(configFlag)); ok {
				path = v
			}
		}
	}
	var file *koanf.Koanf
	if path != "" {
		k, err := loadConfigFile(path, cmd.Root())
		if err != nil {
			return err
		}
		file = k
	}
	section := commandSection(cmd)
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == configFlag || f.Name == "help" {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := setFlag(f, v); err != nil {
				errs = append(errs, fmt.Errorf("$%s: %w", envName(f.Name), err))
			}
			return
		}
		if file == nil {
			return
		}
		for _, key := range []string{section + "." + f.Name, f.Name} {
			if !file.Exists(key) {
				continue
			}
			if err := setFlagFromFile(f, file.Get(key)); err != nil {
				errs = append(errs, fmt.Errorf("config file %s: %s: %w", path, key, err))
			}
			return
		}
	})
	return errors.Join(errs...)
}

// commandSection is the config file section of cmd: its path below the root, dot-separated
// ("serve", "bench.report").
func commandSection(cmd *cobra.Command) string {
	var names []string
	for c := cmd; c.HasParent(); c = c.Parent() {
		names = append([]string{c.Name()}, names...)
	}
	return strings.Join(names, ".")
}

// loadConfigFile reads a YAML config file and checks its keys against root's commands and flags.
func loadConfigFile(path string, root *cobra.Command) (*koanf.Koanf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(b), yaml.Parser()); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if err := checkConfigKeys(k, root); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return k, nil
}

// checkConfigKeys reports keys that name no flag: a top-level key must be a flag of some command
// or a command's section, and a section's keys flags of that command.
func checkConfigKeys(k *koanf.Koanf, root *cobra.Command) error {
	anyFlag := map[string]bool{}
	sections := map[string]*cobra.Command{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { anyFlag[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { anyFlag[f.Name] = true })
		if c.HasParent() {
			sections[commandSection(c)] = c
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	var bad []string
	for key := range k.Raw() {
		check(k, key, anyFlag, sections, &bad)
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("unknown keys %s: each key is a flag name (brokers, partitions, …) or a command's section (serve:, dev:, status:, …)", strings.Join(bad, ", "))
}

// check checks one key, descending into a command's section.
func check(k *koanf.Koanf, key string, anyFlag map[string]bool, sections map[string]*cobra.Command, bad *[]string) {
	name := string(normalizeFlag(nil, key[strings.LastIndexByte(key, '.')+1:]))
	if cmd, ok := sections[key]; ok {
		if m, isMap := k.Get(key).(map[string]any); isMap {
			for sub := range m {
				subKey := key + "." + sub
				if _, nested := sections[subKey]; nested {
					check(k, subKey, anyFlag, sections, bad)
					continue
				}
				if cmd.Flags().Lookup(string(normalizeFlag(nil, sub))) == nil && cmd.InheritedFlags().Lookup(sub) == nil {
					*bad = append(*bad, subKey)
				}
			}
			return
		}
	}
	if !strings.Contains(key, ".") && anyFlag[name] {
		return
	}
	*bad = append(*bad, key)
}

// setFlagFromFile sets f from a YAML value: a list for a list flag, else a scalar.
func setFlagFromFile(f *pflag.Flag, v any) error {
	switch v := v.(type) {
	case map[string]any:
		return fmt.Errorf("want a value for --%s, not a section", f.Name)
	case []any:
		items := make([]string, len(v))
		for i, x := range v {
			items[i] = fmt.Sprint(x)
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			return sv.Replace(items)
		}
		return setFlag(f, strings.Join(items, ","))
	case nil:
		return setFlag(f, "")
	default:
		return setFlag(f, fmt.Sprint(v))
	}
}

// setFlag sets f's value as the command line would, without marking it changed (Changed keeps
// meaning "given on the command line").
func setFlag(f *pflag.Flag, v string) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		// An environment variable holds a comma-separated list; replace the default, never append.
		if v == "" {
			return sv.Replace(nil)
		}
		if f.Value.Type() == "stringArray" {
			return sv.Replace([]string{v})
		}
		tmp := pflag.NewFlagSet("", pflag.ContinueOnError)
		tmp.StringSlice("v", nil, "")
		if err := tmp.Set("v", v); err != nil {
			return err
		}
		items, _ := tmp.GetStringSlice("v")
		return sv.Replace(items)
	}
	if err := f.Value.Set(v); err != nil {
		return fmt.Errorf("--%s %q: %w", f.Name, v, err)
	}
	return nil
}

// brokersHelp describes every command's --brokers.
const brokersHelp = "Kafka bootstrap servers, comma-separated or repeated (also --bootstrap-server)"
