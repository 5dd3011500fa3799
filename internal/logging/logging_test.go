package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewJSON(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(Config{Level: "debug", JSON: true, Output: &buf})
	if err != nil {
		t.Fatal(err)
	}
	l.Named("partition").With("partition", 3).Debug("restored", "records", 10)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %q: %v", buf.String(), err)
	}
	if m["@module"] != "kstate.partition" || m["partition"].(float64) != 3 || m["@message"] != "restored" {
		t.Fatalf("unexpected record %v", m)
	}
}

func TestNewBadLevel(t *testing.T) {
	_, err := New(Config{Level: "loud"})
	if err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Fatalf("want a helpful error, got %v", err)
	}
}

func TestGRPCAdapter(t *testing.T) {
	var buf bytes.Buffer
	l, _ := New(Config{Level: "info", Output: &buf})
	g := GRPC{L: l}
	g.Infof("hidden %d", 1)   // gRPC info: debug
	g.Warningf("shown %d", 2) // gRPC warning: info
	g.Errorf("error %d", 3)
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "[INFO]  kstate: shown 2") || !strings.Contains(out, "[ERROR] kstate: error 3") {
		t.Fatalf("got %q", out)
	}
}
