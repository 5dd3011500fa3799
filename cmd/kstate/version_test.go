package main

import (
	"runtime/debug"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	info := func(mainVersion string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/kstatehq/kstate", Version: mainVersion}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	for _, tc := range []struct {
		name                    string
		version, commit         string
		read                    func() (*debug.BuildInfo, bool)
		wantVersion, wantCommit string
	}{
		{"stamped wins", "v1.2.3", "abc", info("v9.9.9", "vcs.revision", "def"), "v1.2.3", "abc"},
		{"go install", "dev", "", info("v1.4.0"), "v1.4.0", ""},
		{"checkout build", "dev", "", info("(devel)", "vcs.revision", "0123", "vcs.modified", "true"), "dev", "0123-dirty"},
		{"clean checkout", "dev", "", info("v0.0.0-20261207-0123", "vcs.revision", "0123", "vcs.modified", "false"), "v0.0.0-20261207-0123", "0123"},
		{"no build info", "dev", "", func() (*debug.BuildInfo, bool) { return nil, false }, "dev", ""},
	} {
		v, c := buildVersion(tc.version, tc.commit, tc.read)
		if v != tc.wantVersion || c != tc.wantCommit {
			t.Errorf("%s: buildVersion = %q, %q; want %q, %q", tc.name, v, c, tc.wantVersion, tc.wantCommit)
		}
	}
}
