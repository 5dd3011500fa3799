package proto_test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// proto/google/api is compiled by buf but its Go types are genproto's. Descriptors that buf
// encodes with our http.proto are decoded at run time with genproto's, so the two must agree
// field for field. This test reads our .proto text and compares it with genproto's descriptors.

var (
	reMessage = regexp.MustCompile(`^message (\w+) \{$`)
	reField   = regexp.MustCompile(`^(repeated )?([\w.]+) (\w+) = (\d+);$`)
)

// parseProto returns "name=number [repeated ]type" per message (or extend block) of a simple
// .proto file: one declaration per line, no nested messages.
func parseProto(t *testing.T, path string) map[string][]string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	current, depth := "", 0
	for _, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		if m := reMessage.FindStringSubmatch(line); m != nil && depth == 0 {
			current = m[1]
		} else if strings.HasPrefix(line, "extend ") && depth == 0 {
			current = "extend " + strings.TrimSuffix(strings.TrimPrefix(line, "extend "), " {")
		} else if m := reField.FindStringSubmatch(line); m != nil && current != "" {
			out[current] = append(out[current], fmt.Sprintf("%s=%s %s%s", m[3], m[4], m[1], m[2]))
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
		if depth == 0 {
			current = ""
		}
	}
	return out
}

func describeShort(fd protoreflect.FieldDescriptor) string {
	s := fmt.Sprintf("%s=%d ", fd.Name(), fd.Number())
	if fd.Cardinality() == protoreflect.Repeated {
		s += "repeated "
	}
	if fd.Message() != nil {
		return s + strings.TrimPrefix(string(fd.Message().FullName()), "google.api.")
	}
	return s + fd.Kind().String()
}

func TestGoogleAPIMatchesGenproto(t *testing.T) {
	const goPackage = `option go_package = "google.golang.org/genproto/googleapis/api/annotations;annotations";`
	for _, path := range []string{"google/api/http.proto", "google/api/annotations.proto"} {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(src), goPackage) {
			t.Errorf("%s: want %s", path, goPackage)
		}
	}

	ours := parseProto(t, "google/api/http.proto")
	gen := annotations.File_google_api_http_proto.Messages()
	if len(ours) != gen.Len() {
		t.Errorf("http.proto has %d messages, genproto %d", len(ours), gen.Len())
	}
	for i := 0; i < gen.Len(); i++ {
		md := gen.Get(i)
		var want []string
		for j := 0; j < md.Fields().Len(); j++ {
			want = append(want, describeShort(md.Fields().Get(j)))
		}
		got := ours[string(md.Name())]
		if strings.Join(got, "; ") != strings.Join(want, "; ") {
			t.Errorf("message %s:\n ours     %s\n genproto %s", md.Name(), strings.Join(got, "; "), strings.Join(want, "; "))
		}
	}

	ext := parseProto(t, "google/api/annotations.proto")["extend google.protobuf.MethodOptions"]
	xd := annotations.E_Http.TypeDescriptor()
	want := fmt.Sprintf("%s=%d %s", xd.Name(), xd.Number(), strings.TrimPrefix(string(xd.Message().FullName()), "google.api."))
	if len(ext) != 1 || ext[0] != want {
		t.Errorf("annotations.proto extension %v, genproto %s", ext, want)
	}
	if xd.Number() != 72295728 || xd.ContainingMessage().FullName() != "google.protobuf.MethodOptions" {
		t.Errorf("google.api.http is %s %d, want google.protobuf.MethodOptions 72295728", xd.ContainingMessage().FullName(), xd.Number())
	}
}
